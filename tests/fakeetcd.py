"""An in-memory etcd for unit tests: the overlay's :class:`~shim.overlay.store.KV`, with etcd's
transaction semantics (create-if-absent, compare-value, compare over a range), leases that the
test expires by hand, an outage switch, and watches that hear every change (and that the test
can break, as an etcd restart or compaction does).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from shim.errors import NetlinkFailure, StoreUnavailable
from shim.overlay.vtep import Entry, HostRoute


class FakeWatch:
    """A watch on a prefix: the keys of each change, until broken or closed."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._events: queue.Queue[list[str] | None] = queue.Queue()

    def tell(self, keys: list[str]) -> None:
        mine = [k for k in keys if k.startswith(self.prefix)]
        if mine:
            self._events.put(mine)

    def __iter__(self) -> Iterator[list[str]]:
        while (keys := self._events.get()) is not None:
            yield keys

    def close(self) -> None:
        self._events.put(None)


@dataclass
class FakeEtcd:
    where: str = "etcd at http://fake:2379"
    #: key → (value, lease)
    data: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: live leases → TTL
    leases: dict[int, int] = field(default_factory=dict)
    #: while True every call raises StoreUnavailable, as a stopped etcd does
    down: bool = False
    calls: int = 0
    #: the watches open now
    watches: list[FakeWatch] = field(default_factory=list)
    _next: int = 100
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable(f"{self.where} did not answer: connection refused")

    def get(self, key: str) -> str | None:
        with self._lock:
            self._call()
            found = self.data.get(key)
            return found[0] if found else None

    def get_prefix(self, prefix: str) -> dict[str, str]:
        with self._lock:
            self._call()
            return {k: v for k, (v, _) in self.data.items() if k.startswith(prefix)}

    def _check_lease(self, lease: int) -> None:
        if lease and lease not in self.leases:
            raise StoreUnavailable(f"{self.where}: requested lease not found")

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        with self._lock:
            self._call()
            self._check_lease(lease)
            if key in self.data:
                return False
            self.data[key] = (value, lease)
            self._changed([key])
            return True

    def replace(self, key: str, old: str, new: str, lease: int = 0) -> bool:
        with self._lock:
            self._call()
            self._check_lease(lease)
            if key not in self.data or self.data[key][0] != old:
                return False
            self.data[key] = (new, lease)
            self._changed([key])
            return True

    def delete_if(self, key: str, value: str) -> bool:
        with self._lock:
            self._call()
            if key not in self.data or self.data[key][0] != value:
                return False
            del self.data[key]
            self._changed([key])
            return True

    def delete_prefix_if_alone(self, key: str, prefix: str) -> bool:
        with self._lock:
            self._call()
            if any(k.startswith(prefix) for k in self.data) or key not in self.data:
                return False
            del self.data[key]
            self._changed([key])
            return True

    def grant(self, ttl: int) -> int:
        with self._lock:
            self._call()
            self._next += 1
            self.leases[self._next] = ttl
            return self._next

    def refresh(self, lease: int) -> int:
        with self._lock:
            self._call()
            return self.leases.get(lease, -1)

    def revoke(self, lease: int) -> None:
        with self._lock:
            self._call()
            self._drop(lease)

    def expire(self, lease: int) -> None:
        """What etcd does when nobody kept ``lease`` alive for its TTL."""
        with self._lock:
            self._drop(lease)

    def _drop(self, lease: int) -> None:
        self.leases.pop(lease, None)
        gone = [k for k, (_, held) in self.data.items() if held == lease]
        for key in gone:
            del self.data[key]
        self._changed(gone)

    def watch(self, prefix: str) -> FakeWatch:
        with self._lock:
            self._call()
            opened = FakeWatch(prefix)
            self.watches.append(opened)
            return opened

    def break_watches(self) -> None:
        """What an etcd restart or a compaction does to every open watch: it ends."""
        with self._lock:
            broken, self.watches = self.watches, []
        for watch in broken:
            watch.close()

    def _changed(self, keys: list[str]) -> None:
        for watch in self.watches:
            watch.tell(keys)


@dataclass
class FakeVteps:
    """:class:`~shim.overlay.vtep.Vteps` in memory: name → (vni, underlay, address, mac, mtu),
    and the peers programmed on each."""

    links: dict[str, tuple[int, str, str, str, int]] = field(default_factory=dict)
    programmed: dict[str, list[Entry]] = field(default_factory=dict)
    #: this host's routes that are not an overlay's (a Docker network's, the LAN's…)
    routes: list[HostRoute] = field(default_factory=list)

    def ensure(self, name: str, vni: int, underlay: str, address: str, mac: str,
               mtu: int) -> None:
        self.links[name] = (vni, underlay, address, mac, mtu)
        self.programmed.setdefault(name, [])

    def sync(self, name: str, peers: Iterable[Entry]) -> None:
        if name not in self.links:
            raise NetlinkFailure(f"VTEP {name} is missing")
        self.programmed[name] = sorted(peers, key=lambda e: e.subnet)

    def delete(self, name: str) -> None:
        self.links.pop(name, None)
        self.programmed.pop(name, None)

    def entries(self, name: str) -> list[Entry]:
        return list(self.programmed.get(name, []))

    def host_routes(self) -> list[HostRoute]:
        return list(self.routes)
