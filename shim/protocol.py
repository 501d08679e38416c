"""Docker's remote network driver API (libnetwork ``drivers/remote/api``), as dataclasses.

Each request type parses and validates Docker's JSON (``from_json``) and raises
:class:`~shim.errors.InvalidRequest` for anything malformed, so views never touch raw dicts; each
response type renders Docker's JSON (``to_json``). Field names on the wire are Docker's.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

# Labels Docker puts in CreateNetwork / CreateEndpoint options (libnetwork netlabel).
GENERIC = "com.docker.network.generic"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"
PORT_MAP = "com.docker.network.portmap"
EXPOSED_PORTS = "com.docker.network.endpoint.exposedports"

_ID_RE = re.compile(r"[0-9a-f]{64}")

#: How deep a request may nest, the top-level object being level 1. Docker's requests nest a
#: few levels (a port binding inside Options is at level 4). Far deeper is nobody's request, and
#: whatever walks it recursively (the JSON parser, copying it, storing it as received) would run
#: out of Python's recursion limit: such a body is refused here, once, as malformed.
MAX_DEPTH = 32

NOT_AN_OBJECT = "request body must be a JSON object"


def decode(raw: bytes, method: str) -> dict[str, Any]:
    """Docker's request body, as the JSON object every driver method sends.

    An *empty* body gets a message of its own. Docker's plugin client (moby
    ``pkg/plugins/client.go``, ``callWithRetry``) builds each retry from the reader the first
    try already drained, so when the connection breaks after the body was sent — pycni was
    killed or restarted while it handled the request — the retry (for up to 30 s) arrives
    with the right method and no body. That is no malformed request, and the user can act on it.
    """
    if not raw:
        raise InvalidRequest(
            f"Docker sent {method} with an empty body: Docker re-sends a request without its "
            "body when the plugin went away while the request was in flight (pycni was "
            "restarted or killed); run the command again"
        )
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise InvalidRequest(_too_deep()) from exc
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes in no UTF
        raise InvalidRequest(NOT_AN_OBJECT) from exc
    if not isinstance(data, dict):
        raise InvalidRequest(NOT_AN_OBJECT)
    check_depth(data)
    return data


def _too_deep() -> str:
    return f"request body nests deeper than {MAX_DEPTH} levels; no request of Docker's does"


def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested more than ``limit`` levels deep (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise InvalidRequest(_too_deep())
        stack.extend((child, depth + 1) for child in children)


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return data


def _json_type(value: Any) -> str:
    """What JSON calls the type of a parsed ``value`` (for messages about the wrong one)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _id(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise InvalidRequest(f"missing {key}")
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string (a Docker id), not {_json_type(value)}")
    if not _ID_RE.fullmatch(value):
        raise InvalidRequest(f"{key} {value[:80]!r} is not a Docker id (64 hex digits)")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string")
    return value


def _options(data: Mapping[str, Any], key: str = "Options") -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    return _object(value, key)


def _cidr(value: str, key: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if not value:
        return None
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise InvalidRequest(f"{key} {value[:80]!r} is not an address in CIDR form") from exc


@dataclass(frozen=True)
class IPAMData:
    """One address pool Docker's IPAM gave the network (``driverapi.IPAMData``)."""

    address_space: str
    pool: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None
    aux_addresses: dict[str, str]

    @property
    def is_null(self) -> bool:
        """Docker's ``null`` IPAM driver hands out the whole space and no addresses."""
        return self.address_space == "null" or self.pool.prefixlen == 0

    @classmethod
    def from_json(cls, data: Any) -> IPAMData:
        data = _object(data, "IPAM data")
        pool = _str(data, "Pool")
        try:
            network = ipaddress.ip_network(pool, strict=False)
        except ValueError as exc:
            raise InvalidRequest(f"IPAM Pool {pool[:80]!r} is not a subnet") from exc
        aux = data.get("AuxAddresses") or {}
        if not isinstance(aux, dict):
            raise InvalidRequest("AuxAddresses must be an object")
        return cls(
            address_space=_str(data, "AddressSpace"),
            pool=network,
            gateway=_cidr(_str(data, "Gateway"), "Gateway"),
            aux_addresses={str(k): str(v) for k, v in aux.items()},
        )


def _ipam_list(data: Mapping[str, Any], key: str) -> list[IPAMData]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{key} must be a list")
    return [IPAMData.from_json(v) for v in value]


@dataclass(frozen=True)
class CreateNetworkRequest:
    network_id: str
    options: dict[str, Any]
    ipv4_data: list[IPAMData]
    ipv6_data: list[IPAMData]

    @classmethod
    def from_json(cls, data: Any) -> CreateNetworkRequest:
        data = _object(data, "request")
        return cls(
            network_id=_id(data, "NetworkID"),
            options=_options(data),
            ipv4_data=_ipam_list(data, "IPv4Data"),
            ipv6_data=_ipam_list(data, "IPv6Data"),
        )

    @property
    def driver_options(self) -> dict[str, str]:
        """The ``-o key=value`` options of ``docker network create``."""
        generic = self.options.get(GENERIC) or {}
        if not isinstance(generic, dict):
            raise InvalidRequest(f"{GENERIC} must be an object")
        return {str(k): str(v) for k, v in generic.items()}

    @property
    def ipv6(self) -> bool:
        return bool(self.options.get(ENABLE_IPV6))

    @property
    def internal(self) -> bool:
        return bool(self.options.get(INTERNAL))


@dataclass(frozen=True)
class NetworkRequest:
    """DeleteNetwork, and anything else that names only a network."""

    network_id: str

    @classmethod
    def from_json(cls, data: Any) -> NetworkRequest:
        return cls(network_id=_id(_object(data, "request"), "NetworkID"))


@dataclass(frozen=True)
class EndpointInterface:
    """Addresses Docker's IPAM (or ``--ip``/``--mac-address``) already chose, if any."""

    address: ipaddress.IPv4Interface | None = None
    address_ipv6: ipaddress.IPv6Interface | None = None
    mac_address: str = ""

    @classmethod
    def from_json(cls, data: Any) -> EndpointInterface:
        if data is None:
            return cls()
        data = _object(data, "Interface")
        v4 = _cidr(_str(data, "Address"), "Address")
        v6 = _cidr(_str(data, "AddressIPv6"), "AddressIPv6")
        if v4 is not None and v4.version != 4:
            raise InvalidRequest("Interface.Address must be an IPv4 address")
        if v6 is not None and v6.version != 6:
            raise InvalidRequest("Interface.AddressIPv6 must be an IPv6 address")
        mac = _str(data, "MacAddress")
        if mac and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            raise InvalidRequest(f"MacAddress {mac[:40]!r} is not a MAC address")
        return cls(address=v4, address_ipv6=v6, mac_address=mac.lower())

    def to_json(self) -> dict[str, str]:
        out = {}
        if self.address is not None:
            out["Address"] = str(self.address)
        if self.address_ipv6 is not None:
            out["AddressIPv6"] = str(self.address_ipv6)
        if self.mac_address:
            out["MacAddress"] = self.mac_address
        return out


@dataclass(frozen=True)
class CreateEndpointRequest:
    network_id: str
    endpoint_id: str
    interface: EndpointInterface
    options: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> CreateEndpointRequest:
        data = _object(data, "request")
        return cls(
            network_id=_id(data, "NetworkID"),
            endpoint_id=_id(data, "EndpointID"),
            interface=EndpointInterface.from_json(data.get("Interface")),
            options=_options(data),
        )


@dataclass(frozen=True)
class EndpointRequest:
    """DeleteEndpoint, EndpointOperInfo, Leave, Revoke…: a network and an endpoint."""

    network_id: str
    endpoint_id: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> EndpointRequest:
        data = _object(data, "request")
        return cls(
            network_id=_id(data, "NetworkID"),
            endpoint_id=_id(data, "EndpointID"),
            options=_options(data),
        )


@dataclass(frozen=True)
class JoinRequest:
    network_id: str
    endpoint_id: str
    sandbox_key: str
    options: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> JoinRequest:
        data = _object(data, "request")
        return cls(
            network_id=_id(data, "NetworkID"),
            endpoint_id=_id(data, "EndpointID"),
            sandbox_key=_str(data, "SandboxKey"),
            options=_options(data),
        )


# libnetwork types.StaticRoute route types
NEXTHOP = 0
CONNECTED = 1


@dataclass(frozen=True)
class StaticRoute:
    destination: str
    route_type: int
    next_hop: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Destination": self.destination, "RouteType": self.route_type}
        if self.next_hop:
            out["NextHop"] = self.next_hop
        return out


@dataclass(frozen=True)
class JoinResponse:
    src_name: str
    dst_prefix: str = "eth"
    gateway: str = ""
    gateway_ipv6: str = ""
    static_routes: tuple[StaticRoute, ...] = ()
    disable_gateway_service: bool = False

    def to_json(self) -> dict[str, Any]:
        """Without a ``src_name``, no ``InterfaceName``: Docker then moves and configures no
        interface of its own (the chain made it in the sandbox, :mod:`shim.sandbox`)."""
        out: dict[str, Any] = {"DisableGatewayService": self.disable_gateway_service}
        if self.src_name:
            out["InterfaceName"] = {"SrcName": self.src_name, "DstPrefix": self.dst_prefix}
        if self.gateway:
            out["Gateway"] = self.gateway
        if self.gateway_ipv6:
            out["GatewayIPv6"] = self.gateway_ipv6
        if self.static_routes:
            out["StaticRoutes"] = [r.to_json() for r in self.static_routes]
        return out
