"""Is pycni healthy? The logic of ``pycni check CONTAINER`` and ``pycni doctor``, as data.

Every check returns :class:`Finding` values (status, what was looked at, what was found, what to
do); the CLI only prints them. What reaches outside the process — Docker's API, the plugin
socket, iptables, netlink — sits behind small seams (:class:`Probes`, ``read_links``, a
:class:`~shim.cni.CNI` with a fake executor) so every decision here is testable without root.

``pycni check`` runs CNI CHECK against the container's *live* sandbox. The cached ADD result
describes the interface as ADD left it: ``eth0`` in pycni's staging netns. Docker has since moved
it into the container and renamed it (``ethN``), so the result is rewritten to say where the
interface is now — the container's ``SandboxKey`` and the name Docker gave it, found by MAC —
before the plugins compare it with reality (bridge, for one, looks the interface up by
``CNI_IFNAME`` in ``CNI_NETNS`` and requires the result to name the same interface there).

``pycni doctor`` checks the host: plugin binaries, config files, dockerd, the plugin socket, the
forwarding set-up CNI bridges need under Docker, and leftovers ``pycni gc`` would remove.

The default probes are a boundary like ``netlink.py``: the Docker SDK's, the socket's and
iptables' errors (``OSError``, ``subprocess`` timeouts) end here, as findings. ``iptables`` runs
with an argument list and a timeout, never through a shell.
"""

from __future__ import annotations

import copy
import dataclasses
import http.client
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import netlink
from .cni import CNI, RuntimeConf
from .cni.cache import ResultCache
from .cni.config import NetworkConfigList, conflist_from_dict, load_all
from .cni.invoke import find_in_path
from .cni.types import Result, version_at_least
from .errors import (
    CNIError,
    NetlinkFailure,
    NotFound,
    PluginNotFound,
    PycniError,
    StateError,
)
from .settings import Settings
from .state import EndpointRecord, Store

OK = "ok"
WARN = "warn"
SKIP = "skip"
FAIL = "FAIL"

#: portmap ≤ 1.1.1 checks its DNAT rules in ip6tables too, even for IPv4-only mappings, and fails.
PORTMAP_V6_BUG = "could not check ipv6 dnat"
#: host-local's CHECK looks its reservation up by (container id, CNI_IFNAME); ADD ran with eth0 in
#: the staging netns, so under any other name Docker gave the interface it finds none.
HOST_LOCAL_BY_IFNAME = "host-local: Failed to find address added by container"


@dataclass(frozen=True)
class Finding:
    """One line of a report: ``FAIL endpoint 1234abcd on network mynet: … — what to do``."""

    status: str
    subject: str
    message: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def __str__(self) -> str:
        text = f"{self.status:<4} {self.subject}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


def any_failed(findings: Iterable[Finding]) -> bool:
    return any(f.failed for f in findings)


# --- pycni check CONTAINER -----------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One of a container's endpoints on a pycni network, as Docker reports it."""

    network: str
    network_id: str
    endpoint_id: str


@dataclass(frozen=True)
class ContainerView:
    """What ``docker inspect`` says about a container's networking."""

    id: str
    name: str
    running: bool
    sandbox_key: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class LiveLink:
    """A link as it is right now inside some netns."""

    name: str
    mac: str
    addresses: tuple[str, ...] = ()


def inspect_container(ref: str, driver_name: str = "pycni", timeout: float = 10.0) -> ContainerView:
    """The container ``ref`` (name or id) and its endpoints on networks of ``driver_name``."""
    import docker
    from docker.errors import DockerException
    from docker.errors import NotFound as DockerNotFound

    try:
        client = docker.from_env(timeout=int(timeout))
    except DockerException as exc:
        raise PycniError(f"cannot reach dockerd: {exc}") from exc
    try:
        data = client.api.inspect_container(ref)
        settings = data.get("NetworkSettings") or {}
        attachments = []
        for name, net in sorted((settings.get("Networks") or {}).items()):
            network_id = net.get("NetworkID") or ""
            if not network_id:
                continue
            try:
                driver = client.api.inspect_network(network_id).get("Driver")
            except DockerNotFound:
                continue
            if driver == driver_name:
                attachments.append(Attachment(name, network_id, net.get("EndpointID") or ""))
        return ContainerView(
            id=str(data.get("Id") or ""),
            name=str(data.get("Name") or ref).lstrip("/"),
            running=bool((data.get("State") or {}).get("Running")),
            sandbox_key=str(settings.get("SandboxKey") or ""),
            attachments=tuple(attachments),
        )
    except DockerNotFound as exc:
        raise NotFound(f"Docker has no container {ref!r}") from exc
    except (DockerException, OSError) as exc:
        raise PycniError(f"cannot inspect container {ref!r}: {exc}") from exc
    finally:
        client.close()


def sandbox_links(sandbox: str) -> list[LiveLink]:
    """Every link in the netns at path ``sandbox``, with its global addresses (read-only)."""
    found = []
    with netlink._ipr(sandbox, f"cannot list links in {sandbox}") as ipr:
        for link in ipr.get_links():
            index = int(link["index"])
            addrs = []
            for addr in ipr.get_addr(index=index):
                ip = ipaddress.ip_interface(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
                if not ip.is_link_local:
                    addrs.append(str(ip))
            found.append(
                LiveLink(str(link.get("ifname")), str(link.get("address") or ""), tuple(addrs))
            )
    return found


def find_by_mac(links: Iterable[LiveLink], mac: str) -> LiveLink | None:
    return next((lk for lk in links if mac and lk.mac.lower() == mac.lower()), None)


def missing_addresses(expected: Iterable[str], present: Iterable[str]) -> list[str]:
    """Those of ``expected`` (CIDR) not on the link, compared as addresses, not strings."""
    have = {ipaddress.ip_interface(a) for a in present}
    return [a for a in expected if ipaddress.ip_interface(a) not in have]


def live_result(result: Result, *, staging: str, sandbox: str, ifname: str, mac: str) -> Result:
    """The cached result, rewritten to describe the container interface where it is now.

    ADD saw the interface as ``eth0`` in the staging netns ``staging``; Docker moved it into
    ``sandbox`` and named it ``ifname`` (and put its own MAC on it when asked to). Interfaces
    with another sandbox (none, for host-side links) stay as they are.
    """
    live = copy.deepcopy(result)
    targets = [i for i in live.interfaces if i.sandbox == staging]
    if not targets:
        targets = [i for i in live.interfaces if i.sandbox][:1]
    for iface in targets:
        iface.sandbox = sandbox
        iface.name = ifname
        if mac:
            iface.mac = mac
    return live


def known_limitation(exc: CNIError, *, add_ifname: str, ifname: str) -> str | None:
    """Why a CHECK failure is a known limitation rather than a fault; None if it is a fault.

    ``add_ifname`` is the interface name ADD ran with, ``ifname`` the one CHECK runs with.
    """
    text = f"{exc.msg} {exc.details}"
    if exc.plugin == "portmap" and PORTMAP_V6_BUG in text:
        return (
            f"portmap's CHECK failed with {PORTMAP_V6_BUG!r}: a known limitation of portmap "
            "≤ 1.1.1 with IPv4-only port mappings, not a fault; its rules were not checked"
        )
    if HOST_LOCAL_BY_IFNAME in text and ifname != add_ifname:
        return (
            f"{exc.plugin}'s CHECK stopped at host-local, which looks its reservation up by the "
            f"interface name ADD used ({add_ifname}), not the one Docker gave it ({ifname}); "
            f"{exc.plugin} was not checked beyond that, the link and addresses above were"
        )
    return None


def describe_plugin_error(exc: CNIError) -> str:
    body = exc.msg
    if exc.code:
        body = f"[code {exc.code}] {body}"
    if exc.details:
        body = f"{body}: {exc.details}"
    return f"{exc.plugin}: {body}" if exc.plugin else body


def run_check(
    cni: CNI,
    config: NetworkConfigList,
    rt: RuntimeConf,
    result: Result,
    subject: str,
    hint: str,
    *,
    add_ifname: str = "eth0",
) -> list[Finding]:
    """CNI CHECK of the whole chain against ``result``.

    A known limitation (:func:`known_limitation`) is a warning, not a failure, and the plugins
    after the one that hit it are still checked.
    """
    if not version_at_least(config.cni_version, "0.4.0"):
        return [
            Finding(SKIP, subject, f"CNI CHECK skipped (CNI {config.cni_version} has no CHECK)")
        ]
    if config.disable_check:
        return [Finding(SKIP, subject, "CNI CHECK skipped (the config sets disableCheck)")]
    findings: list[Finding] = []
    remaining = config
    checked = 0
    while remaining.plugins:
        try:
            cni.check(remaining, rt, result=result)
        except CNIError as exc:
            why = known_limitation(exc, add_ifname=add_ifname, ifname=rt.ifname)
            if why is None:
                fix = hint
                if isinstance(exc, PluginNotFound):
                    fix = f"install the plugin into CNI_PATH ({':'.join(cni.path)})"
                message = f"CNI CHECK failed: {describe_plugin_error(exc)}"
                return findings + [Finding(FAIL, subject, message, fix)]
            failed_at = next(n for n, p in enumerate(remaining.plugins) if p.type == exc.plugin)
            checked += failed_at
            findings.append(Finding(WARN, subject, why))
            remaining = _tail(remaining, failed_at + 1)
            continue
        except PycniError as exc:  # the runtime parameters themselves (an invalid name, say)
            return findings + [Finding(FAIL, subject, f"CNI CHECK could not run: {exc}", hint)]
        checked += len(remaining.plugins)
        break
    findings.insert(0, Finding(OK, subject, f"CNI CHECK passed ({checked} plugins checked)"))
    return findings


def _tail(config: NetworkConfigList, start: int) -> NetworkConfigList:
    """The chain from plugin ``start`` on (same name and version, so the same cache entry)."""
    plugins = config.plugins[start:]
    raw = {**config.raw, "plugins": [p.raw for p in plugins]}
    return dataclasses.replace(config, plugins=plugins, raw=raw)


def check_endpoint(
    rec: EndpointRecord | None,
    attachment: Attachment,
    container: ContainerView,
    settings: Settings,
    *,
    cni: CNI | None = None,
    read_links: Callable[[str], list[LiveLink]] = sandbox_links,
    netns_exists: Callable[[str], bool] = netlink.netns_exists,
) -> list[Finding]:
    """Everything about one endpoint: pycni's record, the staging netns, libcni's cache, the
    link in the container, and CNI CHECK against the live sandbox."""
    subject = f"endpoint {attachment.endpoint_id[:12]} on network {attachment.network}"
    restart = f"try `docker restart {container.name}`"
    if rec is None:
        return [
            Finding(
                FAIL,
                subject,
                f"pycni has no record of this endpoint in {settings.state_dir}",
                f"pass --state-dir if `pycni serve` keeps its state elsewhere; else {restart}",
            )
        ]
    findings: list[Finding] = []
    if rec.phase != "joined":
        findings.append(
            Finding(WARN, subject, f"pycni's record is in phase {rec.phase!r}, not 'joined'")
        )
    try:
        config = conflist_from_dict(rec.config, source=f"endpoint {rec.id[:12]}")
        if rec.result is None:
            raise StateError("pycni never recorded a CNI result for it")
        cached = Result.from_json(rec.result, default_version=config.cni_version)
    except PycniError as exc:
        return findings + [Finding(FAIL, subject, f"pycni's record is unusable: {exc}", restart)]
    findings += _host_side(rec, config, settings, subject, restart, netns_exists)
    try:
        links = read_links(container.sandbox_key)
    except NetlinkFailure as exc:
        return findings + [
            Finding(FAIL, subject, f"cannot look into the container: {exc}", restart)
        ]
    link = find_by_mac(links, rec.mac)
    if link is None:
        message = f"the container has no interface with MAC {rec.mac or '(none recorded)'}"
        return findings + [Finding(FAIL, subject, message, restart)]
    missing = missing_addresses(rec.addresses, link.addresses)
    has = ", ".join(link.addresses) or "no address"
    if missing:
        message = f"{link.name} ({link.mac}) lacks {', '.join(missing)} (has {has})"
        findings.append(Finding(FAIL, subject, message, restart))
    else:
        findings.append(Finding(OK, subject, f"{link.name} ({link.mac}) carries {has}"))
    live = live_result(
        cached.convert(config.cni_version),
        staging=netlink.netns_path(rec.netns),
        sandbox=container.sandbox_key,
        ifname=link.name,
        mac=rec.mac,
    )
    rt = RuntimeConf(
        container_id=rec.id,
        netns=container.sandbox_key,
        ifname=link.name,
        args=tuple((str(k), str(v)) for k, v in rec.cni_args),
        capability_args=rec.capability_args,
    )
    if cni is None:
        cni = CNI(settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout)
    return findings + run_check(cni, config, rt, live, subject, restart, add_ifname=rec.ifname)


def _host_side(
    rec: EndpointRecord,
    config: NetworkConfigList,
    settings: Settings,
    subject: str,
    hint: str,
    netns_exists: Callable[[str], bool],
) -> list[Finding]:
    """What DeleteEndpoint will need: the staging netns and libcni's cached result."""
    problems = []
    if not netns_exists(rec.netns):
        problems.append(f"staging netns {netlink.netns_path(rec.netns)} is missing")
    cache_file = ResultCache(settings.cache_dir).path(config.name, rec.id, rec.ifname)
    if not os.path.exists(cache_file):
        problems.append(
            f"libcni's cache file {cache_file} is missing: DEL would run without ADD's result"
        )
    if problems:
        return [Finding(FAIL, subject, p, hint) for p in problems]
    return [Finding(OK, subject, f"staging netns {rec.netns} and libcni's cache file are there")]


def check_container(
    container: ContainerView,
    records: Sequence[EndpointRecord],
    settings: Settings,
    **seams: Any,
) -> list[Finding]:
    """Every pycni endpoint of ``container`` (see :func:`check_endpoint` for the seams)."""
    subject = f"container {container.name}"
    if not container.running:
        return [Finding(FAIL, subject, "is not running, so it has no network", "`docker start` it")]
    if not container.attachments:
        return [Finding(WARN, subject, "is not attached to any pycni network; nothing to check")]
    by_id = {r.id: r for r in records}
    findings: list[Finding] = []
    for attachment in container.attachments:
        findings += check_endpoint(
            by_id.get(attachment.endpoint_id), attachment, container, settings, **seams
        )
    return findings


def check(ref: str, settings: Settings) -> list[Finding]:
    """``pycni check CONTAINER``."""
    container = inspect_container(ref, settings.driver_name)
    return check_container(container, Store(settings.state_dir).endpoints(), settings)


# --- pycni doctor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """A CNI chain pycni may run: a file in the conf dir, or a pycni network's stored config."""

    label: str
    #: the chain's plugin types, in order
    plugins: tuple[str, ...]
    #: every binary it needs: the plugins and the IPAM plugins they delegate to
    binaries: tuple[str, ...]


def chain_of(label: str, config: NetworkConfigList) -> Chain:
    binaries: list[str] = []
    for plugin in config.plugins:
        binaries.append(plugin.type)
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            binaries.append(ipam["type"])
    return Chain(label, tuple(config.plugin_types()), tuple(dict.fromkeys(binaries)))


def conf_dir_chains(conf_dir: str) -> tuple[list[Chain], list[Finding]]:
    """The chains in ``conf_dir``, and a FAIL naming file and field for each broken file."""
    try:
        confs, errors = load_all(conf_dir)
    except PycniError as exc:
        return [], [Finding(FAIL, "conf dir", str(exc), "make it readable")]
    findings = [Finding(FAIL, "conf dir", str(e), "fix or remove the file") for e in errors]
    if not errors:
        findings.append(
            Finding(OK, "conf dir", f"{conf_dir}: {len(confs)} network config(s) parse")
        )
    chains = [chain_of(f"{c.source} (network {c.name})", c) for c in confs]
    return chains, findings


def network_chains(store: Store) -> tuple[list[Chain], list[Finding]]:
    """The chains of every pycni network pycni has a record of."""
    try:
        networks = store.networks()
    except PycniError as exc:
        return [], [Finding(FAIL, "state", str(exc), "fix or remove the record")]
    chains, findings = [], []
    for net in networks:
        label = f"pycni network {net.id[:12]}"
        try:
            chains.append(chain_of(label, conflist_from_dict(net.config, source=label)))
        except PycniError as exc:
            findings.append(Finding(FAIL, label, f"stored CNI config is unusable: {exc}"))
    return chains, findings


def check_binaries(
    chains: Iterable[Chain],
    cni_path: Sequence[str],
    find: Callable[[str, Sequence[str]], str] = find_in_path,
) -> list[Finding]:
    findings = []
    for chain in chains:
        missing = []
        for binary in chain.binaries:
            try:
                find(binary, cni_path)
            except CNIError:
                missing.append(binary)
        if missing:
            findings.append(
                Finding(
                    FAIL,
                    chain.label,
                    f"plugin(s) {', '.join(missing)} not found in CNI_PATH {':'.join(cni_path)}",
                    "install them there, or point CNI_PATH (pycni serve --cni-path) at them",
                )
            )
        else:
            findings.append(Finding(OK, chain.label, f"plugins {', '.join(chain.binaries)} found"))
    return findings


def check_forwarding(
    chains: Iterable[Chain], bridge_netfilter: bool, forward_policy: str | None
) -> list[Finding]:
    """Docker loads br_netfilter and sets FORWARD's policy to DROP: traffic between containers
    on a CNI bridge is then dropped unless the chain's ``firewall`` plugin lets it through."""
    subject = "forwarding"
    if forward_policy is None:
        return [
            Finding(WARN, subject, "cannot read iptables' FORWARD policy", "is iptables installed?")
        ]
    if not (bridge_netfilter and forward_policy == "DROP"):
        why = "br_netfilter is not loaded" if not bridge_netfilter else f"policy {forward_policy}"
        return [Finding(OK, subject, f"bridged traffic is not dropped by FORWARD ({why})")]
    findings = []
    for chain in chains:
        if "bridge" in chain.plugins and "firewall" not in chain.plugins:
            findings.append(
                Finding(
                    WARN,
                    chain.label,
                    "has a bridge plugin but no firewall plugin: with br_netfilter loaded and "
                    "FORWARD's policy DROP, containers on it won't reach each other",
                    'add {"type": "firewall"} to the chain after the bridge plugin',
                )
            )
    if not findings:
        findings.append(
            Finding(
                OK, subject, "FORWARD policy is DROP; every bridge chain has the firewall plugin"
            )
        )
    return findings


def check_ip_forward(value: str | None) -> Finding:
    subject = "net.ipv4.ip_forward"
    if value is None:
        return Finding(WARN, subject, "cannot read /proc/sys/net/ipv4/ip_forward")
    if value.strip() == "1":
        return Finding(OK, subject, "1")
    return Finding(
        WARN,
        subject,
        f"{value.strip()}: containers can't be routed beyond their bridge",
        "`sysctl -w net.ipv4.ip_forward=1` (Docker sets it when it starts)",
    )


#: (status, parsed JSON body) of a POST to the plugin socket; raises OSError if nothing answers
Post = Callable[[str, dict[str, Any], float], tuple[int, dict[str, Any]]]


def check_socket(socket_path: str, post: Post) -> Finding:
    subject = f"pycni socket {socket_path}"
    try:
        status, body = post("Plugin.Activate", {}, 5.0)
    except (OSError, ValueError) as exc:
        return Finding(FAIL, subject, f"nothing answers ({exc})", "start `pycni serve`")
    if status != 200:
        return Finding(FAIL, subject, f"Plugin.Activate answered {status}: {body.get('Err', body)}")
    implements = body.get("Implements") or []
    if "NetworkDriver" not in implements:
        return Finding(FAIL, subject, f"answers, but implements {implements}, not NetworkDriver")
    return Finding(OK, subject, "pycni serve answers")


def check_leftovers(post: Post) -> list[Finding]:
    """What ``pycni gc`` would remove, asked of the running server (a dry run)."""
    subject = "leftovers"
    try:
        status, body = post("Pycni.GC", {"DryRun": True}, 120.0)
    except (OSError, ValueError) as exc:
        return [Finding(WARN, subject, f"gc dry run failed: {exc}")]
    if status == 404:
        return [
            Finding(
                WARN,
                subject,
                "gc not available (this pycni serve has no /Pycni.GC)",
                "restart `pycni serve` with a newer pycni",
            )
        ]
    if status != 200:
        return [Finding(WARN, subject, f"gc dry run answered {status}: {body.get('Err', body)}")]
    actions = [str(a) for a in body.get("Actions") or []]
    if not actions:
        return [Finding(OK, subject, "none: gc would remove nothing")]
    return [Finding(WARN, subject, f"gc would act: {a}", "run `pycni gc`") for a in actions]


def check_dockerd(ping: Callable[[], None]) -> Finding:
    try:
        ping()
    except PycniError as exc:
        return Finding(
            FAIL, "dockerd", f"not reachable: {exc}", "start dockerd, or set DOCKER_HOST"
        )
    return Finding(OK, "dockerd", "reachable")


def docker_ping(timeout: float = 3.0) -> None:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=int(timeout))
        try:
            client.ping()
        finally:
            client.close()
    except (DockerException, OSError) as exc:
        raise PycniError(str(exc)) from exc


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def socket_post(path: str) -> Post:
    """POST to the plugin socket at ``path`` as Docker does."""

    def post(method: str, body: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
        conn = _UnixHTTPConnection(path, timeout)
        try:
            conn.request(
                "POST",
                "/" + method,
                body=json.dumps(body),
                headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"},
            )
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        parsed = json.loads(data) if data.strip() else {}
        return response.status, parsed if isinstance(parsed, dict) else {"Err": parsed}

    return post


def iptables_forward_policy(timeout: float = 10.0) -> str | None:
    """FORWARD's policy (``-P FORWARD DROP`` → ``DROP``); None if iptables can't tell."""
    try:
        proc = subprocess.run(
            ["iptables", "-S", "FORWARD"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_forward_policy(proc.stdout) if proc.returncode == 0 else None


def parse_forward_policy(rules: str) -> str | None:
    """The policy in ``iptables -S FORWARD`` output (its ``-P FORWARD DROP`` line)."""
    for line in rules.splitlines():
        words = line.split()
        if words[:2] == ["-P", "FORWARD"] and len(words) == 3:
            return words[2]
    return None


def bridge_netfilter_loaded() -> bool:
    """br_netfilter makes bridged packets traverse iptables; it shows as /proc/sys/net/bridge."""
    return os.path.isdir("/proc/sys/net/bridge")


def ip_forward_setting() -> str | None:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read()
    except OSError:
        return None


@dataclass
class Probes:
    """Everything doctor asks of the world; tests replace any of it."""

    docker_ping: Callable[[], None] = docker_ping
    post: Post | None = None
    forward_policy: Callable[[], str | None] = iptables_forward_policy
    bridge_netfilter: Callable[[], bool] = bridge_netfilter_loaded
    ip_forward: Callable[[], str | None] = ip_forward_setting
    find: Callable[[str, Sequence[str]], str] = find_in_path


def doctor(settings: Settings, probes: Probes | None = None) -> list[Finding]:
    """``pycni doctor``: every host-side check, in the order a user would fix things."""
    probes = probes or Probes()
    post = probes.post or socket_post(settings.socket_path)
    conf_chains, findings = conf_dir_chains(settings.conf_dir)
    net_chains, broken = network_chains(Store(settings.state_dir))
    findings += broken
    chains = net_chains + conf_chains
    findings += check_binaries(chains, settings.cni_path, probes.find)
    findings.append(check_dockerd(probes.docker_ping))
    serving = check_socket(settings.socket_path, post)
    findings.append(serving)
    findings += check_forwarding(chains, probes.bridge_netfilter(), probes.forward_policy())
    findings.append(check_ip_forward(probes.ip_forward()))
    if serving.status == OK:
        findings += check_leftovers(post)
    else:
        findings.append(Finding(SKIP, "leftovers", "not checked: pycni serve is not answering"))
    return findings
