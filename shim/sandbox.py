"""Docker's own sandbox as the place a driver endpoint's chain runs (engines ≥ 28).

From Docker 28 on, dockerd binds the container's namespace at the sandbox key before it calls
the network driver: the namespace Join's ``SandboxKey`` names exists at Join and still at Leave
(Docker calls the driver's Leave before it clears the sandbox). There the chain can run straight
into the container, as a CNI runtime runs it: no staging namespace, no move, and DEL finds the
live interface.

What Docker is told changes with it (:func:`shim.answers.sandbox_join_response`): no
``InterfaceName`` - Docker then moves and configures nothing of its own - and the chain's
default gateways as ``Gateway``/``GatewayIPv6``, its default routes taken off the interface
first (:meth:`~shim.seams.Links.hand_over_default_routes`): Docker adds them back from the
gateway, which it fails to do over an existing route. The gateway makes the endpoint the
container's way out in Docker's eyes: published ports (ProgramExternalConnectivity), the
embedded DNS forwarding outside names, and the choice of gateway between several networks work
as with Docker's own drivers.

The interface is named ``eth<N>``, the first number no link in the sandbox has yet.

**A chain whose IPAM picks the address** (``--ipam-driver null``): Docker must be told the
address at CreateEndpoint, before its sandbox is there. So the chain's IPAM runs on its own then
(:func:`reservation`: the IPAM plugin as a one-plugin list of the network's name, attachment
``ipam0`` of the endpoint), and the chain runs at Join with what it handed out as static IPAM
(:func:`given`). DEL of the chain at Leave leaves the reservation; DeleteEndpoint releases it
with the IPAM's own DEL, so the IPAM's books stay exact.

**An IPAM that asks on the interface** (dhcp) can't run before the interface exists, and can't
keep its lease anywhere but in the namespace it asked from: its daemon renews from there. The
whole chain runs at Join, Docker is told no address (inspect shows none, and Docker's DNS does not
know the name), and the lease is renewed for the container's life, released at Leave.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import answers, chains, plugins, podargs
from .attach import Attacher, Attachment
from .chains import ipam_plugin
from .cni.config import NetworkConfigList, conflist_from_dict
from .cni.types import Result
from .errors import ConfigError, NetlinkFailure, Unsupported
from .lifecycle import Ledger, Lifecycle, result_in_namespace
from .protocol import JoinResponse
from .registry import Network, Registry
from .seams import Links
from .state import EndpointRecord, NetworkRecord, Phase

log = logging.getLogger(__name__)

PREFIX = "eth"
#: the interface name the IPAM's reservation is kept under (never made: the IPAM alone runs)
IPAM_IFNAME = "ipam0"
#: CNI_NETNS of the reservation's ADD: the spec wants one; an IPAM plugin never enters it
HOST_NETNS = "/proc/self/ns/net"


def reservation(endpoint_id: str, config: NetworkConfigList) -> Attachment:
    """The chain's IPAM on its own, as an attachment of the endpoint (:data:`IPAM_IFNAME`)."""
    found = ipam_plugin(config)
    if found is None:
        raise ConfigError("no plugin in the chain has an IPAM section to pick the address",
                          source=config.source)
    ipam = found[1]
    raw = {"cniVersion": config.cni_version, "name": config.name,
           "plugins": [{"type": ipam["type"], "ipam": ipam}]}
    return Attachment(container_id=endpoint_id, netns=HOST_NETNS, ifname=IPAM_IFNAME,
                      config=conflist_from_dict(raw, source=f"{config.source or config.name} (its IPAM)"))


def given(config: NetworkConfigList, result: Result) -> NetworkConfigList:
    """The chain with what the reservation handed out as its static IPAM: the addresses with
    their gateways, the routes and the DNS the IPAM gave."""
    found = ipam_plugin(config)
    assert found is not None  # the reservation was made from it
    raw = copy.deepcopy(config.raw)
    static: dict[str, Any] = {
        "type": "static",
        "addresses": [{"address": str(ip.address),
                       **({"gateway": str(ip.gateway)} if ip.gateway else {})}
                      for ip in result.ips],
    }
    if result.routes:
        static["routes"] = [r.to_json(config.cni_version) for r in result.routes]
    dns = result.dns.to_json()
    if dns:
        static["dns"] = dns
    raw["plugins"][found[0]]["ipam"] = static
    return conflist_from_dict(raw, source=config.source or config.name)


def free_ifname(links: Links, sandbox: str) -> str:
    """The first ``eth<N>`` no link in ``sandbox`` carries."""
    taken = set(links.link_names(sandbox))
    n = 0
    while f"{PREFIX}{n}" in taken:
        n += 1
    return f"{PREFIX}{n}"


class SandboxPlace:
    """One endpoint's chain in Docker's sandbox, as a place of the attachment lifecycle."""

    def __init__(self, links: Links, rec: EndpointRecord) -> None:
        self.links = links
        self.rec = rec

    def open(self, att: Attachment) -> None:
        if not self.links.is_netns(att.netns):
            raise NetlinkFailure(f"Docker's sandbox {att.netns} does not exist")

    def settle(self, att: Attachment, undo: contextlib.ExitStack) -> None:
        """Docker takes the default routes over from Join's gateway; the rest stay the chain's."""
        self.rec.routes = self.links.hand_over_default_routes(att.netns, att.ifname)

    def reopen(self, att: Attachment) -> Attachment:
        """The sandbox as it is: DEL without a namespace once Docker removed it (CNI allows
        that: the interface went with it)."""
        if self.links.is_netns(att.netns):
            return att
        return replace(att, netns="")

    def found_result(self, att: Attachment) -> Result | None:
        return result_in_namespace(att, self.links.addresses)

    def close(self, att: Attachment) -> None:
        """What DEL left of the chain's interface goes (the namespace is Docker's)."""
        if self.links.is_netns(att.netns):
            macs = {m.lower() for m in (self.rec.mac, self.rec.link_mac) if m}
            self.links.delete_link(att.ifname, att.netns, macs=macs)


def chosen(net: NetworkRecord) -> bool:
    """Whether the network's chains run in Docker's sandbox (``-o cni.place=sandbox``)."""
    return chains.place_of(net.docker.driver_options) == "sandbox"


class Releasing:
    """A ledger whose drop first releases what the chain's IPAM handed out on its own at
    CreateEndpoint (:func:`reservation`), if it did: after the chain's DEL, and while the
    record still names it."""

    def __init__(self, attacher: Attacher, ledger: Ledger, rec: EndpointRecord) -> None:
        self.attacher = attacher
        self.ledger = ledger
        self.rec = rec

    def claim(self) -> None:
        self.ledger.claim()

    def save(self) -> None:
        self.ledger.save()

    def drop(self) -> None:
        if self.rec.reserved is not None:
            self.attacher.delete(self.rec.reserved)
        self.ledger.drop()


def unjoined(rec: EndpointRecord) -> EndpointRecord:
    """The endpoint as it was before Join, after Leave DELeted its chain: it waits for a Join
    again, or DeleteEndpoint (with what its IPAM handed out, if it did)."""
    return EndpointRecord(
        id=rec.id, network_id=rec.network_id, netns=rec.netns, host_ifname=rec.host_ifname,
        request=rec.request, phase=Phase.CREATED,
        attachment=replace(rec.attachment, result=None), mac=rec.mac,
        addresses=list(rec.addresses) if rec.reserved else [], reserved=rec.reserved)


class SandboxEndpoints:
    """The driver's endpoints whose chains run in Docker's sandbox: CreateEndpoint answers
    before the chain runs, Join runs it (the driver's Leave and DeleteEndpoint undo it)."""

    def __init__(self, links: Links, lifecycle: Lifecycle, registry: Registry,
                 ledger: Callable[[Network, EndpointRecord], Ledger],
                 identify: Callable[[str, str], podargs.Pairs] | None = None) -> None:
        self.links = links
        self.lifecycle = lifecycle
        self.registry = registry
        self.ledger = ledger
        #: (network id, endpoint id) → the identity of the container it serves, asked of
        #: Docker at Join (:mod:`shim.podargs`); unknown without one
        self.identify = identify or (lambda network_id, endpoint_id: ())

    def create(self, net: Network, rec: EndpointRecord) -> None:
        """Record the endpoint for Join: with the address Docker's IPAM chose, or the one the
        chain's IPAM hands out on its own now (:func:`reservation`)."""
        # Docker's --mac-address, or on a zero-config network the one derived from the address
        # (shim.endpoint_chain gives the chain either as its ``mac`` capability)
        rec.mac = str(rec.capability_args.get("mac") or "")
        found = ipam_plugin(rec.config)
        asks = found is not None and plugins.asks_on_the_link(found[1])
        if net.record.address_via or asks:
            rec.phase = Phase.CREATED
            self.registry.add_endpoint(net, rec)
            how = ("" if net.record.address_via
                   else " (its IPAM asks on the link: Docker is told no address)")
        else:
            self._reserve(net, rec)  # records it too
            how = f" ({', '.join(rec.addresses)} from its IPAM)"
        log.info("endpoint %s on %s: its chain runs at Join, in Docker's sandbox%s",
                 rec.id[:12], net.id[:12], how)

    def _reserve(self, net: Network, rec: EndpointRecord) -> None:
        reserved = reservation(rec.id, rec.config)
        rec.reserved = reserved
        with contextlib.ExitStack() as undo:
            undo.callback(self.ledger(net, rec).drop)
            self.registry.add_endpoint(net, rec)  # CREATING: gc undoes a crash from here on
            result = self.lifecycle.attacher.add(reserved, undo)
            rec.attachment.config = given(rec.config, result)
            rec.addresses = [str(ip.address) for ip in reserved.ips()]
            rec.phase = Phase.CREATED
            self.registry.save_endpoint(net, rec)
            undo.pop_all()

    def join(self, net: Network, rec: EndpointRecord, sandbox_key: str) -> JoinResponse:
        """The chain's ADD straight in Docker's sandbox; Docker's answer without a link."""
        if not self.links.is_netns(sandbox_key):
            raise Unsupported(
                f"network {net.id[:12]} runs its chain in Docker's sandbox "
                f"({chains.OPT_PLACE}=sandbox), and pycni finds no namespace at {sandbox_key} "
                "at Join: Docker makes it before Join from 28 on, so this takes Docker 28 or "
                "later (and pycni on the host, not as a managed plugin, which does not see "
                "Docker's namespaces); on this engine create the network without "
                f"{chains.OPT_PLACE}")
        assert rec.docker is not None
        rec.place = "sandbox"
        rec.sandbox_key = sandbox_key
        rec.attachment.netns = sandbox_key
        rec.attachment.ifname = free_ifname(self.links, sandbox_key)
        rec.attachment.cni_args = podargs.with_identity(rec.attachment.cni_args,
                                                        self.identify(net.id, rec.id))
        rec.phase = Phase.CREATING  # a crash from here on leaves it for gc to undo
        place = SandboxPlace(self.links, rec)
        with self.lifecycle.attaching(rec.attachment, place, self.ledger(net, rec)):
            rec.link_mac = rec.attachment.mac() or rec.mac
            rec.mac = rec.mac or rec.link_mac
            answers.answer(rec.docker.interface, rec)  # the chain took Docker's address
            rec.phase = Phase.JOINED  # saved as the lifecycle saves the record once more
        log.info("endpoint %s on %s: %s mac %s, in the sandbox as %s", rec.id[:12], net.id[:12],
                 ",".join(rec.addresses) or "no address", rec.mac, rec.ifname)
        return answers.sandbox_join_response(rec)
