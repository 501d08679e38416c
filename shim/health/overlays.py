"""``pycni doctor`` for overlay networks: is etcd reachable, and does this host still hold its
subnet there?

Each overlay record (``<state>/overlays/``) names the subnet this host leased and the underlay
address it leased it as. The check reads that subnet's key: gone (the lease expired while pycni
or etcd was away), held by another host (the subnet was taken meanwhile: two hosts now route the
same subnet), or this host's. Reading is all it does; ``pycni serve --etcd`` keeps leases alive.
The store is a seam (:class:`~shim.overlay.store.KV`, a fake in unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import PycniError
from ..overlay.leases import Holder, lease_key
from ..overlay.manager import Joined
from ..overlay.store import KV
from ..settings import Settings
from .findings import FAIL, OK, Finding


def check_overlays(joined: Mapping[str, Joined], settings: Settings,
                   connect: Callable[[Settings], KV]) -> list[Finding]:
    if not joined:
        return []
    names = ", ".join(sorted({j.name for j in joined.values()}))
    if not settings.etcd:
        return [Finding(FAIL, "overlays", f"this host is on overlay networks ({names}) but no "
                        "etcd is set", "set PYCNI_ETCD (or --etcd) as pycni serve has it")]
    try:
        kv = connect(settings)
    except PycniError as exc:
        return [Finding(FAIL, "overlays", f"cannot reach etcd: {exc}", "bring etcd back")]
    findings = []
    for one in sorted(joined.values(), key=lambda j: j.name):
        subject = f"overlay {one.name}"
        try:
            raw = kv.get(lease_key(one.name, one.subnet))
        except PycniError as exc:
            findings.append(Finding(FAIL, subject, f"{exc}: traffic flows on the routes already "
                                    "there, but no lease is renewed", "bring etcd back"))
            continue
        held = Holder.from_json(raw) if raw is not None else None
        if raw is None:
            findings.append(Finding(FAIL, subject, f"this host's lease on {one.subnet} is gone "
                                    "from etcd (it expired)", "pycni serve --etcd takes it "
                                    "again within its next round; is pycni serve running?"))
        elif held is None or held.underlay != one.underlay:
            other = held.underlay if held is not None else "an unreadable holder"
            findings.append(Finding(FAIL, subject, f"{one.subnet} is held in etcd by {other}, "
                                    f"not this host ({one.underlay}): two hosts route the same "
                                    "subnet", "remove this host's containers and `docker "
                                    "network rm` the network here, then create it again"))
        else:
            findings.append(Finding(OK, subject, f"this host ({one.underlay}) holds {one.subnet} "
                                    f"in etcd; {len(one.peers)} peer(s) programmed"))
        for route in one.intruders:
            findings.append(Finding(
                FAIL, subject, f"{route} lies inside this host's overlay subnet {one.subnet}: "
                "the overlay's containers here with addresses in it can't be reached",
                "remove or move that network (a Docker network made after the overlay's, "
                "say); the finding goes within a round once it is gone"))
        for clash in one.clashes:
            findings.append(Finding(
                FAIL, subject, f"host {clash['underlay']}'s subnet {clash['subnet']} collides "
                f"with {clash['route']} on this host: pycni does not route it, so this host's "
                f"containers can't reach that host's",
                "move the colliding network (or the overlay's range) so they no longer overlap; "
                "the route comes within a round once they don't"))
    return findings
