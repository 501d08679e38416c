"""Docker's published ports (``-p``, ``-P``) as CNI ``portMappings``.

Docker sends each binding as ``{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
"HostPortEnd": 8080}`` (libnetwork ``types.PortBinding``) in the ``com.docker.network.portmap``
option. For a remote driver Docker allocates nothing: ``HostPort`` 0 means "pick one", and
``HostPortEnd`` above ``HostPort`` means "any one port of this range". pycni picks the ports and
hands the portmap plugin the CNI form (``{"hostPort", "containerPort", "protocol", "hostIP"}``).

The portmap plugin only writes DNAT rules — nothing listens on the host port — so a free port is
one that no socket holds *and* no other pycni endpoint has published.

A port Docker leaves to the driver (``-P``, ``-p 80``, a range) is chosen as Docker's own port
allocator does (moby ``libnetwork/portallocator``): from the kernel's ephemeral range
(``ip_local_port_range``; 49153-60999 if it can't be read), in order, each search starting after
the port the previous one of the same protocol, address and range found. The first container
that publishes ``-p 80`` gets 32768, as on Docker's bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .protocol import PORT_MAP

PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
#: Docker's fallback when the kernel's range can't be read (portallocator_unix.go)
FALLBACK_RANGE = (49153, 60999)


def ephemeral_range(path: str = PORT_RANGE_FILE) -> tuple[int, int]:
    """The host ports Docker picks from: the kernel's ``ip_local_port_range``, read as moby's
    ``getDynamicPortRange`` does, or Docker's fallback range."""
    try:
        with open(path) as f:
            first, last = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        return FALLBACK_RANGE
    if not 0 < first <= last <= 65535:
        return FALLBACK_RANGE
    return first, last


#: Where the next search for a port starts, per (protocol, host IP, first, last): Docker's
#: ``portRange.last``, which starts at the range's end, so the first search finds its start.
Cursors = dict[tuple[str, str, int, int], int]


def _in_order(begin: int, end: int, last: int) -> Iterator[int]:
    """Every port of ``begin``-``end`` once, starting after ``last`` and wrapping round."""
    size = end - begin + 1
    start = last + 1 - begin if begin <= last <= end else 0
    for n in range(size):
        yield begin + (start + n) % size


@dataclass(frozen=True)
class Binding:
    """One Docker port binding, before a host port is chosen."""

    protocol: str
    container_port: int
    host_ip: str
    host_port: int
    host_port_end: int


@dataclass(frozen=True)
class Mapping:
    """A published port: the CNI ``portMappings`` entry."""

    protocol: str
    container_port: int
    host_port: int
    host_ip: str = ""

    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.host_ip, self.host_port)

    def to_cni(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    @classmethod
    def from_cni(cls, data: dict[str, Any]) -> Mapping:
        return cls(
            protocol=str(data["protocol"]),
            container_port=int(data["containerPort"]),
            host_port=int(data["hostPort"]),
            host_ip=str(data.get("hostIP") or ""),
        )

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else (self.host_ip or "0.0.0.0")
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"


def _port(value: Any, what: str, allow_zero: bool) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"port binding {what} must be a number")
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise InvalidRequest(f"port binding {what} {value} is out of range")
    return value


def parse(options: dict[str, Any]) -> list[Binding]:
    """The bindings in a CreateEndpoint/Join/ProgramExternalConnectivity options map."""
    raw = options.get(PORT_MAP)
    if not raw:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest(f"{PORT_MAP} must be a list")
    bindings = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{PORT_MAP} entries must be objects")
        proto = item.get("Proto")
        if proto not in PROTOCOLS:
            raise InvalidRequest(f"port binding protocol {proto!r} is not tcp, udp or sctp")
        host_ip = item.get("HostIP") or ""
        if not isinstance(host_ip, str):
            raise InvalidRequest("port binding HostIP must be a string")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError as exc:
                raise InvalidRequest(f"port binding HostIP {host_ip!r} is not an address") from exc
        host_port = _port(item.get("HostPort", 0), "HostPort", allow_zero=True)
        end = _port(item.get("HostPortEnd") or host_port, "HostPortEnd", allow_zero=True)
        if end < host_port:
            raise InvalidRequest(f"port range {host_port}-{end} ends before it starts")
        bindings.append(
            Binding(
                protocol=PROTOCOLS[proto],
                container_port=_port(item.get("Port"), "Port", allow_zero=False),
                host_ip=host_ip,
                host_port=host_port,
                host_port_end=end,
            )
        )
    return bindings


def _socket_free(protocol: str, host_ip: str, port: int) -> bool:
    """Whether a socket could bind ``host_ip:port`` (nothing on the host holds it); for all
    addresses (""), in both families, as pycni's proxy listens on both (:mod:`shim.proxy`)."""
    if not host_ip:
        return _socket_free(protocol, "0.0.0.0", port) and _socket_free(protocol, "::", port)
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind, proto = {
        "tcp": (socket.SOCK_STREAM, 0),
        "udp": (socket.SOCK_DGRAM, 0),
        "sctp": (socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)),
    }[protocol]
    try:
        sock = socket.socket(family, kind, proto)
    except OSError:
        return True  # no kernel support to probe with (sctp): rely on our own registry
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            # as the proxy binds: a connection it served, in TIME_WAIT on the port, holds
            # nothing; a listener does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _taken(used: set[tuple[str, str, int]], protocol: str, host_ip: str, port: int) -> bool:
    # A wildcard binding and a specific one on the same port collide too.
    return any(
        p == protocol and n == port and (not ip or not host_ip or ip == host_ip)
        for p, ip, n in used
    )


class PortInUse(InvalidRequest):
    """An asked-for host port is taken; ``key`` is (protocol, host IP, port) when one is, and
    ``holder`` the endpoint pycni published it for, when pycni did."""

    def __init__(self, message: str, key: tuple[str, str, int] | None = None,
                 holder: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.holder = holder


def allocate(
    bindings: Iterable[Binding],
    in_use: Iterable[tuple[str, str, int]],
    cursors: Cursors | None = None,
    ephemeral: tuple[int, int] | None = None,
) -> list[Mapping]:
    """Choose a host port for every binding; raise if an asked-for port is taken.

    A fixed port is that port or nothing. A range — the ``ephemeral`` one (default: the
    kernel's) for a binding with no host port — is searched in order from after the port the
    last search of the same range found (``cursors``, updated here; a fresh dict starts each
    range at its beginning).
    """
    used = set(in_use)
    cursors = {} if cursors is None else cursors
    chosen: list[Mapping] = []
    for b in bindings:
        if b.host_port == 0:
            begin, end = ephemeral or ephemeral_range()
        else:
            begin, end = b.host_port, b.host_port_end
        where = (b.protocol, b.host_ip, begin, end)
        for port in _in_order(begin, end, cursors.get(where, end)):
            if not _taken(used, b.protocol, b.host_ip, port) and _socket_free(
                b.protocol, b.host_ip, port
            ):
                mapping = Mapping(b.protocol, b.container_port, port, b.host_ip)
                used.add(mapping.key())
                chosen.append(mapping)
                if end > begin:
                    cursors[where] = port
                break
        else:
            want = (
                "a free ephemeral port"
                if b.host_port == 0
                else f"port {b.host_port}"
                + (f"-{b.host_port_end}" if b.host_port_end > b.host_port else "")
            )
            # Which of pycni's own reservations stood in the way, if one did (the first port
            # asked for): the caller can name the endpoint holding it.
            key = next((k for k in used if b.host_port and _taken({k}, b.protocol, b.host_ip,
                                                                  b.host_port)), None)
            raise PortInUse(
                f"cannot publish {b.container_port}/{b.protocol}: {want} on "
                f"{b.host_ip or 'all addresses'} is already in use",
                key,
            )
    return chosen


class Publisher:
    """Every host port pycni has published, and the one lock that choosing ports takes.

    Host ports are one space across all networks, so choosing them is serialized here, apart
    from any network's lock (which a caller may hold: this lock is always taken inside it). The
    registry of who holds what is its own — loaded from the endpoint records at start — so
    choosing a port never iterates another network's endpoints.
    """

    def __init__(self, ephemeral: tuple[int, int] | None = None,
                 elsewhere: Callable[[], dict[tuple[str, str, int], str]] = dict) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[Mapping]] = {}
        self._cursors: Cursors = {}
        self.ephemeral = ephemeral or ephemeral_range()
        #: the ports the other mode holds (another process: pycni attach -p), each → its
        #: holder; asked at every reservation, as the other process may have changed them
        self.elsewhere = elsewhere

    def load(self, held: Iterable[tuple[str, list[Mapping]]]) -> None:
        """(endpoint id, its published ports) for every endpoint that publishes ports."""
        with self._lock:
            self._held = {eid: maps for eid, maps in held if maps}

    @contextlib.contextmanager
    def reserve(self, owner: str, bindings: Iterable[Binding]) -> Iterator[list[Mapping]]:
        """Choose host ports for ``owner``'s bindings; they are released again if the body
        raises (the plugins refused them)."""
        others = self.elsewhere()  # files of another process: read before the lock
        with self._lock:
            in_use = {**others, **{m.key(): eid for eid, maps in self._held.items()
                                   if eid != owner for m in maps}}
            try:
                chosen = allocate(bindings, in_use, self._cursors, self.ephemeral)
            except PortInUse as exc:
                exc.holder = in_use.get(exc.key, "") if exc.key else ""
                raise
            self._held[owner] = chosen
        try:
            yield chosen
        except BaseException:
            self.release(owner)
            raise

    def release(self, owner: str) -> None:
        with self._lock:
            self._held.pop(owner, None)

    def held(self) -> dict[str, list[Mapping]]:
        with self._lock:
            return {eid: list(maps) for eid, maps in self._held.items()}
