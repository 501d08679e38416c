"""A container's own namespace, held open for the attachment's life: the none mode's place.

At attach, the container's ``/proc/PID/ns/net`` is bind-mounted at
``/run/netns/pycni-pin-<container id[:12]>-<namespace inode>`` (as Docker pins its sandboxes) and
the chain runs there. DEL then finds the interface and its addresses even after the container's
last process is gone — the bridge plugin removes its masquerade rules only for addresses it finds
in the namespace — and never touches another process's namespace under a reused pid. The pin goes
with the last attachment that uses it, unless libcni's cache still needs it for an undo that
failed part-way (``pycni gc`` retries that DEL there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from . import netlink
from .attach import Attachment
from .cni.types import Result
from .lifecycle import result_in_namespace
from .none_io import Host

#: the names of the namespaces this mode pins: ``pycni-pin-<container 12>-<namespace inode>``
PIN_PREFIX = "pycni-pin-"


def pin_path(container_id: str, source: str) -> str:
    """Where the namespace ``source`` (``/proc/PID/ns/net``) of a container is pinned."""
    name = f"{PIN_PREFIX}{container_id[:12]}-{os.stat(source).st_ino}"
    return os.path.join(netlink.NETNS_DIR, name)


def is_pin(netns: str) -> bool:
    return os.path.basename(netns).startswith(PIN_PREFIX) and \
        os.path.dirname(netns) == netlink.NETNS_DIR


class PinnedPlace:
    """The container's namespace, pinned at ``att.netns`` (:func:`pin_path`).

    ``source`` is the container's ``/proc/PID/ns/net`` while it runs ("" once it is gone);
    ``in_use(netns)`` says another attachment, or an unfinished undo, still needs the pin.
    """

    def __init__(self, host: Host, in_use: Callable[[str], bool], source: str = "") -> None:
        self.host = host
        self.in_use = in_use
        self.source = source

    def open(self, att: Attachment) -> None:
        self.host.pin_netns(self.source, os.path.basename(att.netns))

    def settle(self, att: Attachment, undo: contextlib.ExitStack) -> None:
        """Nothing: the interface stays where ADD made it."""

    def reopen(self, att: Attachment) -> Attachment:
        if is_pin(att.netns):
            # the pin went (a reboot): DEL in no namespace
            return att if self.host.is_netns(att.netns) else att.elsewhere("")
        # A record of an older pycni (no pin; ADD ran in /proc/PID/ns/net). Plugins tolerate a
        # missing namespace; but once the container no longer runs as that pid, another process
        # may have taken it: then DEL in none, so no plugin touches that process's namespace.
        if self.source != att.netns and os.path.exists(att.netns):
            return att.elsewhere("")
        return att

    def found_result(self, att: Attachment) -> Result | None:
        return result_in_namespace(att, self.host.addresses)

    def close(self, att: Attachment) -> None:
        if is_pin(att.netns) and not self.in_use(att.netns):
            self.host.remove_netns(os.path.basename(att.netns))
