"""Docker's remote network driver API: one thin view per method.

Each view is parse → one driver call → JSON. Errors are raised, never returned: the app's one
handler answers ``{"Err": message}`` with the error's status (see :mod:`shim.app`).
Docker POSTs every method to ``/<Interface>.<Method>`` with a JSON body.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import reconcile
from .driver import Driver
from .errors import InvalidRequest
from .protocol import (
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointRequest,
    JoinRequest,
    NetworkRequest,
    decode,
)

bp = Blueprint("driver", __name__)

MEDIA_TYPE = "application/vnd.docker.plugins.v1+json"


def _driver() -> Driver:
    driver: Driver = current_app.extensions["pycni.driver"]
    return driver


def _body() -> dict[str, Any]:
    """The request's JSON object, whatever the content type (Docker's is not application/json).

    Malformed, empty or absurdly nested bodies are 400s (:func:`shim.protocol.decode`).
    """
    return decode(request.get_data(cache=True), request.path.lstrip("/"))


def _answer(data: dict[str, Any] | None = None) -> Response:
    response = jsonify(data or {})
    response.mimetype = MEDIA_TYPE
    return response


@bp.post("/Plugin.Activate")
def activate() -> Response:
    """→ ``{"Implements": ["NetworkDriver"]}``"""
    return _answer({"Implements": ["NetworkDriver"]})


@bp.post("/NetworkDriver.GetCapabilities")
def get_capabilities() -> Response:
    """→ ``{"Scope": "local", "ConnectivityScope": "local"}``"""
    return _answer(_driver().capabilities())


@bp.post("/NetworkDriver.CreateNetwork")
def create_network() -> Response:
    """``{NetworkID, Options, IPv4Data, IPv6Data}`` → ``{}``"""
    body = _body()
    _driver().create_network(CreateNetworkRequest.from_json(body), body)
    return _answer()


@bp.post("/NetworkDriver.DeleteNetwork")
def delete_network() -> Response:
    """``{NetworkID}`` → ``{}``; deleting an unknown network succeeds."""
    _driver().delete_network(NetworkRequest.from_json(_body()).network_id)
    return _answer()


@bp.post("/NetworkDriver.CreateEndpoint")
def create_endpoint() -> Response:
    """``{NetworkID, EndpointID, Interface: {Address, AddressIPv6, MacAddress}, Options}``
    → ``{"Interface": {...only the fields Docker left empty...}}``"""
    body = _body()
    answer = _driver().create_endpoint(CreateEndpointRequest.from_json(body), body)
    return _answer(answer.to_json())


@bp.post("/NetworkDriver.EndpointOperInfo")
def endpoint_oper_info() -> Response:
    """``{NetworkID, EndpointID}`` → ``{"Value": {cni.network, cni.ips, ...}}``"""
    return _answer({"Value": _driver().oper_info(EndpointRequest.from_json(_body()))})


@bp.post("/NetworkDriver.DeleteEndpoint")
def delete_endpoint() -> Response:
    """``{NetworkID, EndpointID}`` → ``{}``; deleting an unknown endpoint succeeds."""
    _driver().delete_endpoint(EndpointRequest.from_json(_body()))
    return _answer()


@bp.post("/NetworkDriver.Join")
def join() -> Response:
    """``{NetworkID, EndpointID, SandboxKey, Options}``
    → ``{InterfaceName: {SrcName, DstPrefix}, Gateway, GatewayIPv6, StaticRoutes,
    DisableGatewayService}``"""
    return _answer(_driver().join(JoinRequest.from_json(_body())).to_json())


@bp.post("/NetworkDriver.Leave")
def leave() -> Response:
    """``{NetworkID, EndpointID}`` → ``{}``"""
    _driver().leave(EndpointRequest.from_json(_body()))
    return _answer()


@bp.post("/NetworkDriver.ProgramExternalConnectivity")
def program_external_connectivity() -> Response:
    """``{NetworkID, EndpointID, Options: {com.docker.network.portmap: [...]}}`` → ``{}``"""
    _driver().program_external(EndpointRequest.from_json(_body()))
    return _answer()


@bp.post("/NetworkDriver.RevokeExternalConnectivity")
def revoke_external_connectivity() -> Response:
    """``{NetworkID, EndpointID}`` → ``{}``"""
    _driver().revoke_external(EndpointRequest.from_json(_body()))
    return _answer()


@bp.post("/NetworkDriver.DiscoverNew")
def discover_new() -> Response:
    """Node discovery notifications matter only to multi-host drivers: accepted."""
    return _answer()


@bp.post("/NetworkDriver.DiscoverDelete")
def discover_delete() -> Response:
    """See DiscoverNew."""
    return _answer()


@bp.post("/NetworkDriver.AllocateNetwork")
def allocate_network() -> Response:
    """Swarm-scope only: refused with a clear error."""
    _driver().allocate_network()
    return _answer()


@bp.post("/NetworkDriver.FreeNetwork")
def free_network() -> Response:
    """Swarm-scope only: refused with a clear error."""
    _driver().allocate_network()
    return _answer()


@bp.post("/Pycni.GC")
def pycni_gc() -> Response:
    """pycni's own admin call (``pycni gc``): ``{"DryRun": bool}`` → ``{"Actions": [...]}``.

    Served in the plugin process so reconciliation takes the same per-network locks as Docker's
    calls in flight.
    """
    body = _body() if request.get_data(cache=True) else {}  # no body: the defaults
    dry_run = body.get("DryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidRequest("DryRun must be true or false")
    return _answer({"Actions": reconcile.gc(_driver(), dry_run=dry_run)})
