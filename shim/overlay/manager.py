"""This host's overlays: joining and leaving, and one thread that keeps them up.

:class:`Overlays` owns every overlay this host is on, one :class:`Joined` per pycni network,
and two locks guard them (the class's docstring; :mod:`shim.registry` has pycni's whole lock
table).

* **join** (CreateNetwork): the overlay's definition (created if absent, a contradiction
  refused), an etcd lease, a per-host subnet claimed under it, the VTEP; then a record in
  ``<state dir>/overlays/<network id>.json``. Anything that fails part-way is undone: the
  subnet released, the lease revoked, the VTEP removed.
* **leave** (DeleteNetwork): VTEP removed (its routes, neighbour and fdb entries go with it),
  subnet released, lease revoked, the definition removed by the last host, the record deleted.
  With etcd unreachable the local side still goes, and the lease expires by itself.
* **the loop** (:meth:`tick`): keeps each lease alive (every TTL/3, at most :data:`REFRESH`),
  re-establishes one that expired while etcd was away (the same subnet, which is this host's),
  and programs the VTEP with the peers the store holds. It runs when **etcd's watch** on the
  overlays' keys reports a change (a host joining, leaving, its lease expiring: routed on every
  other host within milliseconds), when a watch is opened again after one ended (etcd restarted
  or compacted: a resync), and every ``poll`` seconds whatever happens. When the store can't be
  reached the VTEP is left as it is: traffic between hosts keeps flowing on what was last known.

The record remembers the subnet and lease across pycni restarts: a restarted pycni keeps the
lease going if it is still alive, or re-claims the same subnet if it expired.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidRequest, OverlayError, PycniError, SubnetTaken
from ..settings import Settings
from ..store import Store
from . import leases, vtep
from .leases import Asked, Definition, Holder, Peer
from .store import KV, Endpoint, Etcd, Watch
from .vtep import Entry, Vteps

log = logging.getLogger(__name__)

#: etcd lease TTL: a day, as flannel's: a host whose pycni is down for an upgrade or a crash
#: loop stays routed on every other host while its containers run; one gone for good is
#: dropped after it (``PYCNI_OVERLAY_TTL``)
DEFAULT_TTL = 24 * 3600
#: a round of the loop this often even when the watch says nothing: the resync that catches
#: what a broken watch missed before it is noticed, and a VTEP an admin deleted
DEFAULT_POLL = 10.0
#: the longest a lease goes without being kept alive (and found still there)
REFRESH = 30.0
#: how long the watcher waits before opening a watch again after etcd refused one
WATCH_RETRY = 1.0


@dataclass
class Joined:
    """One overlay network of this host, as its record keeps it."""

    network_id: str
    name: str
    definition: Definition
    subnet: ipaddress.IPv4Network
    lease: int
    underlay: str
    mac: str
    #: the peers last programmed (what ``pycni ls``/``inspect`` show)
    peers: list[Peer] = field(default_factory=list)
    #: the lease's TTL in seconds (0: a record from before it was kept)
    ttl: int = 0
    #: peers not routed, their subnet colliding with a route of this host's (a Docker network,
    #: the LAN): ``{"subnet", "underlay", "route"}``
    clashes: list[dict[str, str]] = field(default_factory=list)
    #: the overlay network's bridge on this host, whose route is the subnet's ("" in a record
    #: from before it was kept)
    bridge: str = ""
    #: routes of this host inside its own subnet but the bridge's (a Docker network made later
    #: inside it): the overlay's containers with addresses there are cut off
    intruders: list[str] = field(default_factory=list)
    #: why this host no longer holds its subnet (another host claimed it while this host's
    #: lease had expired); "" while it does. New containers are refused meanwhile.
    lost: str = ""
    #: when the lease was last kept alive (monotonic; not recorded)
    refreshed: float = field(default=0.0, compare=False)

    @property
    def vtep(self) -> str:
        return vtep.name_for(self.definition.vni)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def holder(self) -> Holder:
        return Holder(self.underlay, self.mac)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "network_id": self.network_id,
            "name": self.name,
            "definition": self.definition.to_json(),
            "subnet": str(self.subnet),
            "lease": self.lease,
            "underlay": self.underlay,
            "mac": self.mac,
            "vtep": self.vtep,
            "peers": [p.to_json() for p in self.peers],
            "ttl": self.ttl,
            "clashes": self.clashes,
            "lost": self.lost,
            "bridge": self.bridge,
            "intruders": self.intruders,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Joined:
        return cls(
            network_id=data["network_id"],
            name=data["name"],
            definition=Definition.from_json(data["definition"]),
            subnet=ipaddress.IPv4Network(data["subnet"]),
            lease=int(data["lease"]),
            underlay=data["underlay"],
            mac=data["mac"],
            peers=[Peer(ipaddress.IPv4Network(p["subnet"]), p["underlay"], p["mac"])
                   for p in data.get("peers") or []],
            ttl=int(data.get("ttl") or 0),
            clashes=[dict(c) for c in data.get("clashes") or []],
            lost=str(data.get("lost") or ""),
            bridge=str(data.get("bridge") or ""),
            intruders=[str(r) for r in data.get("intruders") or []],
        )


#: the kind of the overlay's records in pycni's store (:class:`shim.store.Store`)
KIND = "overlays"


def read_records(state_dir: str) -> dict[str, Joined]:
    """Every overlay record in ``state_dir``, by network id (for ``pycni ls``/``inspect``)."""
    return {j.network_id: j for j in Store(state_dir).load_all(KIND, Joined.from_json)}


class Overlays:
    """Every overlay this host is on.

    Two locks, taken in this order (see also :mod:`shim.registry`'s table):

    1. a network's own lock (:meth:`_network_lock`), for the whole of a round of the loop on
       that network and for the whole of its leave: a leave never lands in the middle of a
       round, so a round can't make the VTEP again, claim the subnet again or write the
       definition back for a network that has just gone. Held across etcd and netlink calls:
       they are what it guards, and only this network waits on it.
    2. ``_lock``, briefly, to read or change ``_joined`` and to write a record; never held
       across a store or netlink call (a slow etcd must not stall ``docker network create`` of
       another network, or the loop).
    """

    def __init__(self, kv: KV, state_dir: str, underlay: str, *, vteps: Vteps | None = None,
                 ttl: int = DEFAULT_TTL, poll: float = DEFAULT_POLL,
                 default_mtu: int | None = None) -> None:
        self.kv = kv
        self.state_dir = state_dir
        self.underlay = underlay
        self.vteps: Vteps = vteps or vtep
        self.ttl = ttl
        self.poll = poll
        self.default_mtu = default_mtu
        self._lock = threading.Lock()
        self._joined: dict[str, Joined] = {}
        self._network_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        #: set by the watcher: a round is due now
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._watch: Watch | None = None

    # --- records ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the records back and put the VTEPs back (a reboot loses them); the loop then
        renews the leases and programs the peers."""
        found = read_records(self.state_dir)
        for joined in found.values():
            try:
                self._ensure_vtep(joined)
            except PycniError as exc:
                log.error("overlay %s: cannot restore VTEP %s: %s", joined.name, joined.vtep, exc)
        with self._lock:
            self._joined.update(found)
        if found:
            log.info("overlays: %s", ", ".join(f"{j.name} ({j.subnet})" for j in found.values()))

    def _save(self, joined: Joined) -> None:
        Store(self.state_dir).save(KIND, joined.network_id, joined.to_json())

    def _forget(self, network_id: str) -> None:
        Store(self.state_dir).delete(KIND, network_id)

    def get(self, network_id: str) -> Joined | None:
        with self._lock:
            return self._joined.get(network_id)

    def snapshot(self) -> list[Joined]:
        with self._lock:
            return list(self._joined.values())

    # --- join and leave --------------------------------------------------------------------------

    def join(self, network_id: str, asked: Asked, *, bridge: str = "") -> Joined:
        """Join overlay ``asked.name`` for pycni network ``network_id``, whose containers are on
        ``bridge`` here (see the module's docstring); idempotent for a network already
        joined."""
        existing = self.get(network_id)
        if existing is not None:
            return existing
        with self._lock:
            for other in self._joined.values():
                if other.name == asked.name:
                    raise OverlayError(
                        f"overlay {asked.name} is already joined on this host by pycni network "
                        f"{other.network_id[:12]}; one network per overlay and host")
        # what VXLAN leaves of this host's underlay for the overlay's own packets
        room = self.default_mtu or vtep.underlay_mtu(self.underlay) - leases.VXLAN_OVERHEAD
        if asked.mtu is not None and asked.mtu > room:  # refused before anything is written
            raise self._too_big(asked.name, asked.mtu, room)
        definition = leases.define(self.kv, asked, room)
        if definition.mtu > room:  # another host defined it on a larger underlay
            raise self._too_big(asked.name, definition.mtu, room)
        with self._lock:
            clash = next((j for j in self._joined.values()
                          if j.definition.vni == definition.vni), None)
        if clash is not None:
            raise OverlayError(f"overlay {asked.name}: VNI {definition.vni} is already the VNI "
                               f"of overlay {clash.name} on this host; give one of them "
                               "-o cni.overlay.vni=N")
        with contextlib.ExitStack() as undo:
            lease = self.kv.grant(self.ttl)
            undo.callback(self._quietly, self.kv.revoke, lease)
            mac = vtep.mac_for(asked.name, self.underlay)
            subnet = leases.claim(self.kv, asked.name, definition, Holder(self.underlay, mac),
                                  lease, avoid=self.vteps.host_routes())
            joined = Joined(network_id, asked.name, definition, subnet, lease, self.underlay, mac,
                            ttl=self.ttl, bridge=bridge)
            undo.callback(self._quietly, leases.release, self.kv, asked.name, subnet,
                          joined.holder, 0)
            self._ensure_vtep(joined)
            undo.callback(self._quietly, self.vteps.delete, joined.vtep)
            joined.refreshed = time.monotonic()
            self._save(joined)
            with self._lock:
                self._joined[network_id] = joined
            undo.pop_all()
        log.info("overlay %s: this host holds %s (VNI %d, VTEP %s, MTU %d)", asked.name, subnet,
                 definition.vni, joined.vtep, definition.mtu)
        try:
            self._sync(joined)  # the peers now, rather than at the loop's next round
        except PycniError as exc:
            log.warning("overlay %s: peers not programmed yet: %s", asked.name, exc)
        return joined

    def _ensure_vtep(self, joined: Joined) -> None:
        self.vteps.ensure(joined.vtep, joined.definition.vni, joined.underlay,
                          str(joined.subnet.network_address), joined.mac, joined.definition.mtu)

    def _network_lock(self, network_id: str) -> threading.Lock:
        with self._lock:
            return self._network_locks.setdefault(network_id, threading.Lock())

    def leave(self, network_id: str) -> None:
        """Leave the overlay of ``network_id`` (nothing if it has none); repeat-safe. Waits for
        a round of the loop on this network to finish first."""
        with self._network_lock(network_id):
            self._leave(network_id)
        with self._lock:
            self._network_locks.pop(network_id, None)

    def _leave(self, network_id: str) -> None:
        with self._lock:
            joined = self._joined.pop(network_id, None)
        if joined is None:
            joined = read_records(self.state_dir).get(network_id)
        if joined is None:
            return
        self.vteps.delete(joined.vtep)
        try:
            leases.release(self.kv, joined.name, joined.subnet, joined.holder, joined.lease)
        except OverlayError as exc:
            log.warning("overlay %s: %s; its lease on %s expires in %ds by itself",
                        joined.name, exc, joined.subnet, self.ttl)
        self._forget(network_id)
        log.info("overlay %s: left, %s released", joined.name, joined.subnet)

    @staticmethod
    def _quietly(func: Any, *args: Any) -> None:
        try:
            func(*args)
        except PycniError as exc:
            log.warning("undo: %s", exc)

    # --- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pycni-overlay", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch_loop, name="pycni-overlay-watch",
                                         daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        for thread in (self._watcher, self._thread):
            if thread is not None:
                thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.poll)
            if self._stop.is_set():
                return
            self._wake.clear()
            self.tick()

    def _watch_loop(self) -> None:
        """Keep a watch open on the overlays' keys; wake the loop for every change to an
        overlay of this host's, and once for each watch opened (what changed while none was)."""
        refused = False
        while not self._stop.is_set():
            try:
                watch = self.kv.watch(leases.ROOT)
            except PycniError as exc:
                if not refused:
                    log.warning("overlays: no watch on %s (%s); peers are read every %gs until "
                                "it answers", self.kv.where, exc, self.poll)
                    refused = True
                self._stop.wait(WATCH_RETRY)
                continue
            self._watch = watch
            if self._stop.is_set():
                watch.close()
                return
            if refused:
                log.info("overlays: watching %s again", self.kv.where)
                refused = False
            self._wake.set()  # a resync: whatever changed while no watch was open
            for keys in watch:
                if self._concerns_us(keys):
                    self._wake.set()
            self._watch = None
            if not self._stop.is_set():
                log.info("overlays: %s ended the watch; opening it again", self.kv.where)
                self._stop.wait(0.1)

    def _concerns_us(self, keys: list[str]) -> bool:
        """Whether a change touched an overlay this host is on."""
        with self._lock:
            mine = {leases.overlay_prefix(j.name) for j in self._joined.values()}
        return any(key.startswith(prefix) for key in keys for prefix in mine)

    def tick(self) -> None:
        """One round: leases kept alive, peers programmed. Never raises."""
        for snapped in self.snapshot():
            try:
                with self._network_lock(snapped.network_id):
                    joined = self.get(snapped.network_id)
                    if joined is None:
                        continue  # left since the snapshot
                    self._ensure_vtep(joined)  # an admin's `ip link del`, or a reboot
                    self._keep(joined)
                    self._sync(joined)
            except PycniError as exc:
                log.warning("overlay %s: %s (routes to peers stay as they are)", snapped.name,
                            exc)
            except Exception:  # the loop must outlive anything one round hits
                log.exception("overlay %s: unexpected error", snapped.name)

    def _too_big(self, name: str, mtu: int, room: int) -> OverlayError:
        return OverlayError(
            f"overlay {name}: MTU {mtu} does not fit this host's underlay: its link at "
            f"{self.underlay} leaves {room} bytes once VXLAN's {leases.VXLAN_OVERHEAD} are "
            f"taken, and larger packets would be dropped between hosts; use -o cni.mtu={room} "
            "or less (on every host)")

    def _keep(self, joined: Joined) -> None:
        """Keep the lease alive every TTL/3, at least every :data:`REFRESH` seconds (so a lease
        etcd lost is noticed soon, however long the TTL); one that expired is taken again,
        same subnet."""
        now = time.monotonic()
        if joined.refreshed and now - joined.refreshed < min(self.ttl / 3, REFRESH):
            return
        if self.kv.refresh(joined.lease) > 0:
            joined.refreshed = now
            return
        lease = self.kv.grant(self.ttl)
        try:
            leases.claim(self.kv, joined.name, joined.definition, joined.holder, lease,
                         joined.subnet, only_prefer=True)
        except SubnetTaken as exc:
            self._quietly(self.kv.revoke, lease)
            self._lost(joined, str(exc))
            return
        except BaseException:
            self._quietly(self.kv.revoke, lease)
            raise
        # the definition goes with the last lease only when a host leaves; put it back if an
        # expiry took everything
        self.kv.create(leases.definition_key(joined.name), json.dumps(joined.definition.to_json()))
        log.warning("overlay %s: lease expired; %s taken again under a new lease", joined.name,
                    joined.subnet)
        updated = replace(joined, lease=lease, refreshed=now, lost="")
        with self._lock:
            if joined.network_id not in self._joined:
                return  # left meanwhile
            self._joined[joined.network_id] = updated
            self._save(updated)

    def _lost(self, joined: Joined, why: str) -> None:
        """Record (and log, once) that another host holds this host's subnet."""
        with self._lock:
            current = self._joined.get(joined.network_id)
            if current is None or current.lost == why:
                return
            current.lost = why
            self._save(current)
        log.error("%s; containers on it here can't be reached from other hosts, and new ones "
                  "are refused", why)

    def refuse_if_lost(self, network_id: str) -> None:
        """Refuse a new container on a network whose subnet another host now holds: its
        address would be that host's too."""
        joined = self.get(network_id)
        if joined is not None and joined.lost:
            raise SubnetTaken(
                f"{joined.lost}. A container here would get an address of that host's: remove "
                "this network's containers on this host, `docker network rm` it and create it "
                "again (it claims a free subnet)")

    def _sync(self, joined: Joined) -> None:
        """Program the VTEP with the peers the store holds now, but those whose subnet collides
        with a route of this host's: only routes pycni made are pycni's to take. Note the
        routes that lie inside this host's own subnet, but its bridge's."""
        found = leases.peers(self.kv, joined.name, joined.subnet)
        routes = self.vteps.host_routes()
        routed: list[Peer] = []
        clashes: list[dict[str, str]] = []
        for peer in found:
            hit = vtep.colliding(routes, peer.subnet)
            if hit is None:
                routed.append(peer)
            else:
                clashes.append({"subnet": str(peer.subnet), "underlay": peer.underlay,
                                "route": str(hit)})
        intruders = [str(r) for r in routes
                     if r.dst.overlaps(joined.subnet) and joined.bridge not in ("", r.dev)]
        self.vteps.sync(joined.vtep, [Entry(p.subnet, p.underlay, p.mac) for p in routed])
        with self._lock:
            current = self._joined.get(joined.network_id)
            if current is None or (current.peers, current.clashes, current.intruders) == (
                    routed, clashes, intruders):
                return
            new = [c for c in clashes if c not in current.clashes]
            came = [r for r in intruders if r not in current.intruders]
            peers_changed = current.peers != routed
            current.peers, current.clashes, current.intruders = routed, clashes, intruders
            self._save(current)  # under the lock: a network left meanwhile gets no record back
        for clash in new:  # once: the record remembers it until it is gone
            log.warning("overlay %s: not routing %s (host %s): it collides with %s on this "
                        "host", joined.name, clash["subnet"], clash["underlay"], clash["route"])
        for route in came:
            log.warning("overlay %s: %s lies inside this host's subnet %s: the overlay's "
                        "containers here with addresses in it can't be reached", joined.name,
                        route, joined.subnet)
        if peers_changed:
            log.info("overlay %s: peers %s", joined.name,
                     ", ".join(f"{p.subnet} at {p.underlay}" for p in routed) or "none")


def leave_locally(state_dir: str, network_id: str, vteps: Vteps | None = None) -> bool:
    """Without etcd (a pycni serving no overlays): remove the network's VTEP and record, and
    leave its lease to expire; whether it had any."""
    joined = read_records(state_dir).get(network_id)
    if joined is None:
        return False
    (vteps or vtep).delete(joined.vtep)
    Store(state_dir).delete(KIND, network_id)
    return True


def from_settings(settings: Settings) -> Overlays | None:
    """The overlays of ``pycni serve --etcd URL``; None without etcd."""
    if not settings.etcd:
        return None
    underlay = settings.underlay_address or vtep.default_underlay()
    if not underlay:
        raise InvalidRequest("overlay networks need this host's underlay address: this host has "
                             "no default route to take it from; give --underlay-address")
    kv = Etcd(Endpoint(settings.etcd, settings.etcd_ca, settings.etcd_cert, settings.etcd_key))
    return Overlays(kv, settings.state_dir, underlay, ttl=settings.overlay_ttl)
