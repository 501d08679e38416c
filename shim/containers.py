"""The ``--network none`` mode: pycni attaches CNI networks to containers itself.

As dockershim and cri-dockerd do, a container runs with ``--network none`` and pycni runs a
conflist from the conf dir straight into its own namespace, pinned for the attachment's life
(``CNI_CONTAINERID`` is the full container id; the interface ``eth0`` unless told otherwise).

* :meth:`Containers.attach` — ADD (``pycni attach``); an address through the ``ips`` capability or
  CNI_ARGS ``IP=`` (:mod:`shim.plugins`), published ports through ``portMappings`` (host ports
  chosen as :func:`shim.ports.allocate` does; a taken one is refused), ``--arg`` as CNI_ARGS. A
  failure part-way is undone (the attachment core DELs what succeeded) and names the plugin.
* :meth:`Containers.detach` — DEL with the recorded config and arguments (``pycni detach``);
  succeeds when the container is already gone.
* :meth:`Containers.run` — ``pycni run`` (:mod:`shim.runner`), with or without a holder.
* :meth:`Containers.gc` — attachments whose container (or holder's app) is gone (``pycni gc``).

Records: one per attachment (:class:`shim.state.ContainerRecord`), with all DEL needs; written
before ADD (a crash mid-ADD leaves something to undo) and again with the result.

Locks (in :mod:`shim.registry`'s table): one ``fcntl`` lock per container, held for a whole
attach, detach or gc of it, across pycni processes; choosing host ports takes the lock of the
``containers`` directory itself.

The chain's ``dns`` goes into the container's resolv.conf. Docker, the host, the user's input
and the locks are reached through :mod:`shim.none_io`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import dockerview, firewall, none_io, plugins, podargs, ports
from .attach import Attacher, Attachment
from .cni import CNI, find
from .cni.cache import CachedAttachment
from .cni.config import (
    validate_ifname,
    validate_network_name,
)
from .errors import InvalidRequest, NotFound, PycniError
from .lifecycle import Lifecycle
from .none_io import (
    Docker,
    DockerCLI,
    Host,
    NetlinkHost,
    RealDocker,
    Request,
    address_for,
    plugins_with,
    write_resolv_conf,
)
from .pinned import PinnedPlace, is_pin, pin_path
from .seams import Rules
from .settings import Settings
from .state import ContainerRecord
from .store import Store

log = logging.getLogger(__name__)


# --- the mode ------------------------------------------------------------------------------------


class Containers:
    def __init__(self, store: Store, cni: CNI, conf_dir: str, docker: Docker | None = None,
                 proc: str = "/proc", cli: DockerCLI | None = None,
                 rules: Rules = firewall, host: Host | None = None,
                 namespace: str = podargs.DEFAULT_NAMESPACE) -> None:
        self.store = store
        #: K8S_POD_NAMESPACE of containers outside a compose project (:mod:`shim.podargs`)
        self.namespace = namespace
        #: namespaces and links (pins, a taken interface name, announcements)
        self.host: Host = host or NetlinkHost()
        #: the loopback guard of attachments whose chain may open the host's 127.0.0.0/8
        self.rules = rules
        self.cni = cni
        self.attacher = Attacher(cni)
        self.lifecycle = Lifecycle(self.attacher, self.host.announce)
        self.conf_dir = conf_dir
        self.docker: Docker = docker or RealDocker()
        self.proc = proc
        #: creates, starts and removes containers (pycni run, and holders whose app is gone)
        self.cli = cli or DockerCLI()

    @classmethod
    def from_settings(cls, settings: Settings) -> Containers:
        cni = CNI(list(settings.cni_path), cache_dir=settings.cache_dir,
                  timeout=settings.plugin_timeout)
        return cls(Store(settings.state_dir), cni, settings.conf_dir,
                   RealDocker(settings.driver_name), namespace=settings.pod_namespace)

    # locks and records

    def locked(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        """The container's lock; its file goes once no record of the container is left."""
        path = os.path.join(self.store.containers_dir(), f"{container_id}.lock")
        return none_io.flock(path, remove_if=lambda: not self.records(container_id))

    def records(self, container_id: str | None = None) -> list[ContainerRecord]:
        return [r for r in self.store.containers(container_id or "")
                if container_id is None or r.container_id == container_id]

    def _find(self, container_id: str, network: str, ifname: str | None) -> list[ContainerRecord]:
        return [r for r in self.records(container_id)
                if r.network == network and (ifname is None or r.ifname == ifname)]

    def resolve(self, ref: str) -> tuple[str, dockerview.Target | None]:
        """The id of the container whose namespace holds ``ref``'s attachments (``ref`` itself,
        or the holder an app of ``pycni run --holder`` joined), and Docker's view of it (None
        once Docker forgot it: then ``ref`` is matched against the records' ids and names)."""
        try:
            found: dockerview.Target | None = self.docker.target(ref)
        except NotFound:
            found = None
        records = self.records()
        if found is not None:
            if any(r.container_id == found.id for r in records):
                return found.id, found
            holders = {r.container_id for r in records if r.app_id == found.id}
            if not holders:
                return found.id, found
        else:
            holders = {r.container_id for r in records
                       if ref in (r.name, r.app_name) or r.container_id.startswith(ref)
                       or (r.app_id and r.app_id.startswith(ref))}
        if len(holders) != 1:
            raise NotFound(f"Docker has no container {ref!r} and pycni has no attachment of "
                           "one by that name")
        holder = holders.pop()
        try:
            return holder, self.docker.target(holder)
        except NotFound:
            return holder, None

    # the verbs

    def attach(self, ref: str, req: Request) -> ContainerRecord:
        validate_network_name(req.network)
        validate_ifname(req.ifname)
        found = self.docker.target(ref)
        if not found.running or not found.pid:
            raise InvalidRequest(f"container {found.name} is not running: it has no namespace "
                                 "to attach to")
        with self.locked(found.id):
            return self._attach_locked(found, req)

    def _attach_locked(self, found: dockerview.Target, req: Request) -> ContainerRecord:
        if self._find(found.id, req.network, req.ifname):
            raise InvalidRequest(
                f"container {found.name} is already attached to {req.network} as {req.ifname}")
        if any(r.ifname == req.ifname for r in self.records(found.id)):
            raise InvalidRequest(f"container {found.name} already has an interface {req.ifname}")
        source = os.path.join(self.proc, str(found.pid), "ns", "net")
        if self.host.link_info(req.ifname, source) is not None:
            raise InvalidRequest(none_io.ifname_taken(found, req.ifname))
        config = find(self.conf_dir, req.network)
        caps: dict[str, Any] = dict(req.caps)
        ip_args: list[tuple[str, str]] = []
        if req.ip:
            ip_caps, ip_args = address_for(config, req.ip)
            caps.update(ip_caps)
        args = podargs.join(
            podargs.identity(req.pod_name or found.name, found.id, found.labels, self.namespace),
            req.args, tuple(ip_args))
        rec = ContainerRecord(
            network=req.network,
            attachment=Attachment(
                container_id=found.id,
                netns=pin_path(found.id, source),
                ifname=req.ifname,
                config=config,
                cni_args=args,
                capability_args=caps,
            ),
            name=found.name,
            pid=found.pid,
        )
        with self.lifecycle.attaching(rec.attachment, self._place(rec, source),
                                      _Ledger(self, rec, req.ports)):
            assert rec.attachment.result is not None
            write_resolv_conf(found.resolv_conf, rec.attachment.result.dns)
        return rec

    def _place(self, rec: ContainerRecord, source: str = "") -> PinnedPlace:
        return PinnedPlace(self.host, self._pin_in_use(rec.container_id, rec.id), source)

    def _pin_in_use(self, container_id: str, record_id: str = "") -> Callable[[str], bool]:
        """Whether a pin is still needed by another record than ``record_id``, or by an undo
        that failed part-way (gc's DEL will need it)."""
        def in_use(netns: str) -> bool:
            return (any(r.attachment.netns == netns for r in self.records() if r.id != record_id)
                    or any(e.netns == netns for e in self.cni.cached_attachments(container_id)))
        return in_use

    def _claim_ports(self, rec: ContainerRecord, bindings: Sequence[ports.Binding]) -> None:
        """Choose the host ports (under the lock of the records' directory, held by the caller:
        the record that holds them is written under it too)."""
        config = rec.attachment.config
        if not plugins_with(config, "portMappings"):
            raise InvalidRequest(f"-p: no plugin of network {rec.network!r} declares the "
                                 "portMappings capability (add portmap)")
        in_use = self._ports_in_use()
        try:
            chosen = ports.allocate(list(bindings), in_use)
        except ports.PortInUse as exc:
            holder = in_use.get(exc.key, "") if exc.key else ""
            if not holder:
                raise
            raise ports.PortInUse(f"{exc}: {self._holder(holder)}", exc.key) from None
        rec.attachment.capability_args["portMappings"] = [m.to_cni() for m in chosen]

    def _network_in_use(self, rec: ContainerRecord) -> bool:
        """Whether another attachment of ``rec``'s network is recorded (under the lock of the
        records' directory): then its loopback guard is in place."""
        return any(r.network == rec.network for r in self.store.containers() if r.id != rec.id)

    def _ports_in_use(self) -> dict[tuple[str, str, int], str]:
        """Every host port pycni holds, in this mode and the driver's, each → its holder: a
        driver endpoint's id, or what says this mode's attachment (:meth:`_holder`)."""
        used = {}
        for ep in self.store.endpoints():
            for m in ep.attachment.port_mappings():
                used[m.key()] = ep.id
        for rec in self.store.containers():
            for m in rec.attachment.port_mappings():
                used[m.key()] = (
                    f"container {rec.name or rec.container_id[:12]} publishes it "
                    f"(pycni attach, on {rec.network})")
        return used

    def _holder(self, holder: str) -> str:
        """Who holds a port, as Docker names a driver endpoint's container (asked only when a
        port is refused)."""
        if holder.startswith("container "):
            return holder
        container = self.docker.endpoint_names().get(holder)
        return (f"container {container} publishes it" if container else
                f"pycni endpoint {holder[:12]} publishes it")

    def detach(self, ref: str, network: str, ifname: str | None = None) -> list[ContainerRecord]:
        """DEL the container's attachments to ``network`` (the one on ``ifname`` if given)."""
        container_id, found = self.resolve(ref)
        with self.locked(container_id):
            recs = self._find(container_id, network, ifname)
            if not recs:
                on = f" as {ifname}" if ifname else ""
                raise NotFound(f"container {ref!r} is not attached to {network}{on} by pycni")
            for rec in recs:
                self._delete(rec, found)
            self._remove_holder(container_id, recs)
        return recs

    def detach_all(self, container_id: str) -> list[ContainerRecord]:
        """DEL every attachment of the container (``pycni watch``: it died, restarted or is
        gone); nothing when it has none."""
        try:
            found: dockerview.Target | None = self.docker.target(container_id)
        except NotFound:
            found = None
        with self.locked(container_id):
            recs = self.records(container_id)
            for rec in recs:
                self._delete(rec, found)
        return recs

    def _remove_holder(self, holder: str, recs: Sequence[ContainerRecord],
                       known: dict[str, str] | None = None) -> None:
        """A holder (``pycni run --holder``) goes with its last attachment once its app is gone:
        it exists only to keep the app's namespace."""
        apps = {r.app_id for r in recs if r.app_id}
        if not apps or self.records(holder):
            return
        known = self.docker.container_ids() if known is None else known
        if known is not None and not apps & set(known):
            self.cli.remove(holder)

    def _delete(self, rec: ContainerRecord, found: dockerview.Target | None) -> None:
        running = found is not None and found.running and found.pid == rec.pid
        source = os.path.join(self.proc, str(rec.pid), "ns", "net") if running else ""
        self.lifecycle.detach(rec.attachment, self._place(rec, source), _Ledger(self, rec))

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Attachments whose container Docker no longer has: DEL them. Nothing when Docker
        can't be asked (unknown is not gone)."""
        known = self.docker.container_ids()
        if known is None:
            return []
        done = []
        # a holder whose app is gone counts as gone: it only kept the app's namespace
        gone = {r.container_id for r in self.records()
                if r.container_id not in known or (r.app_id and r.app_id not in known)}
        for cid in sorted(gone):
            with self.locked(cid):
                recs = self.records(cid)
                for rec in recs:
                    who = rec.app_name or rec.name or cid[:12]
                    what = f"attachment {who}/{rec.network}/{rec.ifname}"
                    if dry_run:
                        done.append(f"{what}: its container is gone; removed")
                        continue
                    try:
                        self._delete(rec, None)
                    except PycniError as exc:
                        done.append(f"{what}: its container is gone; failed: {exc}")
                    else:
                        done.append(f"{what}: its container is gone; DEL run")
                if not dry_run:
                    self._remove_holder(cid, recs, known)
        done += self._unrecorded(dry_run)
        for fail in self.store.failures():  # the controller's note of a failed attempt
            if fail.container_id not in known:
                done.append(f"failed attempt {fail.name or fail.container_id[:12]}/"
                            f"{fail.network}: its container is gone; forgotten")
                if not dry_run:
                    self.store.delete_failure(fail.container_id)
        return done

    def _unrecorded(self, dry_run: bool) -> list[str]:
        """libcni cache entries of this mode (ADD ran in a container's ``/proc/PID/ns/net``)
        with no record: an attach whose undo failed part-way (kept so DEL can run again), or
        one that crashed between ADD and its record. DEL them, in no namespace once the pid
        is no longer the one ADD ran in."""
        recorded = {(r.container_id, r.network, r.ifname) for r in self.records()}
        done = []
        for entry in self.cni.cached_attachments():
            pinned = is_pin(entry.netns)
            if not pinned and not re.fullmatch(re.escape(self.proc) + r"/\d+/ns/net",
                                               entry.netns):
                continue  # the driver's (a staging or sandbox namespace): not this mode's
            if (entry.container_id, entry.network, entry.ifname) in recorded:
                continue
            what = f"CNI attachment {entry.network}/{entry.container_id[:12]}/{entry.ifname}"
            why = entry.why("no record")
            if dry_run:
                done.append(f"{what}: {why}; removed")
                continue
            with self.locked(entry.container_id):
                try:
                    att = Attachment.from_cache(entry, entry.netns)
                    where = ((entry.netns if self.host.is_netns(entry.netns) else "")
                             if pinned else self._live(entry))
                    self.attacher.delete(att.elsewhere(where))
                except PycniError as exc:
                    done.append(f"{what}: {why}; failed: {exc}")
                else:
                    done.append(f"{what}: {why}; DEL run")
                    PinnedPlace(self.host, self._pin_in_use(entry.container_id)).close(att)
        return done

    def _live(self, entry: CachedAttachment) -> str:
        """The namespace ADD ran in if its container still runs as that pid, else none."""
        try:
            found = self.docker.target(entry.container_id)
        except NotFound:
            return ""
        here = os.path.join(self.proc, str(found.pid), "ns", "net")
        return here if found.running and entry.netns == here and os.path.exists(here) else ""


def _guard_tag(rec: ContainerRecord) -> str:
    return f"none:{rec.network}"


class _Ledger:
    """One attachment's record in the none mode (:class:`shim.lifecycle.Ledger`): written
    before ADD with the host ports it holds. Its network's loopback guard is in place from
    before its first attachment's ADD (portmap opens route_localnet during it:
    :mod:`shim.firewall`) to after its last one's DEL, which closes route_localnet on its
    bridges again. Records, ports and the guard change under the lock of the records'
    directory, so whether another attachment of the network exists is always the truth."""

    def __init__(self, mode: Containers, rec: ContainerRecord,
                 bindings: Sequence[ports.Binding] = ()) -> None:
        self.mode = mode
        self.rec = rec
        self.bindings = bindings

    def claim(self) -> None:
        mode, rec = self.mode, self.rec
        with none_io.dir_lock(mode.store.containers_dir()):
            if plugins.opens_loopback(rec.attachment.config) and not mode._network_in_use(rec):
                mode.rules.add_guard(_guard_tag(rec))
            if self.bindings:
                mode._claim_ports(rec, self.bindings)
            self.save()

    def save(self) -> None:
        self.mode.store.save_container(self.rec)

    def drop(self) -> None:
        mode, rec = self.mode, self.rec
        with none_io.dir_lock(mode.store.containers_dir()):
            mode.store.delete_container(rec.id)
            if not mode._network_in_use(rec):
                mode.rules.remove_guard(_guard_tag(rec))
                mode.rules.close_localnet(plugins.bridges(rec.attachment.config))
