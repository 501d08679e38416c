"""CNM → CNI: Docker's network driver verbs, carried out by running CNI chains.

The staging-namespace mechanism, in one place:

* **CreateEndpoint** makes a netns pycni owns (``pycni-`` + 12 hex of the endpoint id), runs the
  chain's ADD into it (container id = endpoint id, ifname ``eth0``), takes the container-side
  link out to the host under a temporary name (``pcn`` + 12 hex), and tells Docker the
  address/MAC the chain chose where Docker had not chosen them itself. Docker (≤ 27) has no
  container netns yet at this point, which is why the chain can't run in the container's own.
* **Join** hands Docker that link (``SrcName``, ``DstPrefix: eth``), the gateway and the routes.
  Docker moves it into the container, names it ``ethN`` and puts the addresses on it.
* **DeleteEndpoint** puts the link back into the staging netns as ``eth0`` with its addresses
  (where the plugins' DEL expects it), runs DEL in reverse with the cached result and ADD's
  arguments, then removes the link, the netns, the cache file and the record.

Each step of CreateEndpoint registers its undo on an ``ExitStack``; a failure part-way unwinds
exactly what was done, and the error names the plugin that failed. Everything that must survive
a restart is written to the :class:`~shim.state.Store` before it is relied on.

No Flask and no subprocess here: CNI goes through :class:`~shim.cni.CNI` and links through the
``links`` module (:mod:`shim.netlink`), both of which tests can replace.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import chains, dockerview, firewall, netlink, ports
from .cni import CNI, AddFailed, RuntimeConf, find
from .cni.cache import CachedAttachment
from .cni.config import NetworkConfigList, conflist_from_dict
from .cni.types import Result, Route
from .errors import CNIError, InvalidRequest, NotFound, PycniError, Unsupported
from .protocol import (
    CONNECTED,
    NEXTHOP,
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointInterface,
    EndpointRequest,
    JoinRequest,
    JoinResponse,
    StaticRoute,
)
from .settings import Settings
from .state import EndpointRecord, NetworkRecord, Store

log = logging.getLogger(__name__)

IFNAME = "eth0"
NETNS_PREFIX = "pycni-"
HOST_LINK_PREFIX = "pcn"
#: an endpoint Docker doesn't list is left alone this long (it may be between Create and Join)
STALE_AFTER = 120.0
_DOCKER_ID = re.compile(r"[0-9a-f]{64}")
_STAGING = re.compile(NETNS_PREFIX + r"[0-9a-f]{12}")
_HOST_LINK = re.compile(HOST_LINK_PREFIX + r"[0-9a-f]{12}")


def staging_netns(endpoint_id: str) -> str:
    return NETNS_PREFIX + endpoint_id[:12]


def host_link_name(endpoint_id: str) -> str:
    return HOST_LINK_PREFIX + endpoint_id[:12]


@dataclass(frozen=True)
class EndpointAnswer:
    """What CreateEndpoint tells Docker: only the fields Docker left empty."""

    interface: EndpointInterface

    def to_json(self) -> dict[str, Any]:
        body = self.interface.to_json()
        return {"Interface": body} if body else {}


class Driver:
    """pycni's networks and endpoints, on top of a CNI runtime and a state store."""

    def __init__(
        self,
        settings: Settings,
        *,
        cni: CNI | None = None,
        store: Store | None = None,
        links: ModuleType | Any = netlink,
        docker_view: Callable[[], dockerview.DockerView | None] | None = None,
        rules: ModuleType | Any = firewall,
    ) -> None:
        self.settings = settings
        self.cni = cni or CNI(
            settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout
        )
        self.store = store or Store(settings.state_dir)
        self.links = links
        self.rules = rules  # per-network iptables (shim.firewall); tests pass a fake
        # What Docker knows, for reconciliation; tests pass one that answers "unknown" (None).
        self.docker_view = docker_view or (lambda: dockerview.snapshot(settings.driver_name))
        self.networks: dict[str, NetworkRecord] = {}
        self.endpoints: dict[str, EndpointRecord] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Host ports are one space across every network: choosing them is serialized globally.
        self._ports_lock = threading.Lock()
        self.load()

    def load(self) -> None:
        """Read every record back: Docker never re-sends CreateNetwork after a restart."""
        self.networks = {n.id: n for n in self.store.networks()}
        self.endpoints = {e.id: e for e in self.store.endpoints()}
        log.info("loaded %d networks, %d endpoints", len(self.networks), len(self.endpoints))

    @contextlib.contextmanager
    def _locked(self, network_id: str) -> Iterator[None]:
        """Serialize changes within one network; different networks proceed in parallel."""
        with self._locks_guard:
            lock = self._locks.setdefault(network_id, threading.Lock())
        with lock:
            yield

    # --- networks --------------------------------------------------------------------------------

    def capabilities(self) -> dict[str, str]:
        return {"Scope": "local", "ConnectivityScope": "local"}

    def create_network(self, req: CreateNetworkRequest, raw: dict[str, Any]) -> None:
        options = req.driver_options
        chains.check_options(options)
        with self._locked(req.network_id):
            if req.network_id in self.networks:
                return  # Docker retried; the record is already there
            if chains.OPT_NETWORK in options:
                conf = find(self.settings.conf_dir, options[chains.OPT_NETWORK])
                resolved = chains.from_conflist(req, conf)
            else:
                resolved = chains.zero_config(req)
            # Every binary is in CNI_PATH and speaks the config's version (or a negotiated one).
            config = self.cni.negotiate(resolved.config)
            # A bridge the chain will create is this network's to remove; one that exists
            # already (another network's, or the admin's) is not.
            owned = [b for b in resolved.bridges() if self.links.link_info(b) is None]
            record = NetworkRecord(
                id=req.network_id,
                request=raw,
                config=config.raw,
                mode=resolved.mode,
                ipam=resolved.ipam,
                address_via=resolved.address_via,
                owned_links=owned,
                firewall=resolved.firewall,
            )
            # Record first: a crash after the rules are in leaves something gc can undo.
            self.store.save_network(record)
            if record.firewall:
                try:
                    self.rules.add_network(record.id, **record.firewall)
                except PycniError:
                    self.rules.remove_network(record.id, **record.firewall)
                    self.store.delete_network(record.id)
                    raise
            self.networks[record.id] = record
        log.info(
            "network %s: %s, %s IPAM, chain %s",
            req.network_id[:12],
            resolved.mode,
            resolved.ipam,
            "+".join(config.plugin_types()),
        )

    def delete_network(self, network_id: str) -> None:
        with self._locked(network_id):
            record = self.networks.get(network_id)
            if record is None:
                return  # already gone: deleting twice is fine
            leftovers = [e for e in self.endpoints.values() if e.network_id == network_id]
            for endpoint in leftovers:
                self._delete_endpoint(endpoint)
            for name in record.owned_links:
                # A bridge with no ports left is ours to remove; one still in use is not.
                ports = self.links.bridge_ports(name)
                if ports:
                    log.warning("network %s: keeping %s, still in use by %s",
                                network_id[:12], name, ", ".join(ports))
                else:
                    self.links.delete_link(name)
            if record.firewall:
                self.rules.remove_network(network_id, **record.firewall)
            self.store.delete_network(network_id)
            del self.networks[network_id]
        with self._locks_guard:
            self._locks.pop(network_id, None)
        log.info("network %s deleted", network_id[:12])

    def network(self, network_id: str) -> NetworkRecord:
        try:
            return self.networks[network_id]
        except KeyError:
            raise NotFound(f"pycni has no network {network_id[:12]}") from None

    # --- endpoints -------------------------------------------------------------------------------

    def endpoint(self, endpoint_id: str) -> EndpointRecord:
        try:
            return self.endpoints[endpoint_id]
        except KeyError:
            raise NotFound(f"pycni has no endpoint {endpoint_id[:12]}") from None

    def create_endpoint(self, req: CreateEndpointRequest, raw: dict[str, Any]) -> EndpointAnswer:
        net = self.network(req.network_id)
        with self._locked(req.network_id):
            stale = self.endpoints.get(req.endpoint_id)
            if stale is not None:
                # Docker retried an endpoint that half-exists: clean it, then make it anew.
                log.warning("endpoint %s exists already; recreating it", req.endpoint_id[:12])
                self._delete_endpoint(stale)
            return self._create_endpoint(net, req, raw)

    def _create_endpoint(
        self, net: NetworkRecord, req: CreateEndpointRequest, raw: dict[str, Any]
    ) -> EndpointAnswer:
        eid = req.endpoint_id
        chain = chains.for_endpoint(
            net.config,
            net.request,
            net.address_via,
            req.interface,
            internal=CreateNetworkRequest.from_json(net.request).internal,
        )
        rec = EndpointRecord(
            id=eid,
            network_id=net.id,
            netns=staging_netns(eid),
            ifname=IFNAME,
            host_ifname=host_link_name(eid),
            request=raw,
            config=chain.config.raw,
            cni_args=[list(a) for a in chain.cni_args],
            capability_args=chain.capability_args,
        )
        rt = self._runtime(rec)
        config = _effective(chain.config, rt)
        with contextlib.ExitStack() as undo:
            # The record goes first: a crash from here on leaves something reconcilable.
            self.store.save_endpoint(rec)
            undo.callback(self.store.delete_endpoint, eid)
            self.links.create_netns(rec.netns)
            undo.callback(self.links.remove_netns, rec.netns)
            try:
                result = self.cni.add(config, rt)
            except AddFailed as exc:
                self._undo_failed_add(config, rt, exc)
                raise
            undo.callback(self._quiet, self.cni.delete, config, rt)
            rec.result = result.to_json()
            rec.addresses = [str(ip.address) for ip in _container_ips(result, rt.netns)]
            rec.mac = _container_mac(result, rt.netns)
            rec.routes = self.links.routes(rec.netns, rec.ifname)
            # A plugin that replaced the on-link route of its subnet (ptp routes the subnet via
            # its gateway) means a host address: Docker would re-add the on-link route with the
            # prefix, so it gets the address as /32 (/128) and the routes as StaticRoutes.
            rec.addresses = [_as_host_if_not_on_link(a, rec.routes) for a in rec.addresses]
            self.store.save_endpoint(rec)  # a crash from here on knows what to tear down
            moved = self.links.move_to_host(rec.netns, rec.ifname, rec.host_ifname)
            # Docker puts its own MAC (--mac-address) on the link at Join; that's the one to
            # find it by later.
            rec.mac = req.interface.mac_address or moved.mac
            undo.callback(self._quiet, self._restore, rec)
            answer = self._answer(req.interface, rec)
            rec.phase = "ready"
            self.store.save_endpoint(rec)
            self.endpoints[eid] = rec
            undo.pop_all()
        log.info(
            "endpoint %s on %s: %s mac %s",
            eid[:12],
            net.id[:12],
            ",".join(rec.addresses) or "no address",
            rec.mac,
        )
        return answer

    def _undo_failed_add(self, config: NetworkConfigList, rt: RuntimeConf, exc: AddFailed) -> None:
        """DEL what a failed ADD managed to do, with the partial result as prevResult."""
        try:
            self.cni.delete(config, rt, result=exc.partial)
        except PycniError as cleanup:
            log.error("cleanup after failed ADD of %s: %s", rt.container_id[:12], cleanup)

    def _answer(self, asked: EndpointInterface, rec: EndpointRecord) -> EndpointAnswer:
        """Fill in what Docker left empty; refuse a chain that contradicts Docker's choice."""
        ips = [ipaddress.ip_interface(a) for a in rec.addresses]
        v4 = next((ip for ip in ips if ip.version == 4), None)
        v6 = next((ip for ip in ips if ip.version == 6), None)
        for wanted, got in ((asked.address, v4), (asked.address_ipv6, v6)):
            if wanted is not None and got is not None and wanted.ip != got.ip:
                raise CNIError(
                    f"the chain assigned {got} but Docker's IPAM assigned {wanted}; the chain's "
                    "IPAM ignored the requested address",
                    verb="ADD",
                )
        return EndpointAnswer(
            EndpointInterface(
                address=v4 if asked.address is None else None,
                address_ipv6=v6 if asked.address_ipv6 is None else None,
                mac_address=rec.mac if not asked.mac_address else "",
            )
        )

    def join(self, req: JoinRequest) -> JoinResponse:
        rec = self.endpoint(req.endpoint_id)
        if rec.result is None:
            raise InvalidRequest(f"endpoint {rec.id[:12]} was never wired; cannot join")
        result = Result.from_json(rec.result)
        with self._locked(rec.network_id):
            rec.sandbox_key = req.sandbox_key
            rec.phase = "joined"
            self.store.save_endpoint(rec)
        return _join_response(rec, result)

    def leave(self, req: EndpointRequest) -> None:
        """Nothing to undo: Docker takes the link out of the container itself, and
        DeleteEndpoint finds it wherever it is. Kept in memory only; the record still names
        the sandbox, which tells reconciliation whether the container lives."""
        rec = self.endpoints.get(req.endpoint_id)
        if rec is not None and rec.phase == "joined":
            rec.phase = "ready"

    def delete_endpoint(self, req: EndpointRequest) -> None:
        rec = self.endpoints.get(req.endpoint_id)
        if rec is None:
            return  # already gone: DEL semantics
        with self._locked(rec.network_id):
            if req.endpoint_id in self.endpoints:
                self._delete_endpoint(rec)

    def _delete_endpoint(self, rec: EndpointRecord) -> None:
        """Undo an endpoint completely. Safe to repeat; keeps the record if DEL fails."""
        rec.phase = "deleting"
        self.store.save_endpoint(rec)
        config = conflist_from_dict(rec.config, source=f"endpoint {rec.id[:12]}")
        if rec.result is None:
            # Crashed between ADD and saving its result: libcni's cache has it.
            cached = self.cni.cached_result(config, self._runtime(rec))
            if cached is not None:
                rec.result = cached.to_json()
                sandbox = self.links.netns_path(rec.netns)
                rec.addresses = [str(ip.address) for ip in _container_ips(cached, sandbox)]
                rec.mac = rec.mac or _container_mac(cached, sandbox)
        self.links.create_netns(rec.netns)  # exists unless the host rebooted
        given: Result | None = None
        if rec.result is not None:
            if _del_needs_link(config):
                self._restore(rec)
        else:
            # ADD never finished: no result anywhere. What the chain did is still on eth0 in the
            # staging netns; DEL needs it as prevResult (firewall removes nothing without it).
            given = self._result_from_netns(rec, config)
        rt = self._runtime(rec)
        self.cni.delete(_effective(config, rt), rt, result=given)
        # Plugins delete the interfaces they made; a stand-in or a leftover goes with the netns,
        # and a link DEL didn't need back is deleted wherever Docker left it.
        self.links.delete_link(rec.ifname, rec.netns)
        self.links.remove_netns(rec.netns)
        if self._host_link_is_ours(rec):
            self.links.delete_link(rec.host_ifname)
        elif rec.mac and rec.sandbox_key:
            self.links.delete_by_mac(rec.sandbox_key, rec.mac)
        self.store.delete_endpoint(rec.id)
        self.endpoints.pop(rec.id, None)
        log.info("endpoint %s deleted", rec.id[:12])

    def _result_from_netns(self, rec: EndpointRecord, config: NetworkConfigList) -> Result | None:
        mac, cidrs = self.links.addresses(rec.netns, rec.ifname)
        if not cidrs:
            return None
        sandbox = self.links.netns_path(rec.netns)
        return Result.from_json(
            {
                "cniVersion": config.cni_version,
                "interfaces": [{"name": rec.ifname, "mac": mac, "sandbox": sandbox}],
                "ips": [{"address": c, "interface": 0} for c in cidrs],
            }
        ).convert(config.cni_version)

    def _host_link_is_ours(self, rec: EndpointRecord) -> bool:
        info = self.links.link_info(rec.host_ifname)
        return info is not None and (not rec.mac or info.mac.lower() == rec.mac.lower())

    def _restore(self, rec: EndpointRecord) -> str:
        where: str = self.links.restore_for_delete(
            rec.netns,
            rec.ifname,
            host_name=rec.host_ifname,
            mac=rec.mac,
            addresses=rec.addresses,
            sandbox=rec.sandbox_key,
        )
        return where

    def oper_info(self, req: EndpointRequest) -> dict[str, Any]:
        rec = self.endpoint(req.endpoint_id)
        net = self.network(rec.network_id)
        info: dict[str, Any] = {
            "cni.network": net.config.get("name"),
            "cni.plugins": [p.get("type") for p in net.config.get("plugins", [])],
            "cni.netns": self.links.netns_path(rec.netns),
            "phase": rec.phase,
        }
        if rec.result:
            result = Result.from_json(rec.result)
            info["cni.interfaces"] = [i.to_json(result.cni_version) for i in result.interfaces]
            info["cni.ips"] = [str(ip.address) for ip in result.ips]
            info["cni.routes"] = [r.to_json(result.cni_version) for r in result.routes]
        published = rec.capability_args.get("portMappings")
        if published:
            info["ports"] = [str(ports.Mapping.from_cni(m)) for m in published]
        return info

    # --- reconciliation --------------------------------------------------------------------------

    def gc(self, dry_run: bool = False, view: dockerview.DockerView | None = None) -> list[str]:
        """Find and remove what a crash or a missed Docker call left behind; what was done.

        Compares pycni's records, its staging namespaces and temporary links, libcni's cache and
        (when Docker answers) Docker's own view. Every leftover attachment is torn down the way
        DeleteEndpoint would — link restored into its staging netns, DEL with the cached config,
        namespace removed — so plugins release addresses and rules. An endpoint whose Docker
        sandbox still exists is never touched, whatever Docker's API says while it restores.
        """
        actions: list[str] = []
        if view is None:
            view = self.docker_view()
        if view is not None:
            for network_id in list(self.networks):
                if network_id not in view.networks:
                    actions.append(f"network {network_id[:12]}: unknown to Docker; removed")
                    if not dry_run:
                        self.delete_network(network_id)
        now = time.time()
        for rec in self.store.endpoints():
            reason = self._stale(rec, view, now)
            if reason is None:
                continue
            with self._locked(rec.network_id):
                current = self.store.load_endpoint(rec.id)  # it may have moved on meanwhile
                if current is None or self._stale(current, view, now) is None:
                    continue
                actions.append(f"endpoint {rec.id[:12]}: {reason}; torn down")
                if not dry_run:
                    self._delete_endpoint(current)
        known = {e.id for e in self.store.endpoints()}
        for entry in self.cni.cached_attachments():
            if not _DOCKER_ID.fullmatch(entry.container_id) or entry.container_id in known:
                continue
            if not self.links.netns_exists(staging_netns(entry.container_id)) and not (
                entry.netns.startswith(self.links.netns_path(NETNS_PREFIX))
            ):
                continue  # not one of pycni's attachments
            actions.append(
                f"CNI attachment {entry.network}/{entry.container_id[:12]}: no endpoint; DEL run"
            )
            if not dry_run:
                self._delete_endpoint(_record_from_cache(entry))
        known_ns = {e.netns for e in self.store.endpoints()}
        for name in self.links.list_netns(NETNS_PREFIX):
            if _STAGING.fullmatch(name) and name not in known_ns:
                actions.append(f"netns {name}: no endpoint; removed")
                if not dry_run:
                    self.links.remove_netns(name)
        known_links = {e.host_ifname for e in self.store.endpoints()}
        for name in self.links.link_names():
            if _HOST_LINK.fullmatch(name) and name not in known_links:
                actions.append(f"link {name}: no endpoint; removed")
                if not dry_run:
                    self.links.delete_link(name)
        for net in list(self.networks.values()):
            config = conflist_from_dict(net.config, source=f"network {net.id[:12]}")
            if config.cni_version != "1.1.0" or dry_run:
                continue
            valid = {(e.id, e.ifname) for e in self.endpoints.values() if e.network_id == net.id}
            try:
                self.cni.gc(config, valid)
            except CNIError as exc:
                actions.append(f"network {net.id[:12]}: CNI GC failed: {exc}")
        for line in actions:
            log.info("gc%s: %s", " (dry run)" if dry_run else "", line)
        return actions

    def _stale(
        self, rec: EndpointRecord, view: dockerview.DockerView | None, now: float
    ) -> str | None:
        if rec.network_id not in self.networks:
            return "its network is gone"
        if rec.phase == "creating":
            return "left half-made by an interrupted CreateEndpoint"
        if rec.phase == "deleting":
            return "left half-deleted by an interrupted DeleteEndpoint"
        if view is None or rec.id in view.endpoints or now - rec.created < STALE_AFTER:
            return None
        if rec.sandbox_key and os.path.exists(rec.sandbox_key):
            return None  # the container's namespace lives on: Docker may still be restoring
        return "Docker no longer knows it"

    # --- published ports -------------------------------------------------------------------------

    def program_external(self, req: EndpointRequest) -> None:
        """Publish the container's ports through the chain's ``portMappings`` plugins.

        Docker calls this for the container's gateway endpoint only, so ports land on one
        network, as with Docker's own bridge driver.
        """
        rec = self.endpoint(req.endpoint_id)
        bindings = ports.parse(req.options)
        if not bindings:
            return
        config = conflist_from_dict(rec.config, source=f"endpoint {rec.id[:12]}")
        mappers = {p.type for p in config.plugins if p.capabilities.get("portMappings")}
        if not mappers:
            raise InvalidRequest(
                f"network {rec.network_id[:12]}'s CNI chain ({'+'.join(config.plugin_types())}) "
                "has no plugin with the portMappings capability (such as portmap): "
                "ports can't be published"
            )
        with self._locked(rec.network_id), self._ports_lock:
            if rec.capability_args.get("portMappings"):
                return  # already programmed (Docker retried)
            in_use = {m.key() for m in self._published(exclude=rec.id)}
            mappings = ports.allocate(bindings, in_use)
            rec.capability_args = {
                **rec.capability_args,
                "portMappings": [m.to_cni() for m in mappings],
            }
            self.cni.update_plugins(config, self._runtime(rec), "ADD", mappers)
            self.store.save_endpoint(rec)
        log.info("endpoint %s publishes %s", rec.id[:12], ", ".join(map(str, mappings)))

    def revoke_external(self, req: EndpointRequest) -> None:
        rec = self.endpoints.get(req.endpoint_id)
        if rec is None or not rec.capability_args.get("portMappings"):
            return
        config = conflist_from_dict(rec.config, source=f"endpoint {rec.id[:12]}")
        mappers = {p.type for p in config.plugins if p.capabilities.get("portMappings")}
        with self._locked(rec.network_id):
            # DEL with the same portMappings as ADD (portmap removes nothing otherwise), then
            # forget them, so the endpoint's final DEL doesn't try again.
            remaining = {k: v for k, v in rec.capability_args.items() if k != "portMappings"}
            self.cni.update_plugins(config, self._runtime(rec), "DEL", mappers, record=remaining)
            rec.capability_args = remaining
            self.store.save_endpoint(rec)

    def _published(self, exclude: str = "") -> list[ports.Mapping]:
        return [
            ports.Mapping.from_cni(m)
            for e in self.endpoints.values()
            if e.id != exclude
            for m in e.capability_args.get("portMappings") or []
        ]

    def allocate_network(self) -> None:
        raise Unsupported("pycni is a local-scope driver; swarm-scoped networks are not supported")

    # --- helpers ---------------------------------------------------------------------------------

    def _runtime(self, rec: EndpointRecord) -> RuntimeConf:
        return RuntimeConf(
            container_id=rec.id,
            netns=self.links.netns_path(rec.netns),
            ifname=rec.ifname,
            args=tuple((k, v) for k, v in rec.cni_args),
            capability_args=rec.capability_args,
        )

    @staticmethod
    def _quiet(func: Any, *args: Any) -> None:
        """Run an undo step; log, don't raise, so the remaining undo steps still run."""
        try:
            func(*args)
        except PycniError as exc:
            log.error("undo step %s failed: %s", getattr(func, "__name__", func), exc)


def _container_ips(result: Result, sandbox: str) -> list[Any]:
    """The result's addresses on the container-side interface (the one in our netns)."""
    indexes = [n for n, i in enumerate(result.interfaces) if i.sandbox == sandbox]
    if not indexes:
        return list(result.ips)
    return [ip for ip in result.ips if ip.interface is None or ip.interface in indexes]


def _record_from_cache(entry: CachedAttachment) -> EndpointRecord:
    """An endpoint record rebuilt from libcni's cache, to tear down an attachment we forgot."""
    config = json.loads(entry.config) if entry.config else {}
    return EndpointRecord(
        id=entry.container_id,
        network_id="",
        netns=staging_netns(entry.container_id),
        ifname=entry.ifname,
        host_ifname=host_link_name(entry.container_id),
        phase="deleting",
        config=config,
        cni_args=[list(a) for a in entry.cni_args],
        capability_args=entry.capability_args,
        result=entry.result,
    )


#: Plugins whose DEL needs nothing from the container's interface: for chains of only these,
#: DeleteEndpoint skips moving the link back into the staging netns (a ~30 ms kernel
#: operation). bridge and ptp need it when they masquerade: they tear down the rules only for
#: addresses they find on the interface.
_DEL_WITHOUT_LINK = {"bridge", "portmap", "firewall", "bandwidth", "macvlan", "ipvlan"}


#: Plugins that do nothing without their capability's args: an endpoint that doesn't use the
#: capability skips them in ADD and DEL (portmap with no ports runs iptables for nothing on DEL).
_IDLE_WITHOUT = {"portmap": "portMappings"}


def _effective(config: NetworkConfigList, rt: RuntimeConf) -> NetworkConfigList:
    """The chain as this endpoint runs it: without plugins whose capability it doesn't use.

    Published ports come later (ProgramExternalConnectivity runs portmap by itself, on top of
    the cached result), and the final DEL includes portmap again once ports were published.
    """
    keep = [
        p for p in config.plugins
        if _IDLE_WITHOUT.get(p.type) is None or _IDLE_WITHOUT[p.type] in rt.capability_args
    ]
    if len(keep) == len(config.plugins):
        return config
    trimmed = copy.copy(config)
    trimmed.plugins = keep
    return trimmed


def _del_needs_link(config: NetworkConfigList) -> bool:
    for plugin in config.plugins:
        if plugin.type not in _DEL_WITHOUT_LINK:
            return True
        if plugin.type == "bridge" and plugin.raw.get("ipMasq"):
            return True
    return False


def _as_host_if_not_on_link(address: str, routes: list[dict[str, str]]) -> str:
    iface = ipaddress.ip_interface(address)
    if not routes or iface.network.prefixlen == iface.max_prefixlen:
        return address
    on_link = any(r["dst"] == str(iface.network) and not r["gw"] for r in routes)
    return address if on_link else f"{iface.ip}/{iface.max_prefixlen}"


def _container_mac(result: Result, sandbox: str) -> str:
    for iface in result.interfaces:
        if iface.sandbox == sandbox and iface.mac:
            return iface.mac
    return ""


def _join_response(rec: EndpointRecord, result: Result) -> JoinResponse:
    """Gateway and routes for Docker, from the CNI result.

    A default route in the result becomes Docker's ``Gateway``/``GatewayIPv6`` and
    ``DisableGatewayService`` (the chain gives the container its way out, so no docker_gwbridge
    leg). Other routes become ``StaticRoutes``; routes to the interface's own subnets are left
    out, as the kernel adds those with the address.
    """
    ips = [ipaddress.ip_interface(a) for a in rec.addresses]
    gateways: dict[int, str] = {}
    routes: list[StaticRoute] = []
    if rec.routes:
        # What the chain really set up in the namespace beats what its result says.
        live = [Route.from_json(r | {"gw": r["gw"] or None}) for r in rec.routes]
    else:
        live = list(result.routes)
    for route in live:
        family = route.dst.version
        if route.is_default:
            gw = route.gw or next(
                (ip.gateway for ip in result.ips if ip.family == family and ip.gateway), None
            )
            if gw is not None:
                gateways.setdefault(family, str(gw))
            continue
        if any(ip.network == route.dst for ip in ips):
            continue
        if route.gw is not None:
            routes.append(StaticRoute(str(route.dst), NEXTHOP, str(route.gw)))
        else:
            routes.append(StaticRoute(str(route.dst), CONNECTED))
    return JoinResponse(
        src_name=rec.host_ifname,
        dst_prefix="eth",
        gateway=gateways.get(4, ""),
        gateway_ipv6=gateways.get(6, ""),
        # on-link routes first: Docker adds them in order, and a route via a gateway needs
        # the gateway reachable already
        static_routes=tuple(sorted(routes, key=lambda r: r.route_type != CONNECTED)),
        disable_gateway_service=bool(gateways),
    )
