"""One attachment lifecycle for every mode, over a *place* that says where the chain runs.

The CNM driver's endpoints and the ``--network none`` mode's attachments go through the same
steps, here and nowhere else:

* :meth:`Lifecycle.attaching` — claim (the record is written before ADD: a crash from then on
  leaves something to undo), open the place, ADD with undo, save the result, tell the
  neighbours the MAC, settle the place; then the mode's own last steps. A failure anywhere undoes
  every step done so far, in reverse, past a failing DEL too (:meth:`shim.cni.CNI.delete`).
* :meth:`Lifecycle.detach` — find ADD's result (the record, libcni's cache, or what an ADD that
  never finished left on the interface), reopen the place so DEL finds the interface, DEL, close
  the place, drop the record.

What differs between the modes is only

* the **ledger** (:class:`Ledger`): where the record lives and what it holds besides — the
  driver's registry and its port reservations, or the none mode's per-container records with
  their host ports and loopback guard;
* the **place** (:class:`Place`): the namespace the chain runs in and how DEL finds the interface
  again. :class:`shim.staging.StagingPlace` is the driver's staging namespace (the link goes out
  to the host after ADD and comes back before DEL); :class:`shim.pinned.PinnedPlace` is a
  container's own namespace, held open for the attachment's life.

The caller holds the lock of what it attaches (:mod:`shim.registry`'s table); nothing here locks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from .attach import Attacher, Attachment
from .cni.types import Result
from .errors import PycniError

log = logging.getLogger(__name__)

#: tells the neighbours ``(netns, ifname, addresses)`` are at the interface's MAC now
Announce = Callable[[str, str, Iterable[str]], None]


class Ledger(Protocol):
    """Where one attachment's record lives."""

    def claim(self) -> None:
        """Write the record before ADD, with whatever it holds (host ports, a guard)."""

    def save(self) -> None:
        """Write it again (ADD's result, the place's findings)."""

    def drop(self) -> None:
        """Remove it and release what it holds; safe to repeat, and after a claim that failed
        part-way."""


class Place(Protocol):
    """Where an attachment's chain runs, and how DEL finds its interface again."""

    def open(self, att: Attachment) -> None:
        """Make ``att.netns`` ready for ADD (undone by :meth:`close`)."""

    def settle(self, att: Attachment, undo: contextlib.ExitStack) -> None:
        """After ADD: what the place does with the interface; pushes its own undo."""

    def reopen(self, att: Attachment) -> Attachment:
        """Before DEL: the attachment as DEL must see it (its namespace, or none)."""

    def found_result(self, att: Attachment) -> Result | None:
        """What an ADD that never finished left on the interface, as DEL's prevResult."""

    def close(self, att: Attachment) -> None:
        """After DEL (or an undone ADD): the namespace goes if it is the place's. Safe to
        repeat."""


class Lifecycle:
    """Attach and detach over a place and a ledger. ``announce`` is a seam (a fake in unit
    tests)."""

    def __init__(self, attacher: Attacher, announce: Announce) -> None:
        self.attacher = attacher
        self.announce = announce

    @contextlib.contextmanager
    def attaching(self, att: Attachment, place: Place, ledger: Ledger
                  ) -> Iterator[contextlib.ExitStack]:
        """ADD ``att`` in ``place``; the body's own steps are undone with the rest if it
        raises. The record is saved once more when the body is done."""
        with contextlib.ExitStack() as undo:
            undo.callback(ledger.drop)  # safe after a claim that failed part-way
            ledger.claim()
            place.open(att)
            undo.callback(place.close, att)
            self.attacher.add(att, undo)
            ledger.save()  # a crash from here on knows what to tear down
            self._announce(att)
            place.settle(att, undo)
            yield undo
            ledger.save()
            undo.pop_all()

    def _announce(self, att: Attachment) -> None:
        """A container restarted with its address has a new MAC: its neighbours learn it now,
        not when their entries time out (as Docker's bridge does for its endpoints). Best
        effort: a failure is logged."""
        addresses = [str(ip.address) for ip in att.ips()]
        if not addresses:
            return
        try:
            self.announce(att.netns, att.ifname, addresses)
        except PycniError as exc:
            log.warning("%s: neighbours not told the MAC of %s: %s",
                        att.container_id[:12], att.ifname, exc)

    def detach(self, att: Attachment, place: Place, ledger: Ledger) -> None:
        """DEL ``att`` wherever its interface is now, then the place and the record go. The
        record stays when DEL fails (the error is raised): it is retried."""
        if att.result is None:
            # crashed between ADD and saving its result: libcni's cache has it
            att.result = self.attacher.cached_result(att)
        where = place.reopen(att)
        # ADD never finished: no result anywhere, but what the chain did is still on the
        # interface, and DEL needs it as prevResult (firewall removes nothing without one)
        given = place.found_result(where) if att.result is None else None
        self.attacher.delete(where, result=given)
        place.close(att)
        ledger.drop()


def result_found(att: Attachment, mac: str, cidrs: list[str]) -> Result | None:
    """A result DEL can be given for an ADD that never finished, from what is on its interface
    (``mac``, ``cidrs``); None when it has no address."""
    if not cidrs:
        return None
    version = att.config.cni_version
    return Result.from_json(
        {
            "cniVersion": version,
            "interfaces": [{"name": att.ifname, "mac": mac, "sandbox": att.netns}],
            "ips": [{"address": c, "interface": 0} for c in cidrs],
        }
    ).convert(version)


def result_in_namespace(att: Attachment, addresses: Callable[[str, str], tuple[str, list[str]]]
                        ) -> Result | None:
    """:func:`result_found` from the interface in ``att``'s namespace as ``addresses(ns,
    ifname)`` reads it (MAC, CIDRs); None when DEL runs without a namespace."""
    if not att.netns:
        return None
    mac, cidrs = addresses(att.netns, att.ifname)
    return result_found(att, mac, cidrs)
