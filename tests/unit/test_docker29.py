"""What Docker 29 sends a remote driver that 28 did not, through the API routes.

Docker 29 (moby ``daemon/libnetwork/drivers/remote/driver.go``) keeps each endpoint's gateway role
itself and sends ProgramExternalConnectivity when an endpoint becomes the container's gateway and
RevokeExternalConnectivity when it stops being one — on Leave too, and for endpoints whose
Program failed or that never published anything; a role change may Program again without a
Revoke between; ``no_proxy_6to4`` only appears when true; and after a live-restore restart only
Leave and DeleteEndpoint come. The request bodies keep 28's shape.
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.unit.test_api import ok as call
from tests.world import EP, NET, World

PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"


def program_body(port: int = 80, **options: Any) -> dict[str, Any]:
    """Docker 29's Program: Join's options, the port list unsorted, ``no_proxy_6to4`` only when
    true."""
    return {"NetworkID": NET, "EndpointID": EP, "Options": {
        PORTMAP: [{"Proto": 6, "IP": "", "Port": port, "HostIP": "127.0.0.1", "HostPort": 0,
                   "HostPortEnd": 0}],
        EXPOSED: [{"Proto": 6, "Port": port}],
        **options}}


def endpoint(world: World, client: FlaskClient) -> None:
    world.create_network()
    call(client, "CreateEndpoint", world.endpoint_request(address="10.200.9.7/24"))
    call(client, "Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/"
                          "netns/0123456789ab", "Options": {}})


def held(world: World) -> dict[str, Any]:
    return world.driver.ports.held()


def test_revoke_for_an_endpoint_that_never_published_is_no_error(
        client: FlaskClient, world: World) -> None:
    endpoint(world, client)
    assert call(client, "RevokeExternalConnectivity", {"NetworkID": NET, "EndpointID": EP}) == {}
    assert held(world) == {}
    # and for one pycni does not know at all (Docker 29 may Revoke after a failed Program)
    assert call(client, "RevokeExternalConnectivity",
                {"NetworkID": NET, "EndpointID": "e" * 64}) == {}


def test_program_again_without_a_revoke_keeps_the_ports_it_has(
        client: FlaskClient, world: World) -> None:
    endpoint(world, client)
    call(client, "ProgramExternalConnectivity", program_body())
    first = held(world)
    assert list(first) == [EP]
    # the IPv6 gateway role arrives later: Program again, the same options
    call(client, "ProgramExternalConnectivity",
         program_body(**{"com.docker.network.driver.private.no_proxy_6to4": True}))
    assert held(world) == first


def test_a_revoke_on_leave_then_program_on_the_next_join_publishes_again(
        client: FlaskClient, world: World) -> None:
    endpoint(world, client)
    call(client, "ProgramExternalConnectivity", program_body())
    call(client, "RevokeExternalConnectivity", {"NetworkID": NET, "EndpointID": EP})
    assert held(world) == {} and world.proxies.serving() == {}
    call(client, "ProgramExternalConnectivity", program_body())
    assert list(held(world)) == [EP]
    call(client, "RevokeExternalConnectivity", {"NetworkID": NET, "EndpointID": EP})
    call(client, "Leave", {"NetworkID": NET, "EndpointID": EP})
    call(client, "DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert held(world) == {} and world.leftovers() == {}


def test_leave_and_delete_without_a_revoke_still_take_the_ports(
        client: FlaskClient, world: World) -> None:
    """After a live-restore restart Docker 29 sends only Leave and DeleteEndpoint."""
    endpoint(world, client)
    call(client, "ProgramExternalConnectivity", program_body())
    call(client, "Leave", {"NetworkID": NET, "EndpointID": EP})
    call(client, "DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert held(world) == {} and world.proxies.serving() == {} and world.rules.dnat == {}
    assert world.leftovers() == {}
