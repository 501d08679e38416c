"""What the ``--network none`` mode (:mod:`shim.containers`) asks of the world and of the user:
Docker (its API and its CLI), the host (pinned namespaces, links, announcements), the user's
``-p``/``--arg``/``--ip``, the locks shared with other pycni processes, and resolv.conf.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import dockerview, neighbours, netlink, plugins, podargs, ports
from .cni.config import NetworkConfigList
from .cni.types import DNS
from .errors import InvalidRequest, PycniError

log = logging.getLogger(__name__)

class Docker(Protocol):
    """What this mode asks Docker (:mod:`shim.dockerview`; a fake in unit tests)."""

    def target(self, ref: str) -> dockerview.Target: ...

    def container_ids(self) -> dict[str, str] | None: ...
    def endpoint_names(self) -> dict[str, str]: ...


class RealDocker:
    def __init__(self, driver_name: str = "pycni") -> None:
        self.driver_name = driver_name

    def target(self, ref: str) -> dockerview.Target:
        return dockerview.target(ref)

    def container_ids(self) -> dict[str, str] | None:
        return dockerview.container_ids()

    def endpoint_names(self) -> dict[str, str]:
        """The driver's endpoint ids → the names of their containers ({} if Docker can't say)."""
        found = dockerview.names(self.driver_name).endpoints
        return {eid: c.name.lstrip("/") for eid, c in found.items()}


# --- what the user asks for ----------------------------------------------------------------------

_PORT = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):(?P<cont>\d+)"
                   r"(?:/(?P<proto>tcp|udp|sctp))?$")


def parse_port(spec: str) -> ports.Binding:
    """``[HOSTIP:]HOST:CONT[/PROTO]`` as a port binding (the host port is fixed)."""
    m = _PORT.match(spec)
    if not m:
        raise InvalidRequest(f"-p {spec!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]")
    host_ip = (m.group("ip") or "").strip("[]")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError as exc:
            raise InvalidRequest(f"-p {spec!r}: {host_ip!r} is not an address") from exc
    host, cont = int(m.group("host")), int(m.group("cont"))
    for port in (host, cont):
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"-p {spec!r}: port {port} is out of range")
    return ports.Binding(m.group("proto") or "tcp", cont, host_ip, host, host)


def parse_args(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--arg`` (repeatable, each ``K=V`` or ``K=V;K2=V2``) as CNI_ARGS pairs."""
    return podargs.parse(";".join(items), "--arg")


def address_for(config: NetworkConfigList, ip: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """How ``ip`` reaches the chain's IPAM: the ``ips`` capability, else CNI_ARGS ``IP=``."""
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError as exc:
        raise InvalidRequest(f"--ip {ip!r} is not an address") from exc
    for plugin in config.plugins:
        ipam = plugin.raw.get("ipam")
        if not isinstance(ipam, dict) or not ipam.get("type"):
            continue
        if plugin.capabilities.get("ips"):
            return {"ips": [str(iface) if "/" in ip else str(iface.ip)]}, []
        way = plugins.ip_arg(str(ipam["type"]))
        if way == "bare":
            return {}, [("IP", str(iface.ip))]
        if way == "cidr":
            if "/" not in ip:
                raise InvalidRequest(f"--ip {ip!r}: IPAM {ipam['type']!r} needs a prefix length")
            return {}, [("IP", str(iface))]
        raise InvalidRequest(
            f"--ip: IPAM {ipam['type']!r} of network {config.name!r} takes no address (no 'ips' "
            "capability, no CNI_ARGS IP=)")
    raise InvalidRequest(f"--ip: network {config.name!r} has no IPAM plugin to give it to")


# --- locks ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def flock(path: str, remove_if: Any = None) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path``; when ``remove_if()`` is true at the end, the file
    is removed while still held (a waiter then finds its file gone and locks the new one)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # removed by the holder we waited for: lock the file that is there now
    try:
        yield
    finally:
        try:
            if remove_if is not None and remove_if():
                os.unlink(path)
        finally:
            os.close(fd)


def dir_lock(path: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def held() -> Iterator[None]:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    return held()


# --- resolv.conf ---------------------------------------------------------------------------------


def resolv_conf(dns: DNS) -> str:
    lines = ["# written by pycni from the CNI result's dns"]
    lines += [f"nameserver {ns}" for ns in dns.nameservers]
    search = dns.search or ([dns.domain] if dns.domain else [])
    if search:
        lines.append("search " + " ".join(search))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def write_resolv_conf(path: str, dns: DNS) -> bool:
    """Write ``dns`` into the container's resolv.conf in place (Docker bind-mounts that very
    file: a rename would leave the container the old one). False when there is nothing to say."""
    if not path or not (dns.nameservers or dns.search or dns.domain):
        return False
    try:
        with open(path, "w") as f:
            f.write(resolv_conf(dns))
    except OSError as exc:
        raise PycniError(f"cannot write the container's resolv.conf {path}: {exc.strerror}") from exc
    return True


class Host(Protocol):
    """What this mode asks of the host (:mod:`shim.netlink`; a fake in unit tests)."""

    def pin_netns(self, source: str, name: str) -> str: ...
    def remove_netns(self, name: str) -> None: ...
    def is_netns(self, path: str) -> bool: ...
    def link_info(self, name: str, ns: str | None = None) -> netlink.LinkInfo | None: ...
    def announce(self, ns: str, ifname: str, addresses: Iterable[str]) -> None: ...
    def addresses(self, ns: str, ifname: str) -> tuple[str, list[str]]: ...


def ifname_taken(found: dockerview.Target, ifname: str) -> str:
    if found.network_mode.startswith("container:"):
        return (f"container {found.name} shares another container's namespace "
                f"(--network {found.network_mode}), which has an interface {ifname} already: "
                "attach to that container instead")
    if found.network_mode not in ("none", ""):
        return (f"container {found.name} is on Docker's network {found.network_mode!r} (not "
                f"--network none), whose interface {ifname} it has already: start it with "
                "--network none for pycni to wire it, or attach beside Docker's with --ifname "
                "eth1")
    return (f"container {found.name} has an interface {ifname} already (not pycni's): choose "
            "another with --ifname")


def name_in(args: Sequence[str]) -> str:
    """The value of ``--name`` among docker run's arguments ("" if none)."""
    for n, arg in enumerate(args):
        if arg == "--name" and n + 1 < len(args):
            return args[n + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    return ""


def plugins_with(config: NetworkConfigList, capability: str) -> list[str]:
    return [p.type for p in config.plugins if p.capabilities.get(capability)]


class DockerCLI:
    """The docker CLI for ``pycni run`` (users pass it ``docker run``'s own arguments)."""

    def __init__(self, docker: str = "docker", timeout: float = 120.0) -> None:
        self.docker = docker
        self.timeout = timeout

    def _call(self, *args: str) -> str:
        try:
            proc = subprocess.run([self.docker, *args], capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PycniError(f"docker {args[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise PycniError(f"docker {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create(self, args: Sequence[str]) -> str:
        return self._call("create", *args).splitlines()[-1]

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def remove(self, cid: str) -> bool:
        try:
            self._call("rm", "-f", cid)
        except PycniError as exc:
            log.error("%s", exc)
            return False
        return True


@dataclass(frozen=True)
class Request:
    """One ``pycni attach``."""

    network: str
    ifname: str = "eth0"
    ip: str = ""
    ports: tuple[ports.Binding, ...] = ()
    #: the user's own CNI_ARGS pairs (:func:`shim.podargs.parse`)
    args: tuple[tuple[str, str], ...] = ()
    #: K8S_POD_NAME, if not the attached container's name (a holder's app)
    pod_name: str = ""
    #: the user's own capability args (:func:`shim.podargs.parse_caps`)
    caps: dict[str, Any] = field(default_factory=dict)


class NetlinkHost:
    """The real :class:`Host`: :mod:`shim.netlink` and :mod:`shim.neighbours`."""

    pin_netns = staticmethod(netlink.pin_netns)
    remove_netns = staticmethod(netlink.remove_netns)
    is_netns = staticmethod(netlink.is_netns)
    link_info = staticmethod(netlink.link_info)
    announce = staticmethod(neighbours.announce)
    addresses = staticmethod(netlink.addresses)
