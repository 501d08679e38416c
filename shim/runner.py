"""``pycni run``: a container created and started with ``--network none``, then wired — or,
with a holder (cri-dockerd's pause container), a holder wired first and the app started in its
namespace, so the app's main process starts with its address and keeps it across restarts."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import none_io, ports
from .cni import find
from .cni.config import validate_network_name
from .errors import InvalidRequest, PycniError
from .none_io import DockerCLI, Request
from .state import ContainerRecord

if TYPE_CHECKING:
    from .containers import Containers


def run(self: Containers, networks: Sequence[str], docker_args: Sequence[str], *,
        ips: Sequence[str] = (), port_specs: Sequence[ports.Binding] = (),
        args: tuple[tuple[str, str], ...] = (), caps: dict[str, Any] | None = None,
        holder: Sequence[str] = (), docker_cli: DockerCLI | None = None
        ) -> tuple[str, list[ContainerRecord]]:
    """``pycni run``: create and start with ``--network none``, then attach ``networks``
    (eth0, eth1, …; the i-th ``--ip`` to the i-th network, ports to the first, ``args`` and
    ``caps`` to each). If any
    attach fails, what was attached is detached, the container removed, and the error
    re-raised saying so.

    With ``holder`` (an image and optionally its command), the networks are attached to a
    holder container started from it, and the app joins the holder's namespace
    (``--network container:``) once its address is there: the app's main process starts
    with its address, and keeps it across restarts.
    """
    if not networks:
        raise InvalidRequest("--cni-net: name at least one network")
    if len(ips) > len(networks):
        raise InvalidRequest("more --ip than --cni-net networks")
    if any(a == "--network" or a.startswith(("--network=", "--net=")) or a == "--net"
           for a in docker_args):
        raise InvalidRequest("pycni run sets --network none itself; leave --network out")
    for net in networks:
        validate_network_name(net)
        find(self.conf_dir, net)  # refuse an unknown network before creating anything
    cli = docker_cli or self.cli
    # the container always runs detached: pycni run returns once it is attached
    create_args = [a for a in docker_args if a not in ("-d", "--detach", "--detach=true")]
    name = none_io.name_in(create_args)
    if holder:
        named = ["--name", f"{name}-pycni-holder"] if name else []
        wired = cli.create(["--network", "none", "--label", "pycni.holder=1", *named,
                            *holder])
    else:
        wired = cli.create(["--network", "none", *create_args])
    created = [wired]
    done: list[ContainerRecord] = []
    try:
        cli.start(wired)
        for n, net in enumerate(networks):
            req = Request(net, f"eth{n}", ips[n] if n < len(ips) else "",
                          tuple(port_specs) if n == 0 else (), args,
                          pod_name=name if holder else "", caps=dict(caps or {}))
            done.append(self.attach(wired, req))
        app = wired
        if holder:
            app = cli.create(["--network", f"container:{wired}", *create_args])
            created.append(app)
            with self.locked(wired):
                for rec in done:
                    rec.app_id, rec.app_name = app, name or app[:12]
                    self.store.save_container(rec)
            cli.start(app)
    except PycniError as exc:
        for rec in reversed(done):
            with contextlib.suppress(PycniError):
                self.detach(wired, rec.network, rec.ifname)
        results = [cli.remove(c) for c in reversed(created)]  # each, whatever the others do
        removed = all(results)
        what = "removed the container" if removed else "could not remove the container"
        exc.message = f"pycni run: {what} {created[-1][:12]}, attaching failed: {exc.message}"
        raise
    return app, done
