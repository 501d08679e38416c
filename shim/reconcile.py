"""Reconciliation: finding what crashes and missed Docker calls left behind, and undoing it.

One function per sweep; each yields :class:`Action` values — what, why, and how to undo it —
and knows nothing of dry runs: :func:`run` either carries the actions out or only reports them.
The sweeps, in the order they run (later ones see what earlier ones removed):

1. :func:`networks_docker_forgot` — networks Docker positively says it doesn't have, asked about
   the driver name that created them.
2. :func:`stale_endpoints` — endpoints half-made or half-deleted by a crash, whose network is
   gone, or that Docker forgot and whose container namespace is gone too.
3. :func:`cached_attachments` — attachments in libcni's cache with no endpoint.
4. :func:`stray_namespaces` and :func:`stray_links` — staging namespaces and temporary links
   with no endpoint.
5. :func:`cni_gc` — CNI 1.1 networks get the GC verb with their live attachments.

Every leftover attachment is torn down the way DeleteEndpoint would — DEL with the cached config
and arguments, so plugins release addresses and rules. An endpoint whose container namespace
still exists is never touched (Docker may still be restoring it), but is *pending*: the
:class:`Reconciler` looks again every few seconds while anything is pending, so a container
removed while pycni was down frees its ports within seconds of Docker dropping its sandbox.

Sweeps follow the registry's lock rule (:mod:`shim.registry`): they act under the same network
locks as the verbs, re-check inside them, and skip anything newer than the sweep's start.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from . import staging
from .attach import Attachment
from .cni.cache import CachedAttachment
from .dockerview import DockerView
from .errors import CNIError, PycniError
from .seams import Links
from .state import EndpointRecord, Phase

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

#: an endpoint Docker doesn't list is left alone this long (it may be between Create and Join,
#: which takes well under a second; Docker lists an endpoint once its container runs)
STALE_AFTER = 30.0
_DOCKER_ID = re.compile(r"[0-9a-f]{64}")
#: how often Docker's networks are compared with pycni's ranges when nothing is pending
CLASH_EVERY = 30.0
#: "ask Docker" (the default), as opposed to a view given by the caller (None: unknown)
ASK = object()


@dataclass(frozen=True)
class Action:
    """One leftover: ``subject: reason; outcome``, and the undo that removes it.

    An undo re-checks under the locks it takes; it returns False when the leftover turned out
    to have moved on meanwhile (then nothing is reported).
    """

    subject: str
    reason: str
    undo: Callable[[], bool | None]
    outcome: str = "removed"
    #: a routine step (CNI GC) that is only reported when it fails
    routine: bool = False

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}; {self.outcome}"


@dataclass
class Sweep:
    """What every sweep of one run shares."""

    driver: Driver
    view: DockerView | None
    started: float = field(default_factory=time.time)
    #: endpoints spared for now that a later run must look at again
    pending: list[str] = field(default_factory=list)


@dataclass
class Report:
    actions: list[Action]
    pending: list[str]


# --- the sweeps ----------------------------------------------------------------------------------


def networks_docker_forgot(sweep: Sweep) -> Iterator[Action]:
    """Networks Docker positively answered it doesn't have, for the driver that created them."""
    driver, view = sweep.driver, sweep.view
    if view is None:
        return  # Docker couldn't be asked: unknown is not "forgotten"
    for net in driver.registry.networks():
        if net.created > sweep.started or net.id in view.networks:
            continue
        if sweep.started - net.created < STALE_AFTER:
            # Docker asks the driver before it stores the network: it may not list it yet.
            sweep.pending.append(net.id)
            continue
        if net.driver != driver.settings.driver_name:
            log.info("network %s was made by driver %r; Docker was asked about %r: kept",
                     net.id[:12], net.driver, driver.settings.driver_name)
            continue
        yield Action(f"network {net.id[:12]}", "unknown to Docker",
                     partial(driver.delete_network, net.id))


def stale_endpoints(sweep: Sweep) -> Iterator[Action]:
    """Endpoints no verb will ever finish or remove."""
    driver = sweep.driver
    # Records of networks that are gone were never loaded: they are on disk only.
    for eid in sorted(driver.store.endpoint_ids() - driver.registry.endpoint_ids()):
        rec = driver.store.load_endpoint(eid)
        if rec is not None and rec.created <= sweep.started:
            # Nobody owns it, so no lock of a network covers it: claim its names instead.
            yield Action(f"endpoint {rec.id[:12]}", "its network is gone",
                         partial(_reap_orphan, driver, rec), outcome="torn down")
    for rec in driver.registry.endpoints():
        if rec.created > sweep.started:
            continue
        reason = _stale(rec, sweep)
        if reason is not None:
            yield Action(f"endpoint {rec.id[:12]}", reason,
                         partial(_reap, sweep, rec), outcome="torn down")


def cached_attachments(sweep: Sweep) -> Iterator[Action]:
    """libcni cache entries of pycni's (a staging netns) that no endpoint owns."""
    driver = sweep.driver
    known = driver.registry.endpoint_ids() | driver.store.endpoint_ids()
    staging_dir = driver.links.netns_path(staging.NETNS_PREFIX)
    for entry in driver.cni.cached_attachments():
        cid = entry.container_id
        if not _DOCKER_ID.fullmatch(cid) or cid in known:
            continue
        staged = (entry.netns.startswith(staging_dir)
                  and staging.NETNS_NAME.fullmatch(os.path.basename(entry.netns)) is not None)
        if not (driver.links.netns_exists(staging.netns_name(cid)) or staged):
            continue  # not one of the driver's attachments (the --network none mode's pins)
        yield Action(f"CNI attachment {entry.network}/{cid[:12]}", entry.why("no endpoint"),
                     partial(_reap_orphan, driver, _record_from_cache(driver, entry)),
                     outcome="DEL run")


def stray_namespaces(sweep: Sweep) -> Iterator[Action]:
    """Staging namespaces (``pycni-<12 hex>``) of no endpoint."""
    links = sweep.driver.links
    names = links.list_netns(staging.NETNS_PREFIX)
    yield from _strays(sweep, "netns", names, staging.NETNS_NAME, partial(_remove_netns, links))


def stray_links(sweep: Sweep) -> Iterator[Action]:
    """Temporary host links (``pcn<12 hex>``) of no endpoint."""
    links = sweep.driver.links
    yield from _strays(sweep, "link", links.link_names(), staging.HOST_LINK_NAME,
                       links.delete_link)


def _remove_netns(links: Links, name: str) -> bool:
    # Listed is enough, namespace or not: an empty file left by a stopped managed plugin is
    # no namespace (netns_exists says no), but it is a stray all the same.
    if name not in links.list_netns(name):
        return False
    links.remove_netns(name)
    return True


def _strays(sweep: Sweep, kind: str, names: list[str], pattern: re.Pattern[str],
            remove: Callable[[str], bool]) -> Iterator[Action]:
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _known(sweep.driver, match.group(1)):
            yield Action(f"{kind} {name}", "no endpoint",
                         partial(_remove_unclaimed, sweep.driver, match.group(1),
                                 partial(remove, name)))


def cni_gc(sweep: Sweep) -> Iterator[Action]:
    """CNI 1.1's GC for each network whose chain speaks it, with its live attachments."""
    driver = sweep.driver
    for net in driver.registry.networks():
        if net.config.cni_version != "1.1.0":
            continue
        yield Action(f"network {net.id[:12]}", "CNI GC with its live attachments",
                     partial(_gc_network, driver, net.id), outcome="done", routine=True)


SWEEPS: tuple[Callable[[Sweep], Iterator[Action]], ...] = (
    networks_docker_forgot,
    stale_endpoints,
    cached_attachments,
    stray_namespaces,
    stray_links,
    cni_gc,
)


def gc(driver: Driver, *, dry_run: bool = False, view: DockerView | None | object = ASK
       ) -> list[str]:
    """``pycni gc``: what was removed (or would be, with ``dry_run``), a line each."""
    return [str(a) for a in run(driver, dry_run=dry_run, view=view).actions]


def run(driver: Driver, *, dry_run: bool = False, view: DockerView | None | object = ASK
        ) -> Report:
    """Every sweep; carry out each action unless ``dry_run``. Failures are reported, and the
    rest goes on."""
    sweep = Sweep(driver, driver.docker_view() if view is ASK else view)  # type: ignore[arg-type]
    done: list[Action] = []
    for find in SWEEPS:
        for action in find(sweep):
            if dry_run:
                if not action.routine:
                    done.append(action)
                continue
            try:
                if action.undo() is False:
                    continue
            except PycniError as exc:
                done.append(Action(action.subject, action.reason, action.undo,
                                   outcome=f"failed: {exc}"))
                continue
            if not action.routine:
                done.append(action)
    for action in done:
        log.info("gc%s: %s", " (dry run)" if dry_run else "", action)
    return Report(done, sweep.pending)


# --- how each sweep decides and acts -------------------------------------------------------------


def _stale(rec: EndpointRecord, sweep: Sweep) -> str | None:
    if rec.phase == Phase.CREATING:
        return "left half-made by an interrupted CreateEndpoint"
    if rec.phase == Phase.DELETING:
        return "left half-deleted by an interrupted DeleteEndpoint"
    view = sweep.view
    if view is None:
        sweep.pending.append(rec.id)  # Docker can't be asked yet: ask again later
        return None
    if rec.id in view.endpoints:
        return None
    if sweep.started - rec.created < STALE_AFTER:
        sweep.pending.append(rec.id)  # maybe between CreateEndpoint and Join: look again
        return None
    if rec.sandbox_key and os.path.exists(rec.sandbox_key):
        # The container's namespace lives on: Docker may still be restoring it, or about to
        # remove it. Look again soon.
        sweep.pending.append(rec.id)
        return None
    return "Docker no longer knows it"


def _reap(sweep: Sweep, rec: EndpointRecord) -> bool:
    """Tear a stale endpoint down under its network's lock, if it is still stale there."""
    driver = sweep.driver
    with driver.registry.endpoint_locked(rec.network_id, rec.id) as net:
        current = net.endpoint(rec.id) if net is not None else None
        if current is None or _stale(current, sweep) is None:
            return False  # it moved on meanwhile
        driver.teardown(current, net)
        return True


def _reap_orphan(driver: Driver, rec: EndpointRecord) -> bool:
    """DEL an attachment libcni's cache alone knows (its undo failed part-way)."""
    with driver.registry.sweeping(rec.id[:12]) as claimed:
        if claimed:
            driver.teardown(rec, None, recorded=False)
        return claimed


def _known(driver: Driver, prefix: str) -> bool:
    ids = driver.registry.endpoint_ids() | driver.store.endpoint_ids()
    return any(eid.startswith(prefix) for eid in ids)


def _remove_unclaimed(driver: Driver, prefix: str, remove: Callable[[], bool]) -> bool:
    """Remove a host object named after ``prefix`` unless an endpoint claims it; whether there
    was one to remove (a sweep's listing may be older than an endpoint's DeleteEndpoint)."""
    with driver.registry.sweeping(prefix) as claimed:
        if not claimed or _known(driver, prefix):
            return False
        return remove()


def _gc_network(driver: Driver, network_id: str) -> bool:
    with driver.registry.locked_if_any(network_id) as net:
        if net is None:
            return False
        valid = {(e.id, e.ifname) for e in net.snapshot()}
        # what a sandbox-path chain's IPAM handed out on its own (shim.sandbox.reservation)
        valid |= {(e.id, e.reserved.ifname) for e in net.snapshot() if e.reserved is not None}
        try:
            driver.cni.gc(net.record.config, valid)
        except CNIError as exc:
            raise CNIError(f"CNI GC failed: {exc}") from exc
        return True


def _record_from_cache(driver: Driver, entry: CachedAttachment) -> EndpointRecord:
    """An endpoint record rebuilt from libcni's cache, to tear down an attachment we forgot."""
    attachment = Attachment.from_cache(
        entry, entry.netns or driver.staging.path(entry.container_id))
    return EndpointRecord(
        id=entry.container_id,
        network_id="",
        netns=staging.netns_name(entry.container_id),
        host_ifname=staging.host_link_name(entry.container_id),
        attachment=attachment,
        phase=Phase.DELETING,
    )


# --- keep looking while something is pending -----------------------------------------------------


class Reconciler:
    """Reconciles at start, then again every ``interval`` seconds while anything is pending
    (an endpoint Docker forgot whose sandbox still exists, or Docker not answering yet), for at
    most ``patience`` seconds after the last time something was pending."""

    def __init__(self, driver: Driver, *, interval: float = 3.0, patience: float = 600.0) -> None:
        self.driver = driver
        self.interval = interval
        self.patience = patience
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pycni-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def poke(self) -> None:
        """Look again now (and keep looking while anything is pending)."""
        self._wake.set()

    def _loop(self) -> None:
        deadline = time.monotonic()  # sweeps again only once something is pending
        sweep = True
        clashes_due = 0.0  # Docker's networks are asked at most every CLASH_EVERY seconds
        while not self._stop.is_set():
            if sweep:
                try:
                    report = run(self.driver)
                except Exception:  # a sweep must never kill the server's reconciler
                    log.exception("reconciliation failed (pycni gc retries it)")
                    report = Report([], ["?"])
                if report.pending:
                    deadline = time.monotonic() + self.patience
                    log.debug("reconcile: %d pending; looking again in %.0fs",
                              len(report.pending), self.interval)
            if time.monotonic() >= clashes_due:
                clashes_due = time.monotonic() + CLASH_EVERY
                try:
                    self.driver.warn_range_clashes()
                except Exception:
                    log.exception("checking Docker's networks against pycni's ranges failed")
            pending = time.monotonic() < deadline
            woke = self._wake.wait(self.interval if pending else CLASH_EVERY)
            self._wake.clear()
            sweep = woke or pending
