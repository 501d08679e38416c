"""``pycni doctor``: does the host have what pycni needs?

Plugin binaries (those of every conf file and of every pycni network, their IPAM plugins
included), config files that parse, dockerd, ``pycni serve`` answering on the plugin socket, the
forwarding set-up CNI bridges need under Docker, leftovers ``pycni gc`` would remove, and
containers whose restart policy Docker could not honour because pycni was not serving. What it
asks of the world comes through :class:`~shim.health.probes.Probes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import collisions
from ..client import PluginClient
from ..cni import CNI
from ..cni.config import NetworkConfigList, load_all, validate_plugin_type
from ..cni.invoke import find_in_path
from ..dockerstart import Stopped
from ..dockerview import DockerNetwork
from ..errors import CNIError, ConfigError, PycniError
from ..protocol import CreateNetworkRequest
from ..revive import stranded
from ..settings import Settings
from ..store import Store
from .cnicheck import check_status
from .findings import FAIL, OK, SKIP, WARN, Finding, needs_root
from .probes import Post, Probes


def doctor(settings: Settings, probes: Probes | None = None) -> list[Finding]:
    """``pycni doctor``: every host-side check, in the order a user would fix things.

    Run by another user than root, it says so first, and skips what only root can look at
    (pycni's records, the plugin socket, iptables) rather than blaming what it could not see.
    """
    probes = probes or Probes()
    post = probes.post or PluginClient(settings.socket_path).post
    uid = probes.euid()
    as_root = uid == 0
    findings = [] if as_root else [check_user(uid)]
    conf_chains, conf_findings = conf_dir_chains(settings.conf_dir)
    findings += conf_findings
    if as_root:
        names = probes.network_names(settings.driver_name)
        net_chains, broken = network_chains(Store(settings.state_dir), names)
        findings += broken
        findings += check_ranges(Store(settings.state_dir), probes.docker_networks())
    else:
        net_chains = []
        findings.append(Finding(SKIP, "pycni networks", NEEDS_ROOT))
    chains = net_chains + conf_chains
    findings += check_binaries(chains, settings.cni_path, probes.find)
    findings += check_status(
        [(c.label, c.config) for c in chains if c.config is not None and not c.problems],
        probes.status or CNI(settings.cni_path, cache_dir=settings.cache_dir,
                             timeout=settings.plugin_timeout).status)
    dockerd = check_dockerd(probes.docker_ping, as_root=as_root)
    findings.append(dockerd)
    if dockerd.status == OK:
        findings += check_stranded(lambda: probes.stopped(settings.driver_name))
    if not as_root:
        for subject in (f"pycni socket {settings.socket_path}", "forwarding", "leftovers"):
            findings.append(Finding(SKIP, subject, NEEDS_ROOT))
        findings.append(check_ip_forward(probes.ip_forward()))
        return findings
    findings += _overlays(settings)
    serving = check_socket(settings.socket_path, post)
    findings.append(serving)
    findings += check_forwarding(chains, probes.bridge_netfilter(), probes.forward_policy())
    findings.append(check_ip_forward(probes.ip_forward()))
    if serving.status == OK:
        findings += check_leftovers(post)
    else:
        findings.append(Finding(SKIP, "leftovers", "not checked: pycni serve is not answering"))
    findings += check_none_mode_leftovers(probes.none_mode_gc or (
        lambda: _none_mode(settings).gc(dry_run=True)))
    return findings


def _none_mode(settings: Settings) -> Any:
    from ..containers import Containers

    return Containers.from_settings(settings)


def check_none_mode_leftovers(dry_run: Callable[[], list[str]]) -> list[Finding]:
    """What ``pycni gc`` would remove of the ``--network none`` mode (no server involved):
    attachments whose container is gone, an attach whose undo failed (naming the plugin)."""
    try:
        actions = dry_run()
    except PycniError as exc:
        return [Finding(WARN, "--network none leftovers", f"gc dry run failed: {exc}")]
    return [Finding(WARN, "--network none leftovers", f"gc would act: {a}", "run `pycni gc`")
            for a in actions]


NEEDS_ROOT = "not checked: only root can look"


def check_user(uid: int) -> Finding:
    return needs_root(
        uid, "pycni doctor", "pycni's records, the plugin socket (mode 0600) and iptables"
    )


# --- chains and their plugins --------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """A CNI chain pycni may run: a file in the conf dir, or a pycni network's stored config."""

    label: str
    #: the chain's plugin types, in order
    plugins: tuple[str, ...]
    #: every binary it needs: the plugins and the IPAM plugins they delegate to
    binaries: tuple[str, ...]
    #: what makes the chain unusable as it stands, each naming its field
    problems: tuple[str, ...] = ()
    #: pycni sets up this network's forwarding itself (a zero-config network, :mod:`shim.firewall`)
    own_forwarding: bool = False
    #: the chain itself (STATUS asks its plugins)
    config: NetworkConfigList | None = None


def chain_of(label: str, config: NetworkConfigList, *, own_forwarding: bool = False) -> Chain:
    binaries: list[str] = []
    problems: list[str] = []
    for n, plugin in enumerate(config.plugins):
        binaries.append(plugin.type)
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            try:  # a plugin's own type was checked when the file was read; its IPAM's wasn't
                validate_plugin_type(ipam["type"])
            except ConfigError:
                problems.append(
                    f"plugins[{n}].ipam.type: invalid plugin type {ipam['type']!r}: must be a "
                    "bare executable name (no '/')"
                )
                continue
            binaries.append(ipam["type"])
    return Chain(
        label,
        tuple(config.plugin_types()),
        tuple(dict.fromkeys(binaries)),
        tuple(problems),
        own_forwarding,
        config,
    )


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


def network_chains(
    store: Store, names: Mapping[str, str] | None = None
) -> tuple[list[Chain], list[Finding]]:
    """The chains of every pycni network pycni has a record of, labelled with the name Docker
    knows the network by (``names``: network id → name), where it has one."""
    names = names or {}
    try:
        networks = store.networks()
    except PycniError as exc:
        return [], [Finding(FAIL, "state", str(exc), "fix or remove the record")]
    return [
        chain_of(network_label(net.id, names.get(net.id)), net.config,
                 own_forwarding=net.firewall is not None)
        for net in networks
    ], []


def check_ranges(store: Store, docker: list[DockerNetwork] | None) -> list[Finding]:
    """A FAIL for each pycni network whose addresses overlap one of Docker's own networks (one
    Docker created after it, inside a range only the chain's IPAM knew)."""
    subject = "address ranges"
    if docker is None:
        return [Finding(SKIP, subject, "not checked: Docker can't be asked")]
    try:
        records = store.networks()
    except PycniError:
        return []  # network_chains has said so
    found = collisions.clashes_with_docker(
        [(n.id, CreateNetworkRequest.from_json(n.request), n.config, str(n.ipam))
         for n in records], docker)
    if not found:
        return [Finding(OK, subject, "no pycni network overlaps one of Docker's")]
    return [Finding(FAIL, name, what, "their addresses are handed out twice: remove the "
                    "newer network, or re-create one of them with a range the other doesn't use")
            for name, what in found]


def network_label(network_id: str, name: str | None) -> str:
    """``pycni network web (0123456789ab)``, or the id alone when Docker has no name for it."""
    if name:
        return f"pycni network {name} ({network_id[:12]})"
    return f"pycni network {network_id[:12]}"


def check_binaries(
    chains: Iterable[Chain],
    cni_path: Sequence[str],
    find: Callable[[str, Sequence[str]], str] = find_in_path,
) -> list[Finding]:
    findings = []
    for chain in chains:
        for problem in chain.problems:
            findings.append(Finding(FAIL, chain.label, problem, "fix the config"))
        missing = []
        for binary in chain.binaries:
            try:
                find(binary, cni_path)
            except CNIError:
                missing.append(binary)
        if chain.problems and not missing:
            continue
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


# --- dockerd and pycni serve ---------------------------------------------------------------------


def check_dockerd(ping: Callable[[], None], *, as_root: bool = True) -> Finding:
    try:
        ping()
    except PycniError as exc:
        hint = "start dockerd, or set DOCKER_HOST"
        if not as_root:
            hint = "run it as root (or as a member of the docker group)"
        return Finding(FAIL, "dockerd", f"not reachable: {exc}", hint)
    return Finding(OK, "dockerd", "reachable")


def check_stranded(stopped: Callable[[], list[Stopped]]) -> list[Finding]:
    """Containers on pycni networks that Docker would have started as it started but could
    not (pycni was not serving), and that ``pycni serve`` could not start either
    (:mod:`shim.revive`)."""
    subject = "restart policies"
    try:
        found = stranded(stopped())
    except PycniError as exc:
        return [Finding(WARN, subject, str(exc))]
    if not found:
        return [Finding(OK, subject, "no container on a pycni network waits for a start")]
    return [
        Finding(
            FAIL,
            f"container {c.name}",
            f"not running, though its {why} says Docker should have started it; its last "
            f"start failed: {c.error}",
            f"fix that, then `docker start {c.name}` (pycni serve starts such containers "
            "itself when it starts)",
        )
        for c, why in found
    ]


def check_socket(socket_path: str, post: Post) -> Finding:
    subject = f"pycni socket {socket_path}"
    try:
        status, body = post("Plugin.Activate", {}, 5.0)
    except PycniError as exc:
        return Finding(FAIL, subject, str(exc), "start `pycni serve`")
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
    except PycniError as exc:
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


# --- forwarding ----------------------------------------------------------------------------------


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
        if chain.own_forwarding:
            continue  # pycni's own rules let the network's bridge forward (shim.firewall)
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
                OK,
                subject,
                "FORWARD policy is DROP; every bridge chain lets its traffic through (the "
                "firewall plugin, or pycni's own rules on a zero-config network)",
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


def _overlays(settings: Settings) -> list[Finding]:
    from ..overlay.manager import read_records
    from ..overlay.store import Endpoint, Etcd
    from .overlays import check_overlays

    def connect(s: Settings) -> Etcd:
        return Etcd(Endpoint(s.etcd, s.etcd_ca, s.etcd_cert, s.etcd_key))

    return check_overlays(read_records(settings.state_dir), settings, connect)
