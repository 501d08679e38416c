"""CNM → CNI: Docker's network driver verbs, each carried out on the attachment core.

Each verb takes its locks from the :class:`~shim.registry.Registry` (the lock table is there),
then works through the one attachment lifecycle (:mod:`shim.lifecycle`) in the staging place
(:mod:`shim.staging`), the network's rules (:mod:`shim.netrules`) and its published ports
(:mod:`shim.publishing`); Docker's answers are :mod:`shim.answers`'.

* **CreateNetwork** settles the chain (:mod:`shim.chains`), negotiates its version with the
  plugins, refuses collisions (:mod:`shim.collisions`) and installs the network's rules.
* **CreateEndpoint** attaches the endpoint in its staging place (record, netns, ADD, the link out
  to the host) and tells Docker the address/MAC the chain chose where Docker had not. A failure
  part-way unwinds exactly what was done, naming the plugin that failed. On a
  ``cni.place=sandbox`` network Join runs the chain in Docker's sandbox instead, and Leave DEL.
* **Join** hands Docker that link, the gateway and the routes.
* **DeleteEndpoint** puts the link back where DEL needs it, runs DEL, removes what is left.

No Flask and no subprocess here: CNI goes through :class:`~shim.cni.CNI`, the host through the
:mod:`shim.seams` Protocols, all of which tests can replace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from . import (
    answers,
    chains,
    collisions,
    dockerview,
    endpoint_chain,
    firewall,
    neighbours,
    netlink,
    netrules,
    plugins,
    podargs,
    ports,
    proxy,
    publishing,
    sandbox,
    staging,
)
from .attach import PORTS, Attacher
from .cni import CNI, find
from .errors import InvalidRequest, NotFound, PycniError, Unsupported
from .lifecycle import Ledger, Lifecycle, Place
from .overlay import chain as overlay_chain
from .overlay.manager import Overlays, leave_locally
from .protocol import (
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointRequest,
    JoinRequest,
    JoinResponse,
)
from .registry import EndpointLedger, Network, Registry
from .seams import Links, Rules
from .settings import Settings
from .state import EndpointRecord, NetworkRecord, Phase
from .store import Store

log = logging.getLogger(__name__)


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
        announce: Callable[[str, str, Iterable[str]], None] = neighbours.announce,
        overlays: Overlays | None = None,
    ) -> None:
        self.settings = settings
        self.cni = cni or CNI(
            settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout
        )
        self.attacher = Attacher(self.cni)
        self.registry = Registry(store or Store(settings.state_dir))
        self.links = links
        self.staging = staging.Staging(links)
        self.lifecycle = Lifecycle(self.attacher, announce)
        self.rules = rules
        # docker-proxy's part: published ports where DNAT can't reach ([::1], IPv6 to IPv4)
        self.proxies = proxies or proxy.Proxies()
        # What Docker knows (reconciliation), its networks (collisions) and its names for
        # endpoints' containers (errors); where tests fake Docker's view, none of it is asked.
        self.docker_view = docker_view or (lambda: dockerview.snapshot(settings.driver_name))
        self.docker_networks: Callable[[], list[dockerview.DockerNetwork] | None] = (
            (lambda: None) if docker_view else dockerview.networks)
        self.docker_names: Callable[[], dockerview.Names] = (
            dockerview.Names if docker_view else lambda: dockerview.names(settings.driver_name))
        self.publishing = publishing.EndpointPorts(
            self.attacher, rules, self.proxies, self.registry.store,
            lambda: self.docker_names(), self.registry.network_of)
        #: one space of host ports, with the --network none mode's (shim.publishing)
        self.ports = self.publishing.publisher
        #: endpoints whose chains run in Docker's sandbox (``-o cni.place=sandbox``)
        self.sandbox = sandbox.SandboxEndpoints(
            self.links, self.lifecycle, self.registry, self._ledger,
            None if docker_view else podargs.asking_docker(settings))
        #: overlay networks across hosts (``pycni serve --etcd``); None: not served
        self.overlays = overlays
        self._clashes = collisions.ClashLog()
        # Nothing is read or touched here: restoring is the runtime's step (restore).

    def load_records(self) -> tuple[int, int]:
        """Read every record back (disk only): Docker never re-sends CreateNetwork after a
        restart. (networks, endpoints)."""
        networks, endpoints = self.registry.load()
        self.ports.load((e.id, e.attachment.port_mappings()) for e in self.registry.endpoints())
        return networks, endpoints

    def restore(self) -> None:
        """Read the records back and put on the host what a restart or a reboot took away:
        iptables rules, published ports' rules, the proxies."""
        networks, endpoints = self.load_records()
        for net in self.registry.networks():
            # idempotent: what a reboot or a flush took, and a guard an older pycni never put in
            try:
                netrules.add(self.rules, net)
            except PycniError as exc:
                log.error("network %s: cannot restore its iptables rules: %s", net.id[:12], exc)
        records = {n.id: n for n in self.registry.networks()}
        for rec in self.registry.endpoints():
            self.publishing.restore(records.get(rec.network_id), rec,
                                    serving=rec.phase in (Phase.READY, Phase.JOINED))
        log.info("loaded %d networks, %d endpoints", networks, endpoints)

    def close(self) -> None:
        """The proxies and every connection through them; rules and records outlive a restart."""
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
                joined = self.overlays.join(req.network_id, overlay,
                                            bridge=overlay_chain.bridge_name(req))
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
                mode=resolved.mode,
                ipam=resolved.ipam,
                address_via=resolved.address_via,
                owned_links=owned,
                firewall=resolved.firewall,
                driver=self.settings.driver_name,
            )
            # Record first: a crash after the rules are in leaves something gc can undo.
            self.store.save_network(record)
            try:
                netrules.add(self.rules, record)
            except BaseException:
                self._remove_rules(record)
                self.store.delete_network(record.id)
                raise
            self.registry.add_network(record)
            undo.pop_all()
        log.info("network %s: %s, %s IPAM, chain %s", req.network_id[:12], record.mode,
                 record.ipam, "+".join(config.plugin_types()))

    def warn_range_clashes(self) -> None:
        """Log where a pycni network's range overlaps a Docker network made later."""
        self._clashes.tell([(n.id, n.docker, n.config, str(n.ipam))
                            for n in self.registry.networks()], self.docker_networks())

    def _remove_rules(self, record: NetworkRecord) -> None:
        netrules.remove(self.rules, record, [n for n in self.registry.networks()
                                             if n.id != record.id])

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
            plugins.forget_host_local(net.record.config, chains.cni_network_name(network_id))
            if self.overlays is not None:
                self.overlays.leave(network_id)  # nothing for a network of no overlay
            elif leave_locally(self.settings.state_dir, network_id):
                log.warning("network %s is an overlay network, and this pycni serves no "
                            "overlays (no --etcd): its VTEP is gone, its lease in etcd "
                            "expires by itself", network_id[:12])
            self.registry.remove_network(net)
        log.info("network %s deleted", network_id[:12])

    # --- endpoints -------------------------------------------------------------------------------

    def create_endpoint(self, req: CreateEndpointRequest, raw: dict[str, Any]
                        ) -> answers.EndpointAnswer:
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
            if self.overlays is not None:
                self.overlays.refuse_if_lost(req.network_id)
            rec = self._new_endpoint(net.record, req, raw)
            if sandbox.chosen(net.record):
                self.sandbox.create(net, rec)  # the chain runs at Join
                return answers.answer(req.interface, rec)
            answer = staging.attach(self.lifecycle, self.staging, self._ledger(net, rec), rec,
                                    req.interface)
            log.info("endpoint %s on %s: %s mac %s", rec.id[:12], net.id[:12],
                     ",".join(rec.addresses) or "no address", rec.mac)
            return answer

    def _new_endpoint(
        self, net: NetworkRecord, req: CreateEndpointRequest, raw: dict[str, Any]
    ) -> EndpointRecord:
        chain = endpoint_chain.for_endpoint(
            net.config.raw, net.request, net.address_via, req.interface,
            internal=net.docker.internal, user=podargs.endpoint_options(req.options),
        )
        return self.staging.new_record(net.id, req.endpoint_id, chain, raw)

    def join(self, req: JoinRequest) -> JoinResponse:
        with self._endpoint(req) as (net, rec):
            if rec.phase == Phase.CREATED:
                return self.sandbox.join(net, rec, req.sandbox_key)
            if rec.result is None:
                raise InvalidRequest(f"endpoint {rec.id[:12]} was never wired; cannot join")
            rec.sandbox_key = req.sandbox_key
            rec.phase = Phase.JOINED
            self.registry.save_endpoint(net, rec)
            return answers.join_response(rec)

    def leave(self, req: EndpointRequest) -> None:
        """Staging: nothing to undo (Docker takes the link out itself; DeleteEndpoint finds it
        wherever it is); kept in memory only, the record naming the sandbox for reconciliation.
        Sandbox: DEL against the live interface (Docker ≥ 28 leaves before it clears the
        sandbox); the endpoint and its IPAM's address wait for a Join, or DeleteEndpoint."""
        with self.registry.endpoint_locked(self._network_of(req), req.endpoint_id) as net:
            rec = net.endpoint(req.endpoint_id) if net else None
            if net is not None and rec is not None and rec.place == "sandbox":
                self.teardown(rec, net, release=False)
                self.registry.add_endpoint(net, sandbox.unjoined(rec))
                return
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

    def teardown(self, rec: EndpointRecord, net: Network | None, *,
                 recorded: bool = True, release: bool = True) -> None:
        """Undo an endpoint completely (under ``net``'s lock; ``net`` is None for a leftover no
        network owns). Safe to repeat; keeps the record if DEL fails. Not ``recorded``: an
        attachment libcni's cache alone knows (an undo that failed part-way): no record is made
        for it, and the staging namespace DEL needed goes whatever DEL says - what DEL could not
        undo stays in the cache, for the next sweep or ``pycni gc``. ``release``: what the
        chain's IPAM handed out on its own (:mod:`shim.sandbox`) goes with the record."""
        ledger: Ledger = self._ledger(net, rec)
        if release:
            ledger = sandbox.Releasing(self.attacher, ledger, rec)
        if rec.phase == Phase.CREATED:
            ledger.drop()  # its chain has not run (or ran and was DELeted at Leave)
            log.info("endpoint %s deleted", rec.id[:12])
            return
        if recorded:
            rec.phase = Phase.DELETING
            self.store.save_endpoint(rec)
        # the proxy and every connection through it; pycni's own port rules
        published = PORTS in rec.capability_args
        self.publishing.teardown(net.record if net is not None else None, rec)
        if recorded and published:
            self.store.save_endpoint(rec)
        place: Place = (sandbox.SandboxPlace(self.links, rec) if rec.place == "sandbox"
                        else staging.StagingPlace(self.staging, rec))
        try:
            self.lifecycle.detach(rec.attachment, place, ledger)
        finally:
            if not recorded:
                place.close(rec.attachment)
        log.info("endpoint %s deleted", rec.id[:12])

    def _ledger(self, net: Network | None, rec: EndpointRecord) -> EndpointLedger:
        return EndpointLedger(self.registry, net, rec, self.publishing.release)

    def oper_info(self, req: EndpointRequest) -> dict[str, Any]:
        with self._endpoint(req) as (net, rec):
            return answers.oper_info(net.record, rec)

    # --- published ports -------------------------------------------------------------------------

    def program_external(self, req: EndpointRequest) -> None:
        """Publish the container's ports (:mod:`shim.publishing`).

        Docker calls this for the container's gateway endpoint only, so ports land on one
        network, as with Docker's own bridge driver.
        """
        with self._endpoint(req) as (net, rec):
            host_ip = chains.default_host_ip(net.record.docker)  # Docker's host_binding_ipv4
            bindings = [replace(b, host_ip=b.host_ip or host_ip) for b in ports.parse(req.options)]
            if not bindings or rec.capability_args.get(PORTS):
                return  # nothing asked, or already programmed (Docker retried)
            mappings = self.publishing.publish(net.record, rec, bindings,
                                               save=lambda: self.registry.save_endpoint(net, rec))
        log.info("endpoint %s publishes %s", rec.id[:12], ", ".join(map(str, mappings)))

    def revoke_external(self, req: EndpointRequest) -> None:
        with self.registry.endpoint_locked(self._network_of(req), req.endpoint_id) as net:
            rec = net.endpoint(req.endpoint_id) if net else None
            if net is None or rec is None or PORTS not in rec.capability_args:
                return
            self.publishing.unpublish(net.record, rec)
            self.registry.save_endpoint(net, rec)

    def allocate_network(self) -> None:
        raise Unsupported("pycni is a local-scope driver; swarm-scoped networks are not supported")
