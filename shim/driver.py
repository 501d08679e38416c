"""CNM → CNI: Docker's network driver verbs, each carried out on the attachment core.

Each verb is short: it takes its locks from the :class:`~shim.registry.Registry` (whose
docstring holds the one lock rule: network verbs hold their network, endpoint verbs their
endpoint), then works through the attachment core (:mod:`shim.attach`: ADD with undo, DEL with
the cached config and arguments), the staging namespace (:mod:`shim.staging`: where the chain
runs before Docker has a container netns, and how the link gets out and back) and the port
publisher (:mod:`shim.ports`).

* **CreateNetwork** settles the chain (:mod:`shim.chains`), negotiates its version with the
  plugins, and installs the per-network rules of zero-config networks (:mod:`shim.firewall`).
* **CreateEndpoint** records the endpoint, makes its staging netns, runs ADD there, takes the
  link out to the host, and tells Docker the address/MAC the chain chose where Docker had not
  chosen them. Each step registers its undo on an ``ExitStack``; a failure part-way unwinds
  exactly what was done, and the error names the plugin that failed.
* **Join** hands Docker that link, the gateway and the routes.
* **DeleteEndpoint** puts the link back where DEL needs it, runs DEL, removes what is left.

No Flask and no subprocess here: CNI goes through :class:`~shim.cni.CNI`, the host through the
:mod:`shim.seams` Protocols, all of which tests can replace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import (
    chains,
    collisions,
    dockerview,
    endpoint_chain,
    firewall,
    netlink,
    plugins,
    ports,
    proxy,
    staging,
)
from .attach import Attacher, Attachment, has_capability, quietly
from .cni import CNI, find
from .cni.types import Result, Route
from .errors import CNIError, InvalidRequest, NotFound, PycniError, Unsupported
from .overlay import chain as overlay_chain
from .overlay.manager import Overlays, leave_locally
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
from .registry import Network, Registry
from .seams import Links, Rules
from .settings import Settings
from .state import AddressVia, EndpointRecord, Ipam, Mode, NetworkRecord, Phase, Store

log = logging.getLogger(__name__)

PORTS = "portMappings"
#: how the Publisher names a port's holder in the --network none mode
NONE_MODE = "none:"


@dataclass(frozen=True)
class EndpointAnswer:
    """What CreateEndpoint tells Docker: only the fields Docker left empty."""

    interface: EndpointInterface

    def to_json(self) -> dict[str, Any]:
        body = self.interface.to_json()
        return {"Interface": body} if body else {}


class Driver:
    """pycni's CNM driver: Docker's verbs on networks and endpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        cni: CNI | None = None,
        store: Store | None = None,
        links: Links = netlink,
        docker_view: Callable[[], dockerview.DockerView | None] | None = None,
        rules: Rules = firewall,
        proxies: proxy.Proxies | None = None,
        announce: Callable[[str, str, Iterable[str]], None] = netlink.announce,
        overlays: Overlays | None = None,
    ) -> None:
        self.settings = settings
        self.cni = cni or CNI(
            settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout
        )
        self.attacher = Attacher(self.cni)
        self.registry = Registry(store or Store(settings.state_dir))
        self.links = links
        self.staging = staging.Staging(links, announce)
        self.rules = rules
        # one space of host ports with the --network none mode (pycni attach -p), which runs
        # in other processes and keeps its ports in its records
        self.ports = ports.Publisher(elsewhere=self._none_mode_ports)
        # docker-proxy's part: published ports where DNAT can't reach ([::1], IPv6 to IPv4)
        self.proxies = proxies or proxy.Proxies()
        # What Docker knows, for reconciliation; tests pass one that answers "unknown" (None).
        self.docker_view = docker_view or (lambda: dockerview.snapshot(settings.driver_name))
        # Docker's networks, which a new one must not collide with; not asked where tests fake
        # Docker's view
        self.docker_networks: Callable[[], list[dockerview.DockerNetwork] | None] = (
            (lambda: None) if docker_view else dockerview.networks)
        # Docker's names for endpoints' containers (errors name them); {} where tests fake it
        self.docker_names: Callable[[], dockerview.Names] = (
            dockerview.Names if docker_view else lambda: dockerview.names(settings.driver_name))
        #: overlay networks across hosts (``pycni serve --etcd``); None: not served
        self.overlays = overlays
        self._clashes_told: set[tuple[str, str]] = set()
        # Nothing is read or touched here: restoring is the runtime's explicit step
        # (load_records, then restore), so an app factory or a test builds a driver freely.

    def load_records(self) -> tuple[int, int]:
        """Read every record back (disk only): Docker never re-sends CreateNetwork after a
        restart. (networks, endpoints)."""
        networks, endpoints = self.registry.load()
        self.ports.load((e.id, e.capability_args.get(PORTS) or []) for e in self.registry.endpoints())
        return networks, endpoints

    def restore(self) -> None:
        """Read the records back and put on the host what a restart or a reboot took away:
        iptables rules, published ports' rules, the proxies."""
        networks, endpoints = self.load_records()
        for net in self.registry.networks():
            # iptables rules don't survive a reboot (or an admin's flush); adding is
            # idempotent, so a restart puts back whatever is missing - and gives a network
            # made before the loopback guard existed its guard.
            try:
                self._add_rules(net)
            except PycniError as exc:
                log.error("network %s: cannot restore its iptables rules: %s", net.id[:12], exc)
        records = {n.id: n for n in self.registry.networks()}
        for rec in self.registry.endpoints():
            published = rec.capability_args.get(PORTS)
            net_rec = records.get(rec.network_id)
            if published and net_rec is not None and _own_ports(net_rec, rec):
                try:  # iptables rules don't survive a reboot
                    self.rules.restore_published(rec.id[:12], _port_rules(
                        net_rec, rec, [ports.Mapping.from_cni(m) for m in published]))
                except PycniError as exc:
                    log.error("endpoint %s: cannot restore its published ports' rules: %s",
                              rec.id[:12], exc)
            if published and rec.phase in (Phase.READY, Phase.JOINED):
                try:
                    self.proxies.start(rec.id, [ports.Mapping.from_cni(m) for m in published],
                                       rec.addresses)
                except PycniError as exc:
                    log.warning("endpoint %s: published ports not proxied again: %s",
                                rec.id[:12], exc)
        log.info("loaded %d networks, %d endpoints", networks, endpoints)

    def close(self) -> None:
        """Stop what serves beside the verbs: the proxies and every connection through them.
        Rules and records stay: they outlive a restart."""
        self.proxies.close()

    @property
    def store(self) -> Store:
        return self.registry.store

    @property
    def networks(self) -> dict[str, NetworkRecord]:
        """A snapshot of the networks, by id."""
        return {n.id: n for n in self.registry.networks()}

    @property
    def endpoints(self) -> dict[str, EndpointRecord]:
        """A snapshot of the endpoints, by id."""
        return {e.id: e for e in self.registry.endpoints()}

    # --- networks --------------------------------------------------------------------------------

    def capabilities(self) -> dict[str, str]:
        return {"Scope": "local", "ConnectivityScope": "local"}

    def create_network(self, req: CreateNetworkRequest, raw: dict[str, Any]) -> None:
        options = req.driver_options
        chains.check_options(options)
        overlay = overlay_chain.asked(req)
        with self.registry.creating(req.network_id) as existing, contextlib.ExitStack() as undo:
            if existing is not None:
                return  # Docker retried; the record is already there
            if chains.OPT_NETWORK in options:
                conf = find(self.settings.conf_dir, options[chains.OPT_NETWORK])
                resolved = chains.from_conflist(req, conf)
            elif overlay is not None:
                if self.overlays is None:
                    raise InvalidRequest(
                        f"option {overlay_chain.OPT_OVERLAY}: this pycni serves no overlay "
                        "networks; start it with --etcd URL (or PYCNI_ETCD)")
                joined = self.overlays.join(req.network_id, overlay)
                undo.callback(self.overlays.leave, req.network_id)
                resolved = overlay_chain.resolve(req, joined, self.settings.cache_dir)
            else:
                resolved = chains.zero_config(req)
            # Every binary is in CNI_PATH and speaks the config's version (or a negotiated one).
            config = self.cni.negotiate(resolved.config)
            # Nothing that would hurt the host or another network: pycni's, or Docker's.
            others = collisions.neighbours(
                [(n.id, n.docker, n.config, str(n.ipam)) for n in self.registry.networks()
                 if n.id != req.network_id],
                [d for d in self.docker_networks() or [] if d.id != req.network_id],
            )
            collisions.refuse_collisions(req, resolved, config, links=self.links, others=others)
            # A bridge the chain will create is this network's to remove; one that exists
            # already (another network's, or the admin's) is not.
            owned = [b for b in plugins.bridges(config) if self.links.link_info(b) is None]
            record = NetworkRecord(
                id=req.network_id,
                request=raw,
                config=config,
                mode=Mode(resolved.mode),
                ipam=Ipam(resolved.ipam),
                address_via=AddressVia(resolved.address_via),
                owned_links=owned,
                firewall=resolved.firewall,
                driver=self.settings.driver_name,
            )
            # Record first: a crash after the rules are in leaves something gc can undo.
            self.store.save_network(record)
            try:
                self._add_rules(record)
            except BaseException:
                self._remove_rules(record)
                self.store.delete_network(record.id)
                raise
            self.registry.add_network(record)
            undo.pop_all()
        log.info("network %s: %s, %s IPAM, chain %s", req.network_id[:12], record.mode,
                 record.ipam, "+".join(config.plugin_types()))

    def warn_range_clashes(self) -> None:
        """Log, once each, where a pycni network's addresses overlap a network Docker created
        later inside a range only the chain's IPAM knew (``pycni doctor`` FAILs on it too).
        A remote driver never hears of other drivers' networks: the reconciler asks."""
        docker = self.docker_networks()
        if docker is None:
            return
        found = set(collisions.clashes_with_docker(
            [(n.id, n.docker, n.config, str(n.ipam)) for n in self.registry.networks()], docker))
        for name, what in sorted(found - self._clashes_told):
            log.warning("%s: %s; their addresses are handed out twice (pycni doctor)", name, what)
        self._clashes_told = found

    def _add_rules(self, record: NetworkRecord) -> None:
        """The network's own iptables rules: a zero-config network's forwarding, masquerading
        and isolation, and the loopback guard of a chain that may open the host's 127.0.0.0/8
        (:mod:`shim.firewall`)."""
        if plugins.opens_loopback(record.config):
            self.rules.add_guard(record.id[:12])
        if record.firewall:
            self.rules.add_network(record.id, **record.firewall)

    def _remove_rules(self, record: NetworkRecord) -> None:
        if record.firewall:
            self.rules.remove_network(record.id, **record.firewall)
        self.rules.remove_guard(record.id[:12])
        # portmap opened route_localnet on the network's bridge; a bridge that stays (not
        # this network's to remove) gets it closed again unless another network uses it.
        shared = {b for n in self.registry.networks() if n.id != record.id
                  for b in plugins.bridges(n.config)}
        self.rules.close_localnet(b for b in plugins.bridges(record.config) if b not in shared)

    def delete_network(self, network_id: str) -> None:
        with self.registry.locked_if_any(network_id) as net:
            if net is None:
                return  # already gone: deleting twice is fine
            for rec in net.snapshot():
                self.teardown(rec, net)
            for name in net.record.owned_links:
                # A bridge with no ports left is ours to remove; one still in use is not.
                in_use = self.links.bridge_ports(name)
                if in_use:
                    log.warning("network %s: keeping %s, still in use by %s",
                                network_id[:12], name, ", ".join(in_use))
                else:
                    self.links.delete_link(name)
            self._remove_rules(net.record)
            if self.overlays is not None:
                self.overlays.leave(network_id)  # nothing for a network of no overlay
            elif leave_locally(self.settings.state_dir, network_id):
                log.warning("network %s is an overlay network, and this pycni serves no "
                            "overlays (no --etcd): its VTEP is gone, its lease in etcd "
                            "expires by itself", network_id[:12])
            self.registry.remove_network(net)
        log.info("network %s deleted", network_id[:12])

    # --- endpoints -------------------------------------------------------------------------------

    def create_endpoint(self, req: CreateEndpointRequest, raw: dict[str, Any]) -> EndpointAnswer:
        elsewhere = self.registry.network_of(req.endpoint_id)
        if elsewhere is not None and elsewhere != req.network_id:
            # Endpoint ids are Docker's and unique: one that exists on another network is a
            # leftover of Docker's. One network lock at a time: that one first.
            self._delete(elsewhere, req.endpoint_id)
        with self.registry.endpoint_locked(req.network_id, req.endpoint_id) as net:
            if net is None:
                raise NotFound(f"pycni has no network {req.network_id[:12]}")
            stale = net.endpoint(req.endpoint_id)
            if stale is not None:
                # Docker retried an endpoint that half-exists: clean it, then make it anew.
                log.warning("endpoint %s exists already; recreating it", req.endpoint_id[:12])
                self.teardown(stale, net)
            rec = self._new_endpoint(net.record, req, raw)
            with contextlib.ExitStack() as undo:
                # The record goes first: a crash from here on leaves something reconcilable.
                self.registry.add_endpoint(net, rec)
                undo.callback(self.registry.remove_endpoint, net, rec.id)
                self.staging.make(rec)
                undo.callback(self.links.remove_netns, rec.netns)
                self.attacher.add(rec.attachment, undo)
                rec.addresses = [str(ip.address) for ip in rec.attachment.ips()]
                self.registry.save_endpoint(net, rec)  # a crash now knows what to tear down
                moved = self.staging.take_out(rec)
                undo.callback(quietly, self.staging.put_back, rec)
                # A plugin that replaced the on-link route of its subnet (ptp routes it via its
                # gateway) means a host address: Docker would re-add the on-link route with the
                # prefix, so it gets the address as /32 (/128) and the routes as StaticRoutes.
                rec.addresses = [_as_host_if_not_on_link(a, rec.routes) for a in rec.addresses]
                # Docker puts its own MAC (--mac-address) on the link at Join.
                rec.link_mac = moved.mac
                rec.mac = req.interface.mac_address or moved.mac
                answer = _answer(req.interface, rec)
                rec.phase = Phase.READY
                self.registry.save_endpoint(net, rec)
                undo.pop_all()
        log.info("endpoint %s on %s: %s mac %s", rec.id[:12], net.id[:12],
                 ",".join(rec.addresses) or "no address", rec.mac)
        return answer

    def _new_endpoint(
        self, net: NetworkRecord, req: CreateEndpointRequest, raw: dict[str, Any]
    ) -> EndpointRecord:
        eid = req.endpoint_id
        chain = endpoint_chain.for_endpoint(
            net.config.raw, net.request, net.address_via, req.interface,
            internal=net.docker.internal,
        )
        attachment = Attachment(
            container_id=eid,
            netns=self.staging.path(eid),
            ifname=staging.IFNAME,
            config=chain.config,
            cni_args=chain.cni_args,
            capability_args=chain.capability_args,
        )
        return EndpointRecord(
            id=eid,
            network_id=net.id,
            netns=staging.netns_name(eid),
            host_ifname=staging.host_link_name(eid),
            attachment=attachment,
            request=raw,
        )

    def join(self, req: JoinRequest) -> JoinResponse:
        with self._endpoint(req) as (net, rec):
            if rec.result is None:
                raise InvalidRequest(f"endpoint {rec.id[:12]} was never wired; cannot join")
            rec.sandbox_key = req.sandbox_key
            rec.phase = Phase.JOINED
            self.registry.save_endpoint(net, rec)
            return _join_response(rec)

    def leave(self, req: EndpointRequest) -> None:
        """Nothing to undo: Docker takes the link out of the container itself, and
        DeleteEndpoint finds it wherever it is. Kept in memory only; the record still names
        the sandbox, which tells reconciliation whether the container lives."""
        with self.registry.endpoint_locked(self._network_of(req), req.endpoint_id) as net:
            rec = net.endpoint(req.endpoint_id) if net else None
            if rec is not None and rec.phase == Phase.JOINED:
                rec.phase = Phase.READY

    def delete_endpoint(self, req: EndpointRequest) -> None:
        self._delete(self._network_of(req), req.endpoint_id)

    def _delete(self, network_id: str, endpoint_id: str) -> None:
        with self.registry.endpoint_locked(network_id, endpoint_id) as net:
            rec = net.endpoint(endpoint_id) if net else None
            if rec is None:
                return  # already gone: DEL semantics
            self.teardown(rec, net)

    def _network_of(self, req: EndpointRequest | JoinRequest) -> str:
        """The network that holds the endpoint (endpoint ids are unique), else the one named."""
        return self.registry.network_of(req.endpoint_id) or req.network_id

    @contextlib.contextmanager
    def _endpoint(self, req: EndpointRequest | JoinRequest
                  ) -> Iterator[tuple[Network, EndpointRecord]]:
        """The endpoint a verb names, under its network's lock."""
        with self.registry.endpoint_locked(self._network_of(req), req.endpoint_id) as net:
            rec = net.endpoint(req.endpoint_id) if net is not None else None
            if net is None or rec is None:
                raise NotFound(f"pycni has no endpoint {req.endpoint_id[:12]} "
                               f"on network {req.network_id[:12]}")
            yield net, rec

    def teardown(self, rec: EndpointRecord, net: Network | None) -> None:
        """Undo an endpoint completely (under ``net``'s lock; ``net`` is None for a leftover no
        network owns). Safe to repeat; keeps the record if DEL fails."""
        rec.phase = Phase.DELETING
        self.store.save_endpoint(rec)
        self.proxies.stop(rec.id)  # and every connection through it
        if net is not None and _own_ports(net.record, rec):
            self._unpublish_own(net.record, rec)
            self.store.save_endpoint(rec)
        elif net is None and PORTS in rec.capability_args and not has_capability(rec.config,
                                                                                 PORTS):
            # a leftover no network owns: its rules are found by the endpoint's tag
            self.rules.unpublish(rec.id[:12], None)
        att = rec.attachment
        if att.result is None:
            # Crashed between ADD and saving its result: libcni's cache has it.
            cached = self.attacher.cached_result(att)
            if cached is not None:
                att.result = cached
                rec.addresses = [str(ip.address) for ip in att.ips()]
                rec.mac = rec.mac or att.mac()
        self.staging.make(rec)
        given = None
        if att.result is None:
            # ADD never finished: no result anywhere. What the chain did is still on eth0 in the
            # staging netns, and DEL needs it as prevResult.
            given = self.staging.found_result(rec)
        elif plugins.del_needs_link(att.config):
            self.staging.put_back(rec)
        self.attacher.delete(att, result=given)
        self.staging.clear(rec)
        self.ports.release(rec.id)
        if net is not None:
            self.registry.remove_endpoint(net, rec.id)
        else:
            self.store.delete_endpoint(rec.id)
        log.info("endpoint %s deleted", rec.id[:12])

    def oper_info(self, req: EndpointRequest) -> dict[str, Any]:
        with self._endpoint(req) as (net, rec):
            config = net.record.config
            info: dict[str, Any] = {
                "cni.network": config.name,
                "cni.plugins": config.plugin_types(),
                "cni.netns": rec.attachment.netns,
                "phase": str(rec.phase),
                "way_out": way_out(rec),
            }
            result = rec.result
            if result is not None:
                info["cni.interfaces"] = [i.to_json(result.cni_version) for i in result.interfaces]
                info["cni.ips"] = [str(ip.address) for ip in result.ips]
                info["cni.routes"] = [r.to_json(result.cni_version) for r in result.routes]
            published = rec.capability_args.get(PORTS)
            if published:
                info["ports"] = [str(ports.Mapping.from_cni(m)) for m in published]
            return info

    # --- published ports -------------------------------------------------------------------------

    def program_external(self, req: EndpointRequest) -> None:
        """Publish the container's ports through the chain's ``portMappings`` plugins.

        Docker calls this for the container's gateway endpoint only, so ports land on one
        network, as with Docker's own bridge driver.
        """
        with self._endpoint(req) as (net, rec):
            host_ip = chains.default_host_ip(net.record.docker)  # Docker's host_binding_ipv4
            bindings = [replace(b, host_ip=b.host_ip or host_ip) for b in ports.parse(req.options)]
            if not bindings:
                return
            own = _own_ports(net.record, rec)
            if not own and not has_capability(rec.config, PORTS):
                raise InvalidRequest(
                    f"network {rec.network_id[:12]}'s CNI chain "
                    f"({'+'.join(rec.config.plugin_types())}) has no plugin with the "
                    "portMappings capability (such as portmap): ports can't be published"
                )
            if rec.capability_args.get(PORTS):
                return  # already programmed (Docker retried)
            with self._reserving(rec.id, bindings) as mappings:
                if own:
                    # Docker's order: the proxy holds the host ports, then the DNAT rules
                    self.proxies.start(rec.id, mappings, rec.addresses)
                    try:
                        self.rules.publish(rec.id[:12], _port_rules(net.record, rec, mappings))
                    except BaseException:
                        self.proxies.stop(rec.id)
                        raise
                    rec.attachment.capability_args = {
                        **rec.capability_args, PORTS: [m.to_cni() for m in mappings]}
                else:
                    self.attacher.publish(rec.attachment, PORTS, [m.to_cni() for m in mappings])
                    try:
                        self.proxies.start(rec.id, mappings, rec.addresses)
                    except BaseException:
                        quietly(self.attacher.unpublish, rec.attachment, PORTS)
                        raise
                self.registry.save_endpoint(net, rec)
        log.info("endpoint %s publishes %s", rec.id[:12], ", ".join(map(str, mappings)))

    @contextlib.contextmanager
    def _reserving(self, endpoint_id: str, bindings: list[ports.Binding]
                   ) -> Iterator[list[ports.Mapping]]:
        """The Publisher's reservation; a port another endpoint holds is refused naming the
        container that holds it, as Docker's "port is already allocated" does."""
        try:
            reservation = self.ports.reserve(endpoint_id, bindings)
            mappings = reservation.__enter__()
        except ports.PortInUse as exc:
            if not exc.holder:
                raise
            raise ports.PortInUse(f"{exc}: {self._holder(exc.holder)}", exc.key,
                                  exc.holder) from None
        with contextlib.ExitStack() as stack:
            stack.push(reservation)
            yield mappings

    def _none_mode_ports(self) -> dict[tuple[str, str, int], str]:
        """The host ports ``--network none`` attachments hold, each → its holder."""
        try:
            records = self.store.containers()
        except PycniError as exc:
            log.warning("cannot read the --network none mode's records: %s", exc)
            return {}
        return {ports.Mapping.from_cni(m).key(): f"{NONE_MODE}{r.name or r.container_id[:12]}"
                f"/{r.network}" for r in records
                for m in r.attachment.capability_args.get(PORTS) or []}

    def _holder(self, endpoint_id: str) -> str:
        """Who holds a port pycni published for ``endpoint_id``, as Docker names them."""
        if endpoint_id.startswith(NONE_MODE):
            name, _, network = endpoint_id.removeprefix(NONE_MODE).partition("/")
            return f"container {name} publishes it (pycni attach, on {network})"
        held = self.registry.network_of(endpoint_id)
        container = self.docker_names().endpoints.get(endpoint_id)
        if container is not None:
            return f"container {container.name.lstrip('/')} publishes it"
        on = f" on network {held[:12]}" if held else ""
        return (f"pycni published it for endpoint {endpoint_id[:12]}{on}, whose container Docker "
                "doesn't list; if it is gone, `pycni gc` removes what it left behind")

    def revoke_external(self, req: EndpointRequest) -> None:
        with self.registry.endpoint_locked(self._network_of(req), req.endpoint_id) as net:
            rec = net.endpoint(req.endpoint_id) if net else None
            if net is None or rec is None or PORTS not in rec.capability_args:
                return
            # DEL with the same portMappings as ADD (portmap removes nothing otherwise), then
            # forget them, so the endpoint's final DEL doesn't try again.
            self.proxies.stop(rec.id)
            if _own_ports(net.record, rec):
                self._unpublish_own(net.record, rec)
            else:
                self.attacher.unpublish(rec.attachment, PORTS)
            self.ports.release(rec.id)
            self.registry.save_endpoint(net, rec)

    def _unpublish_own(self, network: NetworkRecord, rec: EndpointRecord) -> None:
        published = [ports.Mapping.from_cni(m) for m in rec.capability_args.get(PORTS) or []]
        self.rules.unpublish(rec.id[:12], _port_rules(network, rec, published))
        rec.attachment.capability_args = {k: v for k, v in rec.capability_args.items()
                                          if k != PORTS}

    def allocate_network(self) -> None:
        raise Unsupported("pycni is a local-scope driver; swarm-scoped networks are not supported")


def _own_ports(network: NetworkRecord, rec: EndpointRecord) -> bool:
    """Whether pycni writes the endpoint's DNAT rules itself (:func:`shim.firewall.publish`):
    on a zero-config network, whose chain has no ``portMappings`` plugin (one made by an older
    pycni has portmap, and keeps it)."""
    return (bool(network.firewall) and not network.firewall.get("internal")
            and not has_capability(rec.config, PORTS))


def _port_rules(network: NetworkRecord, rec: EndpointRecord,
                mappings: Iterable[ports.Mapping]) -> list[firewall.PortRule]:
    """The DNAT rules of ``mappings``: one per mapping and container address of the host
    address's family (both for "all addresses"). None for the host's loopback: Docker leaves
    it to its proxy, and so does pycni (route_localnet stays 0)."""
    bridge = str(network.firewall["bridge"])
    found = []
    for m in mappings:
        host = ipaddress.ip_address(m.host_ip) if m.host_ip else None
        if host is not None and host.is_loopback:
            continue
        for address in rec.addresses:
            ip = ipaddress.ip_interface(address).ip
            if host is not None and host.version != ip.version:
                continue
            found.append(firewall.PortRule(
                ip.version, m.protocol, "" if host is None or host.is_unspecified else str(host),
                m.host_port, str(ip), m.container_port, bridge))
    return found


def _answer(asked: EndpointInterface, rec: EndpointRecord) -> EndpointAnswer:
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


def _as_host_if_not_on_link(address: str, routes: list[dict[str, str]]) -> str:
    iface = ipaddress.ip_interface(address)
    if not routes or iface.network.prefixlen == iface.max_prefixlen:
        return address
    on_link = any(r["dst"] == str(iface.network) and not r["gw"] for r in routes)
    return address if on_link else f"{iface.ip}/{iface.max_prefixlen}"


def _join_response(rec: EndpointRecord) -> JoinResponse:
    """Gateway and routes for Docker, from the CNI result.

    A default route in the result becomes Docker's ``Gateway``/``GatewayIPv6``. Other routes
    become ``StaticRoutes``; routes to the interface's own subnets are left out, as the kernel
    adds those with the address — and the interface carries Docker's own address with its
    prefix where Docker's IPAM chose it, whatever the chain made of it.

    ``DisableGatewayService`` is always set. Without it, Docker gives a container whose
    endpoint has no gateway a second interface on ``docker_gwbridge`` (making that network on
    the fly, and leaving it behind): a way out the chain never asked for. A chain with no
    default route gives its containers no way out, as ``--internal`` does (:func:`way_out`).
    """
    result = rec.result
    assert result is not None
    gateways, routes = _routes(rec, result)
    return JoinResponse(
        src_name=rec.host_ifname,
        dst_prefix="eth",
        gateway=gateways.get(4, ""),
        gateway_ipv6=gateways.get(6, ""),
        # on-link routes first: Docker adds them in order, and a route via a gateway needs
        # the gateway reachable already
        static_routes=tuple(sorted(routes, key=lambda r: r.route_type != CONNECTED)),
        disable_gateway_service=True,
    )


def way_out(rec: EndpointRecord) -> str:
    """How a container leaves its network through this endpoint, for ``pycni inspect``:
    ``via <gateway>`` per family the chain gave a default route, else ``none`` (pycni never
    lets Docker add a ``docker_gwbridge`` leg; see :func:`_join_response`)."""
    if rec.result is None:
        return "none"
    gateways, _ = _routes(rec, rec.result)
    if not gateways:
        return "none"
    return "via " + ", ".join(gateways[family] for family in sorted(gateways))


def _routes(rec: EndpointRecord, result: Result) -> tuple[dict[int, str], list[StaticRoute]]:
    """The gateway per IP family, and the other routes as Docker's StaticRoutes."""
    ips = [ipaddress.ip_interface(a) for a in rec.addresses]
    if rec.docker is not None:
        asked = rec.docker.interface
        ips += [a for a in (asked.address, asked.address_ipv6) if a is not None]
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
    return gateways, routes
