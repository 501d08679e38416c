"""One endpoint's published ports, as the driver programs them (ProgramExternalConnectivity,
RevokeExternalConnectivity, teardown, restart).

* **Where the rules come from.** A zero-config network's ports are pycni's own DNAT rules
  (:func:`shim.firewall.publish`), as Docker's bridge writes its own; any other chain runs its
  ``portMappings`` plugins (portmap) with the mappings as capability args, ADD on publish and DEL
  with the same args on revoke (portmap removes nothing otherwise).
* **One space of host ports.** The :class:`~shim.ports.Publisher` chooses them, for both modes:
  it reads the ``--network none`` mode's records (other processes hold ports there with DNAT
  alone, no socket) at every reservation, and a port someone holds is refused naming the
  container, as Docker's "port is already allocated" does.
* **The proxy** (:mod:`shim.proxy`) holds each published address and port with a socket and
  serves what DNAT can't carry; on a zero-config network it starts first, as docker-proxy does,
  then the rules go in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator

from . import dnat, dockerview, ports, proxy
from .attach import PORTS, Attacher, has_capability, quietly
from .errors import InvalidRequest, PycniError
from .seams import Rules
from .state import EndpointRecord, NetworkRecord
from .store import Store

log = logging.getLogger(__name__)

#: how the Publisher names a port's holder in the --network none mode
NONE_MODE = "none:"


class EndpointPorts:
    """Publishing and revoking one endpoint's ports; the caller holds the endpoint's lock."""

    def __init__(self, attacher: Attacher, rules: Rules, proxies: proxy.Proxies, store: Store,
                 docker_names: Callable[[], dockerview.Names],
                 network_of: Callable[[str], str | None]) -> None:
        self.attacher = attacher
        self.rules = rules
        self.proxies = proxies
        self.store = store
        self.docker_names = docker_names
        self.network_of = network_of
        self.publisher = ports.Publisher(elsewhere=self._none_mode_ports)

    def publish(self, network: NetworkRecord, rec: EndpointRecord, bindings: list[ports.Binding],
                save: Callable[[], None]) -> list[ports.Mapping]:
        """Choose host ports for ``bindings`` and publish them; undone in full on failure."""
        own = own_ports(network, rec)
        if not own and not has_capability(rec.config, PORTS):
            raise InvalidRequest(
                f"network {rec.network_id[:12]}'s CNI chain "
                f"({'+'.join(rec.config.plugin_types())}) has no plugin with the "
                "portMappings capability (such as portmap): ports can't be published"
            )
        with self._reserving(rec.id, bindings) as mappings:
            if own:
                # Docker's order: the proxy holds the host ports, then the DNAT rules
                self.proxies.start(rec.id, mappings, rec.addresses)
                try:
                    self.rules.publish(rec.id[:12], port_rules(network, rec, mappings))
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
            save()
        return mappings

    def unpublish(self, network: NetworkRecord, rec: EndpointRecord) -> None:
        """Revoke: the proxy and every connection through it, the rules (portmap's DEL with the
        same portMappings as ADD), then the ports go back; the endpoint's final DEL then has
        nothing of them to do."""
        self.proxies.stop(rec.id)
        if own_ports(network, rec):
            self._unpublish_own(network, rec)
        else:
            self.attacher.unpublish(rec.attachment, PORTS)
        self.publisher.release(rec.id)

    def teardown(self, network: NetworkRecord | None, rec: EndpointRecord) -> None:
        """What DeleteEndpoint removes of the ports before the chain's DEL (which takes a
        portmap's rules with it): the proxy, and pycni's own rules. ``network`` is None for a
        leftover no network owns: its rules are found by the endpoint's tag."""
        self.proxies.stop(rec.id)
        if network is not None and own_ports(network, rec):
            self._unpublish_own(network, rec)
        elif network is None and PORTS in rec.capability_args and \
                not has_capability(rec.config, PORTS):
            self.rules.unpublish(rec.id[:12], None)

    def release(self, rec: EndpointRecord) -> None:
        self.publisher.release(rec.id)

    def restore(self, network: NetworkRecord | None, rec: EndpointRecord, serving: bool) -> None:
        """After a restart: pycni's own rules back where a reboot took them, the proxy again
        for an endpoint that is ``serving``."""
        published = rec.capability_args.get(PORTS)
        if not published:
            return
        mappings = [ports.Mapping.from_cni(m) for m in published]
        if network is not None and own_ports(network, rec):
            try:
                self.rules.restore_published(rec.id[:12], port_rules(network, rec, mappings))
            except PycniError as exc:
                log.error("endpoint %s: cannot restore its published ports' rules: %s",
                          rec.id[:12], exc)
        if serving:
            try:
                self.proxies.start(rec.id, mappings, rec.addresses)
            except PycniError as exc:
                log.warning("endpoint %s: published ports not proxied again: %s", rec.id[:12],
                            exc)

    @contextlib.contextmanager
    def _reserving(self, endpoint_id: str, bindings: list[ports.Binding]
                   ) -> Iterator[list[ports.Mapping]]:
        """The Publisher's reservation; a port another endpoint holds is refused naming the
        container that holds it, as Docker's "port is already allocated" does."""
        try:
            reservation = self.publisher.reserve(endpoint_id, bindings)
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
        return {m.key(): f"{NONE_MODE}{r.name or r.container_id[:12]}/{r.network}"
                for r in records for m in r.attachment.port_mappings()}

    def _holder(self, endpoint_id: str) -> str:
        """Who holds a port pycni published for ``endpoint_id``, as Docker names them."""
        if endpoint_id.startswith(NONE_MODE):
            name, _, network = endpoint_id.removeprefix(NONE_MODE).partition("/")
            return f"container {name} publishes it (pycni attach, on {network})"
        held = self.network_of(endpoint_id)
        container = self.docker_names().endpoints.get(endpoint_id)
        if container is not None:
            return f"container {container.name.lstrip('/')} publishes it"
        on = f" on network {held[:12]}" if held else ""
        return (f"pycni published it for endpoint {endpoint_id[:12]}{on}, whose container Docker "
                "doesn't list; if it is gone, `pycni gc` removes what it left behind")

    def _unpublish_own(self, network: NetworkRecord, rec: EndpointRecord) -> None:
        published = rec.attachment.port_mappings()
        self.rules.unpublish(rec.id[:12], port_rules(network, rec, published))
        rec.attachment.capability_args = {k: v for k, v in rec.capability_args.items()
                                          if k != PORTS}


def own_ports(network: NetworkRecord, rec: EndpointRecord) -> bool:
    """Whether pycni writes the endpoint's DNAT rules itself (:func:`shim.firewall.publish`):
    on a zero-config network, whose chain has no ``portMappings`` plugin (one made by an older
    pycni has portmap, and keeps it)."""
    return (network.firewall is not None and not network.firewall.internal
            and not has_capability(rec.config, PORTS))


def port_rules(network: NetworkRecord, rec: EndpointRecord,
               mappings: Iterable[ports.Mapping]) -> list[dnat.PortRule]:
    """The DNAT rules of ``mappings``: one per mapping and container address of the host
    address's family (both for "all addresses"). None for the host's loopback: Docker leaves
    it to its proxy, and so does pycni (route_localnet stays 0)."""
    assert network.firewall is not None, "pycni's own rules: a network of its own chain"
    bridge = network.firewall.bridge
    found = []
    for m in mappings:
        host = ipaddress.ip_address(m.host_ip) if m.host_ip else None
        if host is not None and host.is_loopback:
            continue
        for address in rec.addresses:
            ip = ipaddress.ip_interface(address).ip
            if host is not None and host.version != ip.version:
                continue
            found.append(dnat.PortRule(
                ip.version, m.protocol, "" if host is None or host.is_unspecified else str(host),
                m.host_port, str(ip), m.container_port, bridge))
    return found
