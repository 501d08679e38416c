"""What Docker is told about an endpoint: CreateEndpoint's answer, Join's gateway and routes,
and how a container leaves its network (``pycni inspect``'s ``way_out``) - all read from the
endpoint's record and the chain's result."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .cni.types import Result, Route
from .errors import CNIError
from .ports import Mapping
from .protocol import CONNECTED, NEXTHOP, EndpointInterface, JoinResponse, StaticRoute
from .state import EndpointRecord, NetworkRecord


@dataclass(frozen=True)
class EndpointAnswer:
    """What CreateEndpoint tells Docker: only the fields Docker left empty."""

    interface: EndpointInterface

    def to_json(self) -> dict[str, Any]:
        body = self.interface.to_json()
        return {"Interface": body} if body else {}



def answer(asked: EndpointInterface, rec: EndpointRecord) -> EndpointAnswer:
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


def as_host_if_not_on_link(address: str, routes: list[Route]) -> str:
    iface = ipaddress.ip_interface(address)
    if not routes or iface.network.prefixlen == iface.max_prefixlen:
        return address
    on_link = any(r.dst == iface.network and r.gw is None for r in routes)
    return address if on_link else f"{iface.ip}/{iface.max_prefixlen}"


def join_response(rec: EndpointRecord) -> JoinResponse:
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


def sandbox_join_response(rec: EndpointRecord) -> JoinResponse:
    """Join's answer for a chain that ran in Docker's sandbox (:mod:`shim.sandbox`): no
    interface to move, and the chain's default gateways, whose routes Docker adds back; the
    other routes are the chain's, in place already."""
    result = rec.result
    assert result is not None
    gateways, _ = _routes(rec, result)
    return JoinResponse(
        src_name="",
        gateway=gateways.get(4, ""),
        gateway_ipv6=gateways.get(6, ""),
        disable_gateway_service=True,
    )


def way_out(rec: EndpointRecord) -> str:
    """How a container leaves its network through this endpoint, for ``pycni inspect``:
    ``via <gateway>`` per family the chain gave a default route, else ``none`` (pycni never
    lets Docker add a ``docker_gwbridge`` leg; see :func:`join_response`)."""
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
        live = list(rec.routes)
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


def oper_info(network: NetworkRecord, rec: EndpointRecord) -> dict[str, Any]:
    """EndpointOperInfo: what pycni knows of the endpoint (``docker network inspect`` shows it)."""
    config = network.config
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
    published = rec.capability_args.get("portMappings")
    if published:
        info["ports"] = [str(Mapping.from_cni(m)) for m in published]
    return info
