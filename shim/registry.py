"""The one owner of pycni's in-memory state: networks, their endpoints, and the store behind them.

Modelled on moby's bridge driver, which keeps each network's endpoints inside the network object
under the network's own lock, and runs endpoints of one network side by side. The lock rule,
written once, here:

1. **A verb takes its locks, then re-reads inside them.** A network verb (CreateNetwork,
   DeleteNetwork, reconciliation's network sweeps) holds the network *exclusively*
   (:meth:`Registry.locked`). An endpoint verb (CreateEndpoint, Join, Leave, DeleteEndpoint,
   ports) holds the network *shared* and its endpoint *exclusively*
   (:meth:`Registry.endpoint_locked`): endpoints of one network are made and removed in
   parallel — plugins run for tens of milliseconds — while a DeleteNetwork waits for them and
   then has the network to itself. Networks are created one at a time (each is checked against
   all the others). Inside, a verb checks that what it wants still exists (a DeleteNetwork or a
   DeleteEndpoint may have won the race).
2. **Lock order: network, then endpoint, then the leaves.** Nobody waits for a network while
   holding an endpoint; nobody holds two networks or two endpoints. The leaves, taken last and
   held only for bookkeeping, never across I/O: a network's ``mutex`` over its endpoints dict,
   the registry's guard over its own dicts, the ports lock (:class:`shim.ports.Publisher`).
3. **Iterate over snapshots.** :meth:`Registry.networks` and :meth:`Registry.endpoints` return
   lists copied under the leaf locks; nobody iterates a dict another thread may change.
4. **Names on the host are claimed before they exist.** An endpoint's staging netns and host
   link are named after its id; :meth:`Registry.add_endpoint` claims the id before anything is
   created, and a sweep removes a namespace or link only through :meth:`Registry.sweeping`,
   which refuses names claimed meanwhile and makes a verb that wants one wait until the sweep is
   done with it.
5. **Sweeps take the same locks as the verbs** and skip anything newer than the sweep's start.

**The lock table** - every lock in pycni, what it guards, and where it sits in the order (a
lock is only ever taken while holding locks above it in this table, never below):

=====  ==========================================  ==========================================
order  lock                                        guards
=====  ==========================================  ==========================================
1      ``Registry._creating`` (exclusive)          network creation, one at a time
2      a network's ``SharedLock``                  the network (exclusive) or its endpoints
                                                   (shared); held across plugin runs, which
                                                   are what it guards
3      an endpoint's lock                          one endpoint's verbs; across plugin runs
       (``Network._endpoint_lock``)
4      ``Overlays._network_lock(id)``              one overlay network's loop round and its
                                                   leave; across etcd and netlink calls
5      ``containers`` flock, per container         one container's --network none
       (``<state>/containers/<id>.lock``)          attachments, across processes (the CLI,
                                                   the controller); across plugin runs
6      ``containers`` directory flock (on the      writing and removing none-mode records,
       ``<state>/containers`` directory)           with their host ports and their
                                                   network's loopback guard (iptables runs),
                                                   across processes
leaf   ``Publisher._lock``                         choosing a driver host port (with the
                                                   kernel's view: a bind() probe each, µs);
                                                   the other mode's ports are read before it
leaf   ``Overlays._lock``                          the joined dict and overlay records; never
                                                   across a store or netlink call
leaf   ``iptables.lock``                           pycni's iptables chains (one process's
                                                   check-then-add); across iptables runs, the
                                                   I/O it guards
leaf   ``Network.mutex``, ``Registry._guard``      the dicts they sit beside; no I/O
leaf   ``Proxies._lock``, ``Serial._lock``         their own bookkeeping; no I/O
leaf   ``netns._netns_dir_ready``                  making /run/netns a shared mount, once
=====  ==========================================  ==========================================
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFound, PycniError
from .state import EndpointRecord, NetworkRecord
from .store import Store


class SharedLock:
    """Many holders in shared mode, or one in exclusive mode; exclusive waiters go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass(eq=False)
class Network:
    """A network and its endpoints (rule 1: ``lock`` shared or exclusive; ``mutex`` a leaf)."""

    record: NetworkRecord
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    lock: SharedLock = field(default_factory=SharedLock)
    #: guards ``endpoints`` and ``_endpoint_locks`` (a leaf: held for bookkeeping only)
    mutex: threading.Lock = field(default_factory=threading.Lock)
    #: endpoint id → [its lock, how many hold or wait for it]
    _endpoint_locks: dict[str, list[Any]] = field(default_factory=dict)
    #: false once deleted: a verb that waited for the lock must not act on it
    alive: bool = True

    @property
    def id(self) -> str:
        return self.record.id

    def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        with self.mutex:
            return self.endpoints.get(endpoint_id)

    def snapshot(self) -> list[EndpointRecord]:
        with self.mutex:
            return list(self.endpoints.values())

    @contextlib.contextmanager
    def _endpoint_lock(self, endpoint_id: str) -> Iterator[None]:
        with self.mutex:
            entry = self._endpoint_locks.setdefault(endpoint_id, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self.mutex:
                entry[1] -= 1
                if not entry[1]:  # nobody holds or waits for it
                    self._endpoint_locks.pop(endpoint_id, None)


class Registry:
    """Networks and endpoints in memory, written through to the :class:`~shim.state.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._guard = threading.Condition()
        self._networks: dict[str, Network] = {}
        #: endpoint id → network id, for every endpoint known or being created
        self._owner: dict[str, str] = {}
        #: endpoint-id prefixes a sweep is removing host objects of (rule 4)
        self._sweeping: set[str] = set()
        #: held while a network is created (rule 1)
        self._creating = threading.Lock()

    def load(self) -> tuple[int, int]:
        """Read every record back (Docker never re-sends CreateNetwork after a restart)."""
        networks = {r.id: Network(r) for r in self.store.networks()}
        owner: dict[str, str] = {}
        for rec in self.store.endpoints():
            net = networks.get(rec.network_id)
            if net is not None:
                net.endpoints[rec.id] = rec
                owner[rec.id] = rec.network_id
        with self._guard:
            self._networks, self._owner = networks, owner
        return len(networks), len(owner)

    def _network(self, network_id: str) -> Network | None:
        with self._guard:
            return self._networks.get(network_id)

    # --- rule 1: network verbs ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, network_id: str) -> Iterator[Network]:
        """The network, held exclusively; NotFound if it doesn't exist (or stopped existing)."""
        with self.locked_if_any(network_id) as net:
            if net is None:
                raise NotFound(f"pycni has no network {network_id[:12]}")
            yield net

    @contextlib.contextmanager
    def locked_if_any(self, network_id: str) -> Iterator[Network | None]:
        """The network held exclusively, or None: for verbs where "already gone" is success."""
        net = self._network(network_id)
        if net is None:
            yield None
            return
        with net.lock.exclusive():
            yield net if net.alive else None

    @contextlib.contextmanager
    def creating(self, network_id: str) -> Iterator[Network | None]:
        """CreateNetwork's lock, one for all networks: a new network is checked against every
        other (bridges, subnets), so two are never made at once. Yields the network if it
        exists already (Docker retried)."""
        with self._creating:
            yield self._network(network_id)

    def add_network(self, record: NetworkRecord) -> Network:
        """Register a network whose record is saved (under :meth:`creating`)."""
        net = Network(record)
        with self._guard:
            self._networks[record.id] = net
        return net

    def remove_network(self, net: Network) -> None:
        """Forget a network (held exclusively); its record is deleted from the store."""
        self.store.delete_network(net.id)
        net.alive = False
        with self._guard:
            self._networks.pop(net.id, None)
            for eid in net.snapshot():
                self._owner.pop(eid.id, None)

    # --- rule 1: endpoint verbs --------------------------------------------------------------

    @contextlib.contextmanager
    def endpoint_locked(self, network_id: str, endpoint_id: str) -> Iterator[Network | None]:
        """The network held shared, with ``endpoint_id`` held exclusively; None if the network
        doesn't exist (or stopped existing)."""
        net = self._network(network_id)
        if net is None:
            yield None
            return
        with net.lock.shared(), net._endpoint_lock(endpoint_id):
            yield net if net.alive else None

    def add_endpoint(self, net: Network, rec: EndpointRecord) -> None:
        """Claim an endpoint's id and save its record, before anything of it exists (rule 4)."""
        prefix = rec.id[:12]
        with self._guard:
            if not self._guard.wait_for(lambda: prefix not in self._sweeping, timeout=60):
                raise PycniError(f"endpoint {prefix}: a reconciliation sweep has held its names "
                                 "for 60 s; try again")
            self._owner[rec.id] = net.id
        with net.mutex:
            net.endpoints[rec.id] = rec
        try:
            self.store.save_endpoint(rec)
        except BaseException:
            self.remove_endpoint(net, rec.id)
            raise

    def save_endpoint(self, net: Network, rec: EndpointRecord) -> None:
        self.store.save_endpoint(rec)
        with net.mutex:
            net.endpoints[rec.id] = rec

    def remove_endpoint(self, net: Network, endpoint_id: str) -> None:
        self.store.delete_endpoint(endpoint_id)
        with net.mutex:
            net.endpoints.pop(endpoint_id, None)
        with self._guard:
            self._owner.pop(endpoint_id, None)

    def network_of(self, endpoint_id: str) -> str | None:
        with self._guard:
            return self._owner.get(endpoint_id)

    # --- rule 3: snapshots -------------------------------------------------------------------

    def networks(self) -> list[NetworkRecord]:
        with self._guard:
            return [n.record for n in self._networks.values()]

    def network_ids(self) -> list[str]:
        with self._guard:
            return list(self._networks)

    def endpoints(self, network_id: str | None = None) -> list[EndpointRecord]:
        """Every endpoint (of one network)."""
        with self._guard:
            nets = [n for n in self._networks.values() if network_id in (None, n.id)]
        return [rec for net in nets for rec in net.snapshot()]

    def endpoint_ids(self) -> set[str]:
        """Every endpoint id known or being created."""
        with self._guard:
            return set(self._owner)

    # --- rule 4: host names a sweep may remove ------------------------------------------------

    @contextlib.contextmanager
    def sweeping(self, prefix: str) -> Iterator[bool]:
        """Hold the endpoint-id ``prefix`` while a sweep removes host objects named after it.

        Yields False (do nothing) if an endpoint with that prefix is known or being created.
        """
        with self._guard:
            if any(eid.startswith(prefix) for eid in self._owner) or prefix in self._sweeping:
                claimed = False
            else:
                self._sweeping.add(prefix)
                claimed = True
        try:
            yield claimed
        finally:
            if claimed:
                with self._guard:
                    self._sweeping.discard(prefix)
                    self._guard.notify_all()


@dataclass
class EndpointLedger:
    """An endpoint's record as the attachment lifecycle keeps it (:class:`shim.lifecycle.Ledger`):
    in the registry, under its network's lock (held by the caller); ``net`` is None for a
    leftover no network owns. ``release`` frees what the record holds besides (its ports)."""

    registry: Registry
    net: Network | None
    rec: EndpointRecord
    release: Callable[[EndpointRecord], None] = lambda rec: None

    def claim(self) -> None:
        assert self.net is not None, "an endpoint is claimed on a network"
        self.registry.add_endpoint(self.net, self.rec)

    def save(self) -> None:
        """The record as it stands, with ADD's addresses once it has them: DEL gets them
        back on the link if a crash comes before the endpoint is settled."""
        if not self.rec.addresses:
            self.rec.addresses = [str(ip.address) for ip in self.rec.attachment.ips()]
        if self.net is None:
            self.registry.store.save_endpoint(self.rec)
        else:
            self.registry.save_endpoint(self.net, self.rec)

    def drop(self) -> None:
        self.release(self.rec)
        if self.net is None:
            self.registry.store.delete_endpoint(self.rec.id)
        else:
            self.registry.remove_endpoint(self.net, self.rec.id)
