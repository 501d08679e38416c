"""CNI's data types: spec versions and the ADD result, in every version pycni speaks.

The result format changed once that matters here: up to 0.4.0 each entry of ``ips`` carried
``"version": "4"|"6"``; from 1.0.0 that key is gone. 1.1.0 added optional route fields (``mtu``,
``advmss``, ``priority``, ``table``, ``scope``) and interface fields (``mtu``, ``socketPath``,
``pciID``). One :class:`Result` holds all of them; :meth:`Result.to_json` writes the shape a given
version expects, which is how ``prevResult`` is converted to the version of the config.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import CNIError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Spec versions whose results pycni parses and writes, oldest first.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
#: The newest spec version pycni implements (what it asks plugins for in VERSION).
CURRENT_VERSION = "1.1.0"


@functools.lru_cache(maxsize=64)  # a handful of versions, asked about on every result
def parse_version(version: str) -> tuple[int, int, int]:
    """``"0.3.1"`` → ``(0, 3, 1)``. Raises ValueError for anything that isn't x.y.z."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid CNI version {version!r}: want MAJOR.MINOR.PATCH")
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch


def version_at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


def is_supported(version: str) -> bool:
    return version in SUPPORTED_VERSIONS


def _decode_error(msg: str) -> CNIError:
    return CNIError(msg, code=CNIError.DECODING_FAILURE)


def _optional_int(data: dict[str, Any], key: str) -> int | None:
    """An optional integer field (``mtu``, ``table``, ...); anything else is a decoding error."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _decode_error(f"{key!r} must be an integer: {data!r}")
    return value


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Interface:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise _decode_error(f"interface entry needs a string 'name': {data!r}")
        return cls(
            name=data["name"],
            mac=str(data.get("mac", "")),
            sandbox=str(data.get("sandbox", "")),
            mtu=_optional_int(data, "mtu"),
            socket_path=str(data.get("socketPath", "")),
            pci_id=str(data.get("pciID", "")),
        )

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu and version_at_least(version, "1.1.0"):
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if version_at_least(version, "1.1.0"):
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out


@dataclass
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def family(self) -> int:
        return self.address.version

    @classmethod
    def from_json(cls, data: Any) -> IPConfig:
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise _decode_error(f"ips entry needs a string 'address' in CIDR form: {data!r}")
        try:
            address = ipaddress.ip_interface(data["address"])
            gateway = ipaddress.ip_address(data["gateway"]) if data.get("gateway") else None
        except ValueError as exc:
            raise _decode_error(f"bad address in ips entry {data!r}: {exc}") from exc
        iface = data.get("interface")
        if iface is not None and (not isinstance(iface, int) or isinstance(iface, bool)):
            raise _decode_error(f"ips entry 'interface' must be an index: {data!r}")
        return cls(address=address, gateway=gateway, interface=iface)

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not version_at_least(version, "1.0.0"):
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out


@dataclass
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None
    # 1.1.0 additions
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    _EXTRA = ("mtu", "advmss", "priority", "table", "scope")

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0

    @classmethod
    def from_json(cls, data: Any) -> Route:
        if not isinstance(data, dict) or not isinstance(data.get("dst"), str):
            raise _decode_error(f"route needs a string 'dst': {data!r}")
        try:
            dst = ipaddress.ip_network(data["dst"], strict=False)
            gw = ipaddress.ip_address(data["gw"]) if data.get("gw") else None
        except ValueError as exc:
            raise _decode_error(f"bad route {data!r}: {exc}") from exc
        extra = {k: _optional_int(data, k) for k in cls._EXTRA}
        return cls(dst=dst, gw=gw, **extra)

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if version_at_least(version, "1.1.0"):
            for key in self._EXTRA:
                value = getattr(self, key)
                if value is not None:
                    out[key] = value
        return out


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> DNS:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise _decode_error(f"dns must be an object: {data!r}")
        for key in ("nameservers", "search", "options"):
            # a bare string would otherwise become a list of its characters
            if data.get(key) is not None and not isinstance(data[key], list):
                raise _decode_error(f"dns field {key!r} must be a list: {data!r}")
        return cls(
            nameservers=[str(x) for x in data.get("nameservers") or []],
            domain=str(data.get("domain") or ""),
            search=[str(x) for x in data.get("search") or []],
            options=[str(x) for x in data.get("options") or []],
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    def __bool__(self) -> bool:
        return bool(self.nameservers or self.domain or self.search or self.options)


@dataclass
class Result:
    """An ADD result of any supported version (the spec's "Success" output)."""

    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    @classmethod
    def from_json(cls, data: Any, default_version: str = "") -> Result:
        """Parse a plugin's result. A missing ``cniVersion`` means the config's (libcni does so)."""
        if not isinstance(data, dict):
            raise _decode_error(f"result must be a JSON object, got {type(data).__name__}")
        version = data.get("cniVersion") or default_version
        if not isinstance(version, str) or not is_supported(version):
            raise CNIError(
                f"unsupported result version {version!r}; pycni reads "
                + ", ".join(SUPPORTED_VERSIONS),
                code=CNIError.INCOMPATIBLE_VERSION,
            )
        for key in ("interfaces", "ips", "routes"):
            if data.get(key) is not None and not isinstance(data[key], list):
                raise _decode_error(f"result field {key!r} must be a list")
        return cls(
            cni_version=version,
            interfaces=[Interface.from_json(i) for i in data.get("interfaces") or []],
            ips=[IPConfig.from_json(i) for i in data.get("ips") or []],
            routes=[Route.from_json(r) for r in data.get("routes") or []],
            dns=DNS.from_json(data.get("dns")),
        )

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The result as the given spec version writes it (default: its own version)."""
        version = version or self.cni_version
        if not is_supported(version):
            raise CNIError(
                f"cannot convert result to version {version!r}", code=CNIError.INCOMPATIBLE_VERSION
            )
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_json(version) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_json(version) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_json(version) for r in self.routes]
        out["dns"] = self.dns.to_json()
        return out

    def convert(self, version: str) -> Result:
        """This result as another spec version (fields the target lacks are dropped)."""
        return Result.from_json(self.to_json(version))

    # --- conveniences for runtimes -------------------------------------------------------------

    def container_interfaces(self) -> list[tuple[int, Interface]]:
        """Interfaces inside a sandbox, with their index in ``interfaces``."""
        return [(n, i) for n, i in enumerate(self.interfaces) if i.sandbox]

    def ips_for(self, index: int | None) -> list[IPConfig]:
        """The ips entries that belong to interface ``index`` (all of them when ``None``)."""
        if index is None:
            return list(self.ips)
        return [ip for ip in self.ips if ip.interface == index]


@dataclass(frozen=True)
class VersionInfo:
    """What a plugin answered to VERSION."""

    cni_version: str
    supported_versions: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Any) -> VersionInfo:
        if not isinstance(data, dict):
            raise _decode_error("VERSION answer must be a JSON object")
        version = str(data.get("cniVersion") or "")
        supported = data.get("supportedVersions")
        if supported is None:
            # Plugins older than 0.3.0 answered without supportedVersions (libcni's rule).
            supported = ["0.1.0", "0.2.0"] if version == "0.2.0" else ["0.1.0"]
        if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
            raise _decode_error("VERSION answer: supportedVersions must be a list of strings")
        return cls(cni_version=version, supported_versions=tuple(supported))

    def supports(self, version: str) -> bool:
        return version in self.supported_versions
