"""Docker's port bindings and host-port allocation (:mod:`shim.ports`).

The socket probe is replaced by a fake list of busy ports, so no test depends on what this host
happens to have bound, except the one that proves the real probe with a loopback socket of its
own.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from shim import ports
from shim.errors import InvalidRequest
from shim.ports import Binding, Mapping, allocate, ephemeral_range, parse
from shim.protocol import PORT_MAP

pytestmark = pytest.mark.unit


def docker(**fields: Any) -> dict[str, Any]:
    """One ``com.docker.network.portmap`` entry as Docker sends it (tcp 80 → 8080 by default)."""
    return {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
            "HostPortEnd": 8080, **fields}


def options(*entries: dict[str, Any]) -> dict[str, Any]:
    return {PORT_MAP: list(entries)}


def tcp(host_port: int, end: int | None = None, host_ip: str = "", port: int = 80) -> Binding:
    return Binding("tcp", port, host_ip, host_port, host_port if end is None else end)


@pytest.fixture
def busy(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str, int]]:
    """Ports some socket on the host holds: ``(protocol, host IP, port)``, host IP "" = any."""
    held: set[tuple[str, str, int]] = set()

    def socket_free(protocol: str, host_ip: str, port: int) -> bool:
        return not any(p == protocol and n == port and (not ip or not host_ip or ip == host_ip)
                       for p, ip, n in held)

    monkeypatch.setattr(ports, "_socket_free", socket_free)
    return held


# --- parse ---------------------------------------------------------------------------------------


def test_no_bindings() -> None:
    assert parse({}) == []
    assert parse({PORT_MAP: None}) == parse({PORT_MAP: []}) == []


def test_a_binding_per_protocol() -> None:
    got = parse(options(docker(), docker(Proto=17, Port=53, HostPort=5353, HostPortEnd=0),
                        docker(Proto=132, Port=9, HostPort=9999, HostPortEnd=None)))
    assert got == [Binding("tcp", 80, "", 8080, 8080), Binding("udp", 53, "", 5353, 5353),
                   Binding("sctp", 9, "", 9999, 9999)]


def test_a_range_an_ephemeral_port_and_a_host_ip() -> None:
    got = parse(options(docker(HostPort=8000, HostPortEnd=8010),
                        docker(HostPort=0, HostPortEnd=0),
                        docker(HostIP="127.0.0.1"),
                        docker(HostIP="0:0::1")))
    assert got == [tcp(8000, 8010), tcp(0), tcp(8080, host_ip="127.0.0.1"),
                   tcp(8080, host_ip="::1")]  # addresses in their canonical form


def test_missing_host_fields_mean_any_address_and_any_port() -> None:
    assert parse(options({"Proto": 6, "Port": 80})) == [tcp(0)]


@pytest.mark.parametrize(("value", "message"), [
    ({"HostPort": 80}, "must be a list"),
    ("80:80", "must be a list"),
    ([7], "entries must be objects"),
    ([docker(Proto=1)], "port binding protocol 1 is not tcp, udp or sctp"),
    ([docker(Proto="tcp")], "port binding protocol 'tcp' is not tcp, udp or sctp"),
    ([docker(Proto=None)], "protocol None"),
    ([docker(HostIP=7)], "HostIP must be a string"),
    ([docker(HostIP="localhost")], "HostIP 'localhost' is not an address"),
    ([docker(HostPort=-1)], "HostPort -1 is out of range"),
    ([docker(HostPort=65536, HostPortEnd=65536)], "HostPort 65536 is out of range"),
    ([docker(HostPort="80")], "HostPort must be a number"),
    ([docker(HostPort=True)], "HostPort must be a number"),
    ([docker(HostPortEnd=70000)], "HostPortEnd 70000 is out of range"),
    ([docker(HostPort=8010, HostPortEnd=8000)], "port range 8010-8000 ends before it starts"),
    ([docker(Port=0)], "Port 0 is out of range"),
    ([docker(Port=None)], "Port must be a number"),
    ([docker(Port=80.0)], "Port must be a number"),
])
def test_bad_bindings(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse({PORT_MAP: value})


# --- the CNI form --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mapping", "cni", "text"), [
    (Mapping("tcp", 80, 8080), {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
     "0.0.0.0:8080->80/tcp"),
    (Mapping("udp", 53, 5353, "127.0.0.1"),
     {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
     "127.0.0.1:5353->53/udp"),
    (Mapping("tcp", 80, 8080, "::1"),
     {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"},
     "[::1]:8080->80/tcp"),
])
def test_a_mapping_round_trips_through_cni(mapping: Mapping, cni: dict[str, Any],
                                           text: str) -> None:
    assert mapping.to_cni() == cni
    assert Mapping.from_cni(cni) == mapping
    assert str(mapping) == text
    assert mapping.key() == (mapping.protocol, mapping.host_ip, mapping.host_port)


# --- allocate ------------------------------------------------------------------------------------


def test_a_fixed_port(busy: set[tuple[str, str, int]]) -> None:
    assert allocate([tcp(8080)], []) == [Mapping("tcp", 80, 8080)]
    assert allocate([tcp(8080, host_ip="127.0.0.1")], []) == [Mapping("tcp", 80, 8080,
                                                                      "127.0.0.1")]


def test_a_fixed_port_another_endpoint_published(busy: set[tuple[str, str, int]]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        allocate([tcp(8080)], [("tcp", "", 8080)])
    assert str(caught.value) == (
        "cannot publish 80/tcp: port 8080 on all addresses is already in use")


def test_a_fixed_port_a_socket_holds(busy: set[tuple[str, str, int]]) -> None:
    busy.add(("udp", "127.0.0.1", 5353))
    with pytest.raises(InvalidRequest) as caught:
        allocate([Binding("udp", 53, "127.0.0.1", 5353, 5353)], [])
    assert str(caught.value) == (
        "cannot publish 53/udp: port 5353 on 127.0.0.1 is already in use")


@pytest.mark.parametrize(("held", "wanted"), [
    ("", ""),
    ("", "127.0.0.1"),  # a wildcard binding holds the port on every address
    ("127.0.0.1", ""),  # and a specific one keeps the wildcard from it
    ("127.0.0.1", "127.0.0.1"),
    ("::1", ""),
])
def test_wildcard_and_specific_addresses_collide(busy: set[tuple[str, str, int]], held: str,
                                                 wanted: str) -> None:
    with pytest.raises(InvalidRequest, match="is already in use"):
        allocate([tcp(8080, host_ip=wanted)], [("tcp", held, 8080)])


@pytest.mark.parametrize("held", [("tcp", "127.0.0.2", 8080), ("udp", "", 8080),
                                  ("tcp", "", 8081), ("sctp", "127.0.0.1", 8080)])
def test_other_addresses_protocols_and_ports_do_not_collide(
        busy: set[tuple[str, str, int]], held: tuple[str, str, int]) -> None:
    assert allocate([tcp(8080, host_ip="127.0.0.1")], [held]) == [
        Mapping("tcp", 80, 8080, "127.0.0.1")]


def test_a_range_gives_its_first_free_port(busy: set[tuple[str, str, int]]) -> None:
    busy.add(("tcp", "", 8001))
    got = allocate([tcp(8000, 8003)], [("tcp", "", 8000)])
    assert got == [Mapping("tcp", 80, 8002)]


def test_a_full_range(busy: set[tuple[str, str, int]]) -> None:
    busy.add(("tcp", "", 8001))
    with pytest.raises(InvalidRequest) as caught:
        allocate([tcp(8000, 8002, host_ip="127.0.0.1")], [("tcp", "", 8000), ("tcp", "", 8002)])
    assert str(caught.value) == (
        "cannot publish 80/tcp: port 8000-8002 on 127.0.0.1 is already in use")


def test_bindings_of_one_call_do_not_take_the_same_port(
        busy: set[tuple[str, str, int]]) -> None:
    got = allocate([tcp(8000, 8001, port=80), tcp(8000, 8001, port=81)], [])
    assert got == [Mapping("tcp", 80, 8000), Mapping("tcp", 81, 8001)]
    with pytest.raises(InvalidRequest, match="cannot publish 81/tcp: port 8000 on all"):
        allocate([tcp(8000, port=80), tcp(8000, port=81)], [])


def test_the_same_port_for_tcp_and_udp(busy: set[tuple[str, str, int]]) -> None:
    got = allocate([tcp(53, port=53), Binding("udp", 53, "", 53, 53)], [])
    assert got == [Mapping("tcp", 53, 53), Mapping("udp", 53, 53)]


EPHEMERAL = (32768, 60999)  # this kernel's default ip_local_port_range


def test_ephemeral_ports_in_order_from_the_range_start(busy: set[tuple[str, str, int]]) -> None:
    """As Docker's port allocator: -p 80 on a fresh engine gets 32768, then 32769, ..."""
    got = allocate([tcp(0), tcp(0, port=81)], [], ephemeral=EPHEMERAL)
    assert [(m.container_port, m.host_port) for m in got] == [(80, 32768), (81, 32769)]


def test_the_search_starts_after_the_last_port_found(busy: set[tuple[str, str, int]]) -> None:
    """Docker's ``portRange.last``: a released port is not handed out again straight away."""
    cursors: ports.Cursors = {}
    assert allocate([tcp(0)], [], cursors, EPHEMERAL)[0].host_port == 32768
    busy.add(("tcp", "", 32770))  # some socket holds it: skipped
    assert allocate([tcp(0)], [], cursors, EPHEMERAL)[0].host_port == 32769
    assert allocate([tcp(0)], [], cursors, EPHEMERAL)[0].host_port == 32771
    # Another protocol, address or range has a cursor of its own.
    assert allocate([Binding("udp", 53, "", 0, 0)], [], cursors, EPHEMERAL)[0].host_port == 32768
    assert allocate([tcp(0, host_ip="127.0.0.1")], [], cursors, EPHEMERAL)[0].host_port == 32768
    assert allocate([tcp(8000, 8002)], [], cursors)[0].host_port == 8000
    assert allocate([tcp(8000, 8002)], [], cursors)[0].host_port == 8001
    # A fixed port moves no cursor.
    assert allocate([tcp(32772)], [], cursors, EPHEMERAL)[0].host_port == 32772
    assert allocate([tcp(0)], [], cursors, EPHEMERAL)[0].host_port == 32772


def test_the_search_wraps_round_at_the_range_end(busy: set[tuple[str, str, int]]) -> None:
    cursors: ports.Cursors = {}
    got = [allocate([tcp(8000, 8002)], [("tcp", "", 8001)], cursors)[0].host_port
           for _ in range(3)]
    assert got == [8000, 8002, 8000]


def test_no_free_ephemeral_port(busy: set[tuple[str, str, int]]) -> None:
    busy.update(("tcp", "", port) for port in range(40000, 40011))
    with pytest.raises(InvalidRequest) as caught:
        allocate([tcp(0)], [], ephemeral=(40000, 40010))
    assert str(caught.value) == (
        "cannot publish 80/tcp: a free ephemeral port on all addresses is already in use")


@pytest.mark.parametrize(("content", "expected"), [
    ("32768\t60999\n", (32768, 60999)),
    ("1024 65535", (1024, 65535)),
    ("", (49153, 60999)),  # Docker's fallback when the kernel's range can't be read
    ("60999 32768", (49153, 60999)),
    ("0 10", (49153, 60999)),
    ("a b", (49153, 60999)),
])
def test_the_ephemeral_range_is_the_kernels(tmp_path: Path, content: str,
                                            expected: tuple[int, int]) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(content)
    assert ephemeral_range(str(path)) == expected
    assert ephemeral_range(str(tmp_path / "missing")) == (49153, 60999)


def test_the_publisher_reads_the_kernels_range() -> None:
    assert ports.Publisher().ephemeral == ephemeral_range()
    assert ports.Publisher((40000, 40010)).ephemeral == (40000, 40010)


def test_the_publisher_keeps_its_cursor(busy: set[tuple[str, str, int]]) -> None:
    pub = ports.Publisher(EPHEMERAL)
    with pub.reserve("a", [tcp(0)]) as first:
        pass
    pub.release("a")
    with pub.reserve("b", [tcp(0)]) as second:
        pass
    assert [first[0].host_port, second[0].host_port] == [32768, 32769]


def test_nothing_to_allocate(busy: set[tuple[str, str, int]]) -> None:
    assert allocate([], [("tcp", "", 8080)]) == []


def test_the_real_probe_sees_a_bound_socket() -> None:
    """No fake here: a socket of the test's own, on loopback, holds a port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        for host_ip in ("127.0.0.1", ""):
            with pytest.raises(InvalidRequest, match=f"port {port} on .* is already in use"):
                allocate([tcp(port, host_ip=host_ip)], [])


def test_the_real_probe_of_all_addresses_sees_ipv6_too() -> None:
    """pycni's proxy listens on [::] as well as 0.0.0.0 for "all addresses": a port some
    socket holds in IPv6 only is not free for it either (loopback, the test's own socket)."""
    try:
        held = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        held.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with held:
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(InvalidRequest, match=f"port {port} on all addresses is already"):
            allocate([tcp(port)], [])
        assert allocate([tcp(port, host_ip="127.0.0.1")], []) == [
            Mapping("tcp", 80, port, "127.0.0.1")]


def test_a_connection_in_time_wait_does_not_hold_the_port() -> None:
    """The proxy closes first, so its connections linger in TIME_WAIT on the published port:
    that must not keep the port from the container when it starts again (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = server.accept()
            conn.close()  # the server side closes first: TIME_WAIT is on its side, the port
            assert client.recv(1) == b""
    assert allocate([tcp(port, host_ip="127.0.0.1")], []) == [
        Mapping("tcp", 80, port, "127.0.0.1")]
