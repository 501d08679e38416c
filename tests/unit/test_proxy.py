"""The userland proxy for published ports (:mod:`shim.proxy`).

Which addresses it listens on is pure; the relaying itself is proven with real sockets on
loopback only: a "container" server of the test's own on 127.0.0.1, the proxy on [::1] (IPv6 to
an IPv4-only container, the case DNAT can't carry) or 127.0.0.1. Every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shim.errors import InvalidRequest
from shim.ports import Mapping
from shim.proxy import Listener, Proxies, listeners

pytestmark = pytest.mark.unit

OWNER = "ab" * 32


def free_port(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing on loopback holds in either family (bound once, then let go)."""
    for _ in range(50):
        with socket.socket(family, kind) as probe:
            probe.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
            port: int = probe.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6, kind) as other:
                other.bind(("::1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free loopback port")


def have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback")


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    p = Proxies()
    yield p
    p.close()


@pytest.fixture
def tcp_upstream() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each connection with ``echo:`` + what it got,
    once the client half-closes."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                conn.sendall(b"echo:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(5)
    server.close()


@pytest.fixture
def udp_upstream() -> Iterator[int]:
    """A UDP server on 127.0.0.1 that echoes each datagram with ``echo:`` in front."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = server.recvfrom(4096)
            except OSError:
                continue
            server.sendto(b"echo:" + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(5)
    server.close()


def tcp_ask(host: str, port: int, data: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # the half-close reaches the container
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got


def bindable(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# --- what it listens on --------------------------------------------------------------------------


def test_all_addresses_means_both_families_each_to_its_own_family() -> None:
    got = listeners([Mapping("tcp", 80, 8080)], ["10.201.9.2/24", "fd00:201:9::2/64"])
    assert got == [Listener("tcp", "0.0.0.0", 8080, "10.201.9.2", 80),
                   Listener("tcp", "::", 8080, "fd00:201:9::2", 80)]
    assert [str(i) for i in got] == ["0.0.0.0:8080->10.201.9.2:80/tcp",
                                     "[::]:8080->[fd00:201:9::2]:80/tcp"]


def test_ipv6_to_an_ipv4_only_container_goes_to_its_ipv4_address() -> None:
    got = listeners([Mapping("udp", 53, 5353), Mapping("tcp", 80, 8080, "::1")],
                    ["10.201.9.2/24"])
    assert got == [Listener("udp", "0.0.0.0", 5353, "10.201.9.2", 53),
                   Listener("udp", "::", 5353, "10.201.9.2", 53),
                   Listener("tcp", "::1", 8080, "10.201.9.2", 80)]


def test_a_host_address_is_listened_on_alone_and_sctp_not_at_all() -> None:
    got = listeners([Mapping("tcp", 80, 8080, "127.0.0.1"), Mapping("sctp", 9, 9999)],
                    ["10.201.9.2/32", "fd00:201:9::2/128"])
    assert got == [Listener("tcp", "127.0.0.1", 8080, "10.201.9.2", 80)]


def test_no_address_no_listener() -> None:
    assert listeners([Mapping("tcp", 80, 8080)], []) == []


# --- relaying, on loopback -----------------------------------------------------------------------


@needs_ipv6
def test_tcp_from_ipv6_loopback_to_an_ipv4_container(proxies: Proxies, tcp_upstream: int) -> None:
    port = free_port()
    proxies.start(OWNER, [Mapping("tcp", tcp_upstream, port, "::1")], ["127.0.0.1/8"])
    assert proxies.serving() == {OWNER: [f"[::1]:{port}->127.0.0.1:{tcp_upstream}/tcp"]}
    assert tcp_ask("::1", port, b"hello") == b"echo:hello"
    big = bytes(range(256)) * 2048  # 512 KiB: more than one read, in both directions
    assert tcp_ask("::1", port, big) == b"echo:" + big
    proxies.stop(OWNER)
    assert proxies.serving() == {}
    assert bindable("::1", port)  # the port is free again
    proxies.stop(OWNER)  # twice is fine


@needs_ipv6
def test_udp_from_ipv6_loopback_to_an_ipv4_container(proxies: Proxies, udp_upstream: int) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    proxies.start(OWNER, [Mapping("udp", udp_upstream, port, "::1")], ["127.0.0.1/8"])
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        for n in range(3):
            client.sendto(b"ping%d" % n, ("::1", port))
            data, peer = client.recvfrom(4096)
            assert data == b"echo:ping%d" % n and peer[1] == port  # from the published port
    proxies.stop(OWNER)
    assert bindable("::1", port, socket.SOCK_DGRAM)


def test_stop_closes_open_connections(proxies: Proxies) -> None:
    """A connection still open when the endpoint goes is closed, as when docker-proxy exits."""
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    port = free_port()
    proxies.start(OWNER, [Mapping("tcp", upstream.getsockname()[1], port, "127.0.0.1")],
                  ["127.0.0.1/8"])
    with upstream, socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        upstream.settimeout(5)
        conn, _ = upstream.accept()
        with conn:
            proxies.stop(OWNER)
            client.settimeout(5)
            assert client.recv(10) == b""  # closed by the proxy
            conn.settimeout(5)
            assert conn.recv(10) == b""


def test_a_taken_port_is_refused_and_nothing_is_kept(proxies: Proxies) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        other = free_port()
        with pytest.raises(InvalidRequest, match=f"port {port} on 127.0.0.1 is already in use"):
            proxies.start(OWNER, [Mapping("tcp", 80, other, "127.0.0.1"),
                                  Mapping("tcp", 81, port, "127.0.0.1")], ["10.201.9.2/24"])
    assert proxies.serving() == {}
    assert bindable("127.0.0.1", other)  # the first listener was let go


def test_starting_again_replaces_the_listeners(proxies: Proxies, tcp_upstream: int) -> None:
    first, second = free_port(), free_port()
    proxies.start(OWNER, [Mapping("tcp", tcp_upstream, first, "127.0.0.1")], ["127.0.0.1/8"])
    proxies.start(OWNER, [Mapping("tcp", tcp_upstream, second, "127.0.0.1")], ["127.0.0.1/8"])
    assert bindable("127.0.0.1", first)
    assert tcp_ask("127.0.0.1", second, b"x") == b"echo:x"


def test_close_stops_everything(tcp_upstream: int) -> None:
    proxies = Proxies()
    port = free_port()
    proxies.start(OWNER, [Mapping("tcp", tcp_upstream, port, "127.0.0.1")], ["127.0.0.1/8"])
    started = time.monotonic()
    proxies.close()
    assert time.monotonic() - started < 5
    assert proxies.serving() == {} and bindable("127.0.0.1", port)
    proxies.close()  # twice is fine
