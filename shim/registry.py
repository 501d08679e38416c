"""The one owner of pycni's in-memory state: networks, their endpoints, and the store behind them.

Modelled on moby's bridge driver, which keeps each network's endpoints inside the network object
under the network's own mutex. The lock rule, written once, here:

1. **A verb takes its network's lock and re-reads inside it.** :meth:`Registry.locked` finds the
   network, takes its lock, and only then checks that the network still exists (a DeleteNetwork
   may have won the race). Everything about a network and its endpoints is read and changed
   only under that lock: ``Network.endpoints`` belongs to it.
2. **One network lock at a time.** No code holds two network locks. The ports lock
   (:class:`shim.ports.Publisher`) may be taken *inside* a network lock, never the other way.
3. **Iterate over snapshots.** :meth:`Registry.networks` and :meth:`Registry.endpoints` return
   lists copied under the locks (so they are taken while holding no network lock); nobody
   iterates a dict another thread may change.
4. **Names on the host are claimed before they exist.** An endpoint's staging netns and host
   link are named after its id; :meth:`Registry.add_endpoint` claims the id under the registry's
   guard before anything is created, and a sweep removes a namespace or link only through
   :meth:`Registry.sweeping`, which refuses names claimed meanwhile and makes a verb that wants
   one wait until the sweep is done with it.
5. **Sweeps take the same locks as the verbs** and skip anything newer than the sweep's start.

The registry's own guard protects only its dicts and claims; it is never held across I/O or
while waiting for a network lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import NotFound
from .state import EndpointRecord, NetworkRecord, Store


@dataclass(eq=False)
class Network:
    """A network and its endpoints; everything in it belongs to ``lock`` (rule 1)."""

    record: NetworkRecord
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: false once deleted: a verb that waited for the lock must not act on it
    alive: bool = True

    @property
    def id(self) -> str:
        return self.record.id


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
        #: locks of networks being created (CreateNetwork of a new id)
        self._creating: dict[str, threading.Lock] = {}

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

    # --- rule 1: one network under its lock --------------------------------------------------

    @contextlib.contextmanager
    def locked(self, network_id: str) -> Iterator[Network]:
        """The network, under its lock; NotFound if it doesn't exist (or stopped existing)."""
        with self.locked_if_any(network_id) as net:
            if net is None:
                raise NotFound(f"pycni has no network {network_id[:12]}")
            yield net

    @contextlib.contextmanager
    def locked_if_any(self, network_id: str) -> Iterator[Network | None]:
        """The network under its lock, or None: for verbs where "already gone" is success."""
        with self._guard:
            net = self._networks.get(network_id)
        if net is None:
            yield None
            return
        with net.lock:
            yield net if net.alive else None

    @contextlib.contextmanager
    def creating(self, network_id: str) -> Iterator[Network | None]:
        """CreateNetwork's lock: yields the network if it exists already (Docker retried)."""
        with self._guard:
            lock = self._creating.setdefault(network_id, threading.Lock())
        try:
            with lock:
                with self._guard:
                    net = self._networks.get(network_id)
                yield net
        finally:
            with self._guard:
                self._creating.pop(network_id, None)

    def add_network(self, record: NetworkRecord) -> Network:
        """Register a network whose record is saved (under :meth:`creating`)."""
        net = Network(record)
        with self._guard:
            self._networks[record.id] = net
        return net

    def remove_network(self, net: Network) -> None:
        """Forget a network (under its lock); its record is deleted from the store."""
        self.store.delete_network(net.id)
        net.alive = False
        with self._guard:
            self._networks.pop(net.id, None)
            for eid in list(net.endpoints):
                self._owner.pop(eid, None)

    # --- endpoints (always under their network's lock) ---------------------------------------

    def add_endpoint(self, net: Network, rec: EndpointRecord) -> None:
        """Claim an endpoint's id and save its record, before anything of it exists (rule 4)."""
        prefix = rec.id[:12]
        with self._guard:
            self._guard.wait_for(lambda: prefix not in self._sweeping, timeout=60)
            self._owner[rec.id] = net.id
        net.endpoints[rec.id] = rec
        try:
            self.store.save_endpoint(rec)
        except BaseException:
            self.remove_endpoint(net, rec.id)
            raise

    def save_endpoint(self, net: Network, rec: EndpointRecord) -> None:
        self.store.save_endpoint(rec)
        net.endpoints[rec.id] = rec

    def remove_endpoint(self, net: Network, endpoint_id: str) -> None:
        self.store.delete_endpoint(endpoint_id)
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
        """Every endpoint (of one network), each network's copied under its lock."""
        with self._guard:
            nets = [n for n in self._networks.values() if network_id in (None, n.id)]
        found: list[EndpointRecord] = []
        for net in nets:
            with net.lock:
                found += net.endpoints.values()
        return found

    def endpoint_ids(self) -> set[str]:
        """Every endpoint id known or being created (cheap: no network lock)."""
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
