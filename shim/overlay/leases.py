"""An overlay's definition and its hosts' subnet leases, as keys in the store.

::

    /pycni/overlay/<name>/config                  {"subnet", "prefix", "vni", "mtu"}   no lease
    /pycni/overlay/<name>/leases/<a.b.c.d>-<len>  {"underlay", "mac"}                  etcd lease

The first host to create the overlay writes its definition (create-if-absent: of two racing
hosts one writes it, the other reads it); every later one must ask for the same thing or is
refused with the difference named. Each host then claims one per-host subnet of the overlay's
range with a create-if-absent on that subnet's key, attached to an etcd lease the host keeps
alive: a host that vanishes loses its subnet when the lease expires, and the others remove its
routes. A host that comes back with its lease expired re-claims the subnet it had (its own
value, or no value, under the key) — never a subnet another host holds.

Every per-host subnet is handed out, the first too: its VTEP carries the subnet's network
address as a /32 (:mod:`shim.overlay.vtep`), which for the first is the range's own, as
flannel does with its first lease.
"""

from __future__ import annotations

import ipaddress
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import InvalidRequest, OverlayError, SubnetTaken
from .store import KV
from .vtep import HostRoute, colliding

ROOT = "/pycni/overlay/"
DEFAULT_PREFIX = 24
#: VXLAN's overhead on an IPv4 underlay: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
VXLAN_OVERHEAD = 50

IPv4Network = ipaddress.IPv4Network


def overlay_prefix(name: str) -> str:
    """Every key of overlay ``name``."""
    return f"{ROOT}{name}/"


def definition_key(name: str) -> str:
    return f"{overlay_prefix(name)}config"


def leases_prefix(name: str) -> str:
    return f"{overlay_prefix(name)}leases/"


def lease_key(name: str, subnet: IPv4Network) -> str:
    return f"{leases_prefix(name)}{subnet.network_address}-{subnet.prefixlen}"


def default_vni(name: str) -> int:
    """A VNI from the overlay's name, the same on every host (1 … 2^24-2)."""
    return 1 + zlib.crc32(name.encode()) % 0xFFFFFE


@dataclass(frozen=True)
class Definition:
    """What every host of one overlay agrees on."""

    subnet: IPv4Network
    prefix: int
    vni: int
    mtu: int

    def to_json(self) -> dict[str, object]:
        return {"subnet": str(self.subnet), "prefix": self.prefix, "vni": self.vni,
                "mtu": self.mtu}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Definition:
        return cls(ipaddress.IPv4Network(str(data["subnet"])), int(str(data["prefix"])),
                   int(str(data["vni"])), int(str(data["mtu"])))

    def subnets(self) -> Iterator[IPv4Network]:
        """The per-host subnets, in order."""
        yield from self.subnet.subnets(new_prefix=self.prefix)


@dataclass(frozen=True)
class Asked:
    """What one ``docker network create`` asks of the overlay; None: whatever it is."""

    name: str
    subnet: IPv4Network
    prefix: int | None = None
    vni: int | None = None
    mtu: int | None = None

    def definition(self, default_mtu: int) -> Definition:
        return Definition(self.subnet, self.prefix or DEFAULT_PREFIX,
                          self.vni or default_vni(self.name), self.mtu or default_mtu)

    def differences(self, held: Definition) -> list[str]:
        """How this request contradicts the definition the store holds."""
        found = []
        if self.subnet != held.subnet:
            found.append(f"subnet {held.subnet}, not {self.subnet}")
        for label, mine, theirs, unit in (("per-host prefix", self.prefix, held.prefix, "/"),
                                          ("VNI", self.vni, held.vni, ""),
                                          ("MTU", self.mtu, held.mtu, "")):
            if mine is not None and mine != theirs:
                found.append(f"{label} {unit}{theirs}, not {unit}{mine}")
        return found


def check(asked: Asked) -> None:
    """Refuse what can't make an overlay before anything is written."""
    prefix = asked.prefix or DEFAULT_PREFIX
    if not asked.subnet.prefixlen < prefix <= 30:
        raise InvalidRequest(
            f"overlay {asked.name}: a per-host prefix of /{prefix} does not fit {asked.subnet}: "
            f"it must be longer than /{asked.subnet.prefixlen} and at most /30")
    if asked.vni is not None and not 1 <= asked.vni <= 0xFFFFFF:
        raise InvalidRequest(f"overlay {asked.name}: VNI {asked.vni} is not in 1…16777215")


def define(kv: KV, asked: Asked, default_mtu: int) -> Definition:
    """The overlay's definition: the store's, or this request's if it is the first."""
    check(asked)
    _no_overlap(kv, asked)
    key = definition_key(asked.name)
    mine = asked.definition(default_mtu)
    if kv.create(key, json.dumps(mine.to_json())):
        return mine
    raw = kv.get(key)
    if raw is None:  # removed between the two calls by the last host leaving: try once more
        if kv.create(key, json.dumps(mine.to_json())):
            return mine
        raw = kv.get(key) or "{}"
    try:
        held = Definition.from_json(json.loads(raw))
    except (ValueError, KeyError) as exc:
        raise OverlayError(f"overlay {asked.name}: {kv.where} holds an unreadable definition "
                           f"under {key}: {raw[:200]!r}") from exc
    differences = asked.differences(held)
    if differences:
        raise InvalidRequest(
            f"overlay {asked.name} is defined in {kv.where} with " + "; ".join(differences)
            + ": create the network with the same options on every host, or name another "
            "overlay")
    return held


def _no_overlap(kv: KV, asked: Asked) -> None:
    """Refuse a range that overlaps another overlay's, as etcd holds them (not this host's
    view: every host refuses the same)."""
    for key, raw in kv.get_prefix(ROOT).items():
        name, _, rest = key[len(ROOT):].partition("/")
        if rest != "config" or name == asked.name:
            continue
        try:
            other = IPv4Network(json.loads(raw)["subnet"])
        except (ValueError, KeyError, TypeError):
            continue
        if other.overlaps(asked.subnet):
            raise InvalidRequest(
                f"overlay {asked.name}: {asked.subnet} overlaps overlay {name}'s {other} "
                f"(defined in {kv.where}): their hosts' routes would collide; give it a range "
                "of its own")


@dataclass(frozen=True)
class Holder:
    """A host holding a subnet: where its VTEP is."""

    underlay: str
    mac: str

    def to_json(self) -> str:
        return json.dumps({"underlay": self.underlay, "mac": self.mac}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Holder | None:
        try:
            data = json.loads(raw)
            return cls(str(data["underlay"]), str(data["mac"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Peer:
    """Another host of the overlay."""

    subnet: IPv4Network
    underlay: str
    mac: str

    def to_json(self) -> dict[str, str]:
        return {"subnet": str(self.subnet), "underlay": self.underlay, "mac": self.mac}


def claim(kv: KV, name: str, definition: Definition, me: Holder, lease: int,
          prefer: IPv4Network | None = None, *, only_prefer: bool = False,
          avoid: Sequence[HostRoute] = ()) -> IPv4Network:
    """Claim a per-host subnet under ``lease``: ``prefer`` (the one this host had) if it is
    free or still this host's, else the first free one that collides with none of ``avoid``
    (this host's routes: a Docker network, the LAN); ``only_prefer`` claims that one or none.
    Create-if-absent: racing hosts get different subnets."""
    held = kv.get_prefix(leases_prefix(name))
    candidates = [prefer] if prefer is not None else []
    clashing = [s for s in definition.subnets() if colliding(avoid, s) is not None]
    if not only_prefer:
        candidates += [s for s in definition.subnets() if s != prefer and s not in clashing]
    value = me.to_json()
    for subnet in candidates:
        key = lease_key(name, subnet)
        current = held.get(key)
        if current is None:
            if kv.create(key, value, lease):
                return subnet
        elif Holder.from_json(current) == me and kv.replace(key, current, value, lease):
            # this host's own claim, under a lease that expired or a pycni that restarted
            return subnet
    if only_prefer and prefer is not None:
        holder = Holder.from_json(held.get(lease_key(name, prefer)) or "")
        other = f"host {holder.underlay}" if holder is not None else "another host"
        raise SubnetTaken(f"overlay {name}: this host's subnet {prefer} is held by {other} in "
                          f"{kv.where}: this host's lease expired while its pycni was away, "
                          "and that host claimed the subnet")
    collide = (f", {len(clashing)} collide with this host's routes "
               f"({', '.join(map(str, [r for r in avoid if r.dst.overlaps(definition.subnet)]))})"
               if clashing else "")
    raise OverlayError(f"overlay {name}: no /{definition.prefix} of {definition.subnet} is free "
                       f"in {kv.where} ({len(held)} held{collide})")


def peers(kv: KV, name: str, mine: IPv4Network) -> list[Peer]:
    """Every other host's subnet and VTEP, as the store holds them now."""
    found = []
    prefix = leases_prefix(name)
    for key, raw in sorted(kv.get_prefix(prefix).items()):
        try:
            address, length = key[len(prefix):].split("-")
            subnet = IPv4Network(f"{address}/{length}")
        except ValueError:
            continue
        holder = Holder.from_json(raw)
        if holder is None or subnet == mine:
            continue
        found.append(Peer(subnet, holder.underlay, holder.mac))
    return found


def release(kv: KV, name: str, subnet: IPv4Network, me: Holder, lease: int) -> None:
    """Give the subnet back; the last host to leave removes the definition too."""
    kv.delete_if(lease_key(name, subnet), me.to_json())
    if lease:
        kv.revoke(lease)
    kv.delete_prefix_if_alone(definition_key(name), leases_prefix(name))
