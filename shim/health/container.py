"""``pycni check CONTAINER``: is each of a container's pycni endpoints what pycni made it?

(The attachments of the ``--network none`` mode are checked by :mod:`.attached`.)

For every endpoint Docker reports on a pycni network: pycni's record of it, the staging netns and
libcni's cache file that DeleteEndpoint will need, the link in the container (found by MAC) with
its addresses, and CNI CHECK against the container's *live* sandbox.

The cached ADD result describes the interface as ADD left it: ``eth0`` in pycni's staging netns.
Docker has since moved it into the container and renamed it (``ethN``), so the result is rewritten
to say where the interface is now — the container's ``SandboxKey`` and the name Docker gave it,
found by MAC — before the plugins compare it with reality (bridge, for one, looks the interface up
by ``CNI_IFNAME`` in ``CNI_NETNS`` and requires the result to name the same interface there).

Docker is asked through :mod:`shim.dockerview`, the container's links through
:func:`shim.netlink.links_in`; both, and CNI (a :class:`~shim.cni.CNI` with a fake executor), are
seams of :func:`check_endpoint`. pycni's record is read in one place, :func:`recorded`.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import attach, dockerview, netlink
from ..cni import CNI
from ..cni.cache import ResultCache
from ..cni.types import Result
from ..dockerview import ContainerView, Endpoint
from ..errors import (
    NetlinkFailure,
    NotFound,
    PycniError,
    StateError,
)
from ..netlink import LiveLink
from ..settings import Settings
from ..state import EndpointRecord
from ..store import Store
from .cnicheck import missing_addresses, run_check
from .findings import FAIL, OK, WARN, Finding, needs_root


def check(
    ref: str, settings: Settings, euid: Callable[[], int] = os.geteuid
) -> list[Finding]:
    """``pycni check CONTAINER``; run by another user than root, only that it needs root."""
    uid = euid()
    if uid != 0:
        what = "pycni's records, the container's namespace and the plugins' CHECK"
        return [needs_root(uid, "pycni check", what)]
    attached = _attached(ref, settings)
    try:
        container = dockerview.container(ref, settings.driver_name)
    except NotFound:
        if attached:  # Docker forgot it; pycni still holds its attachments
            return attached
        raise
    if attached and not container.endpoints:
        return attached
    return check_container(container, Store(settings.state_dir).endpoints(), settings) + attached


def _attached(ref: str, settings: Settings) -> list[Finding]:
    """The ``--network none`` mode's attachments of ``ref`` (or of its holder), checked."""
    from ..containers import Containers
    from .attached import check_attached

    mode = Containers.from_settings(settings)
    if not mode.records():
        return []
    try:
        holder, target = mode.resolve(ref)
    except NotFound:
        return []
    records = mode.records(holder)
    return check_attached(target, records, settings) if records else []


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
    if not container.endpoints:
        return [Finding(WARN, subject, "is not attached to any pycni network; nothing to check")]
    by_id = {r.id: r for r in records}
    findings: list[Finding] = []
    for endpoint in container.endpoints:
        findings += check_endpoint(
            by_id.get(endpoint.endpoint_id), endpoint, container, settings, **seams
        )
    return findings


# --- pycni's record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What pycni's record says an endpoint is: everything the check takes from the record."""

    #: the CNI attachment ADD made, in the staging netns under the interface name ADD used
    attachment: attach.Attachment
    #: ADD's result, as cached with the attachment
    result: Result
    #: the staging netns's name
    netns: str
    mac: str
    addresses: tuple[str, ...]
    #: where the chain ran: ``staging`` (pycni's namespace, the link moved out since) or
    #: ``sandbox`` (the container's own)
    place: str = "staging"


def recorded(rec: EndpointRecord) -> Recorded:
    """What the check needs of ``rec``; StateError if it is unusable. The one place that reads
    the record (but for its phase, which :func:`check_endpoint` reports even then)."""
    if rec.result is None:
        raise StateError("pycni never recorded a CNI result for it")
    return Recorded(rec.attachment, rec.result, rec.netns, rec.mac, tuple(rec.addresses),
                    rec.place)


# --- one endpoint --------------------------------------------------------------------------------


def check_endpoint(
    rec: EndpointRecord | None,
    endpoint: Endpoint,
    container: ContainerView,
    settings: Settings,
    *,
    cni: CNI | None = None,
    read_links: Callable[[str], list[LiveLink]] = netlink.links_in,
    netns_exists: Callable[[str], bool] = netlink.netns_exists,
) -> list[Finding]:
    """Everything about one endpoint: pycni's record, the staging netns, libcni's cache, the
    link in the container, and CNI CHECK against the live sandbox."""
    subject = f"endpoint {endpoint.endpoint_id[:12]} on network {endpoint.network}"
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
            Finding(WARN, subject, f"pycni's record is in phase {str(rec.phase)!r}, not 'joined'")
        )
    try:
        ep = recorded(rec)
    except PycniError as exc:
        return findings + [Finding(FAIL, subject, f"pycni's record is unusable: {exc}", restart)]
    findings += _host_side(ep, settings, subject, restart, netns_exists)
    try:
        links = read_links(container.sandbox_key)
    except NetlinkFailure as exc:
        return findings + [
            Finding(FAIL, subject, f"cannot look into the container: {exc}", restart)
        ]
    link = find_by_mac(links, ep.mac)
    if link is None:
        message = f"the container has no interface with MAC {ep.mac or '(none recorded)'}"
        return findings + [Finding(FAIL, subject, message, restart)]
    missing = missing_addresses(ep.addresses, link.addresses)
    has = ", ".join(link.addresses) or "no address"
    if missing:
        message = f"{link.name} ({link.mac}) lacks {', '.join(missing)} (has {has})"
        findings.append(Finding(FAIL, subject, message, restart))
    else:
        findings.append(Finding(OK, subject, f"{link.name} ({link.mac}) carries {has}"))
    added = ep.attachment
    live = live_result(
        ep.result.convert(added.config.cni_version),
        staging=added.netns,
        sandbox=container.sandbox_key,
        ifname=link.name,
        mac=ep.mac,
    )
    rt = added.elsewhere(container.sandbox_key, link.name).runtime()
    if cni is None:
        cni = CNI(settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout)
    return findings + run_check(
        cni,
        added.config,
        rt,
        live,
        subject,
        restart,
        add_ifname=added.ifname,
        moved=ep.place == "staging",  # the chain ran in pycni's staging namespace
        host_addresses=host_addresses(live, ep.addresses),
    )


def _host_side(
    ep: Recorded,
    settings: Settings,
    subject: str,
    hint: str,
    netns_exists: Callable[[str], bool],
) -> list[Finding]:
    """What DeleteEndpoint will need: the staging netns and libcni's cached result."""
    problems = []
    staged = ep.place == "staging"
    if staged and not netns_exists(ep.netns):
        problems.append(f"staging netns {netlink.netns_path(ep.netns)} is missing")
    added = ep.attachment
    cache_file = ResultCache(settings.cache_dir).path(
        added.config.name, added.container_id, added.ifname
    )
    if not os.path.exists(cache_file):
        problems.append(
            f"libcni's cache file {cache_file} is missing: DEL would run without ADD's result"
        )
    if problems:
        return [Finding(FAIL, subject, p, hint) for p in problems]
    if not staged:
        return [Finding(OK, subject, "libcni's cache file is there (the chain ran in the "
                                     "container's own namespace)")]
    return [Finding(OK, subject, f"staging netns {ep.netns} and libcni's cache file are there")]


def find_by_mac(links: Iterable[LiveLink], mac: str) -> LiveLink | None:
    return next((lk for lk in links if mac and lk.mac.lower() == mac.lower()), None)


def host_addresses(result: Result, recorded: Iterable[str]) -> tuple[str, ...]:
    """The result's addresses pycni handed Docker as host addresses (/32, /128), on purpose.

    A chain that routes its own subnet through the gateway (ptp) leaves the interface with
    ``10.1.0.5/24`` and no on-link route; Docker would add that route back with the prefix, so
    pycni gives the container ``10.1.0.5/32`` instead (see the README's Limits). Each is given
    as the result states it (``10.1.0.5/24``), the form a plugin's CHECK names it in.
    """
    hosts = {
        iface.ip
        for iface in map(ipaddress.ip_interface, recorded)
        if iface.network.prefixlen == iface.max_prefixlen
    }
    return tuple(
        str(ip.address)
        for ip in result.ips
        if ip.address.ip in hosts and ip.address.network.prefixlen < ip.address.max_prefixlen
    )


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
