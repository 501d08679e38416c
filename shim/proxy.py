"""A userland proxy for published ports: what Docker's ``docker-proxy`` does for its bridge.

The portmap plugin only writes DNAT rules, and DNAT can't carry everything Docker's bridge
carries. Docker runs ``docker-proxy`` on every published host address and port, which answers
where its own DNAT rules don't reach; pycni does the same, in process:

* **[::1]** — the kernel has no ``route_localnet`` for IPv6: a packet from ``::1`` DNAT'd to a
  container is dropped (a timeout on a dual-stack network). The endpoint's chain excludes
  ``::1`` from portmap's DNAT (``conditionsV6``, see :func:`shim.endpoint_chain.for_endpoint`), as
  Docker's own ``OUTPUT`` rule does, so the connection reaches the proxy instead.
* **IPv6 to a container with only an IPv4 address** — portmap writes no IPv6 rules for it (the
  port is refused); the proxy listens on ``[::]`` and forwards to the container's IPv4 address.
* **holding the port** — a listening socket on each published address keeps other programs
  (and Docker's own port allocator, which moves on when its proxy can't bind) off the port.

Traffic that DNAT does carry never reaches these sockets: DNAT rewrites it before it is
delivered locally. So the proxy only sees what would otherwise fail.

One :class:`Proxies` per driver serves every endpoint's listeners on one event-loop thread.
Sockets are bound in the caller's thread, so a port someone else holds is refused right at
ProgramExternalConnectivity; :meth:`Proxies.stop` closes an endpoint's listeners and every
connection through them (Revoke, DeleteEndpoint), so nothing outlives the endpoint.
SCTP is not proxied (DNAT carries it as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest
from .ports import Mapping

log = logging.getLogger(__name__)

#: How long an idle UDP flow is kept (docker-proxy's ``UDPConnTrackTimeout``).
UDP_IDLE = 90.0
#: UDP flows per listener; the oldest goes when a new client would exceed it.
UDP_FLOWS = 1024
#: How long a connection to the container may take to open.
CONNECT_TIMEOUT = 10.0
_BUFFER = 65536
_CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Listener:
    """One published address and port, and where its traffic goes."""

    protocol: str  # "tcp" | "udp"
    host_ip: str  # the address listened on ("0.0.0.0" or "::" for all)
    host_port: int
    target_ip: str
    target_port: int

    def __str__(self) -> str:
        def where(ip: str, port: int) -> str:
            return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

        return (f"{where(self.host_ip, self.host_port)}->"
                f"{where(self.target_ip, self.target_port)}/{self.protocol}")


def listeners(mappings: Iterable[Mapping], addresses: Iterable[str]) -> list[Listener]:
    """What docker-proxy would listen on for these mappings of a container with ``addresses``
    (CIDRs): each published address — both ``0.0.0.0`` and ``[::]`` for "all addresses" —
    forwarding to the container's address of the same family, else its other one."""
    ips = [ipaddress.ip_interface(a).ip for a in addresses]
    by_family = {v: next((str(ip) for ip in ips if ip.version == v), "") for v in (4, 6)}
    found: list[Listener] = []
    for m in mappings:
        if m.protocol not in ("tcp", "udp"):
            continue
        hosts = [m.host_ip] if m.host_ip else ["0.0.0.0", "::"]
        for host in hosts:
            family = ipaddress.ip_address(host).version
            target = by_family[family] or by_family[10 - family]
            if target:
                found.append(Listener(m.protocol, host, m.host_port, target, m.container_port))
    return found


def _bind(listener: Listener) -> socket.socket | None:
    """A socket bound (and, for TCP, listening) on the listener's address; InvalidRequest if
    the port is taken; None for ``[::]`` on a host without IPv6."""
    family = socket.AF_INET6 if ":" in listener.host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if listener.protocol == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT and listener.host_ip == "::":
            return None
        raise InvalidRequest(f"cannot listen on {listener}: {exc.strerror or exc}") from exc
    try:
        if family == socket.AF_INET6:
            # "::" is IPv6 only: 0.0.0.0 is a listener of its own, as with docker-proxy
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.host_ip, listener.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise InvalidRequest(
                f"cannot publish {listener.target_port}/{listener.protocol}: port "
                f"{listener.host_port} on {listener.host_ip} is already in use"
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidRequest(
                f"cannot publish {listener.target_port}/{listener.protocol}: "
                f"{listener.host_ip} is not an address of this host"
            ) from exc
        raise InvalidRequest(f"cannot listen on {listener}: {exc.strerror or exc}") from exc
    return sock


@dataclass
class _Served:
    """One endpoint's listeners on the loop, and everything open through them."""

    listeners: list[Listener]
    servers: list[asyncio.Server] = field(default_factory=list)
    udp: list[_UDPRelay] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class Proxies:
    """Every endpoint's userland proxies, on one event-loop thread started when first needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._served: dict[str, _Served] = {}

    def start(self, owner: str, mappings: Iterable[Mapping], addresses: Iterable[str]) -> None:
        """Listen for ``owner``'s mappings (replacing any it had). All or nothing: if one
        address can't be bound, none is kept, and the error says which port."""
        wanted = listeners(mappings, addresses)
        self.stop(owner)
        if not wanted:
            return
        socks: list[socket.socket] = []
        served: _Served | None = None
        try:
            bound = []
            for item in wanted:
                sock = _bind(item)
                if sock is not None:
                    socks.append(sock)
                    bound.append(item)
            served = _Served(bound)
            self._call(self._serve(served, socks)).result(_CALL_TIMEOUT)
        except BaseException:
            if served is not None and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._call(self._close(served)).result(_CALL_TIMEOUT)
            for sock in socks:
                sock.close()
            raise
        with self._lock:
            self._served[owner] = served
        log.info("proxy for %s: %s", owner[:12], ", ".join(map(str, bound)))

    def stop(self, owner: str) -> None:
        """Close ``owner``'s listeners and every connection through them. Safe to repeat."""
        with self._lock:
            served = self._served.pop(owner, None)
        if served is not None and self._loop is not None:
            self._call(self._close(served)).result(_CALL_TIMEOUT)

    def close(self) -> None:
        """Stop every proxy and the loop thread."""
        with self._lock:
            owners = list(self._served)
        for owner in owners:
            self.stop(owner)
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT)
            loop.close()

    def serving(self) -> dict[str, list[str]]:
        """What each endpoint's proxy listens on, for ``pycni inspect`` and the tests."""
        with self._lock:
            return {owner: [str(item) for item in s.listeners] for owner, s in self._served.items()}

    # --- the loop thread -------------------------------------------------------------------------

    def _call(self, coro: Any) -> Future[None]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pycni-proxy", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def _serve(self, served: _Served, socks: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for item, sock in zip(served.listeners, socks, strict=True):
            if item.protocol == "tcp":

                async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                   item: Listener = item) -> None:
                    await _relay_tcp(served, item, reader, writer)

                served.servers.append(await asyncio.start_server(accepted, sock=sock))
            else:
                served.udp.append(_UDPRelay(loop, sock, item))

    async def _close(self, served: _Served) -> None:
        for server in served.servers:
            server.close()
        for relay in served.udp:
            relay.close()
        for task in list(served.tasks):
            task.cancel()
        for server in served.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if served.tasks:
            await asyncio.wait(list(served.tasks), timeout=_CALL_TIMEOUT)


async def _relay_tcp(served: _Served, item: Listener, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """One client connection, to the container and back, until both sides are done."""
    task = asyncio.current_task()
    assert task is not None
    served.tasks.add(task)
    upstream: asyncio.StreamWriter | None = None
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(item.target_ip, item.target_port), CONNECT_TIMEOUT)
        upstream = up_writer
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
    except (TimeoutError, OSError) as exc:
        log.debug("proxy %s: %s", item, exc)
    finally:
        served.tasks.discard(task)
        for w in (writer, upstream):
            if w is not None:
                w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; pass the end of the stream on as a half-close, as docker-proxy does."""
    try:
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


class _UDPRelay:
    """One UDP listener: a connected socket to the container per client address, kept while the
    client is active (``UDP_IDLE``), replies sent back from the listener's own address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 item: Listener) -> None:
        self.loop = loop
        self.sock = sock
        self.item = item
        self.flows: dict[Any, tuple[socket.socket, asyncio.TimerHandle]] = {}
        loop.add_reader(sock.fileno(), self._from_client)

    def _from_client(self) -> None:
        try:
            data, client = self.sock.recvfrom(_BUFFER)
        except OSError:
            return
        flow = self.flows.get(client)
        if flow is None:
            try:
                upstream = self._open(client)
            except OSError as exc:
                log.debug("proxy %s: %s", self.item, exc)
                return
        else:
            upstream, timer = flow
            timer.cancel()
        self.flows[client] = (upstream, self.loop.call_later(UDP_IDLE, self._expire, client))
        with contextlib.suppress(OSError):
            upstream.send(data)

    def _open(self, client: Any) -> socket.socket:
        if len(self.flows) >= UDP_FLOWS:
            self._expire(next(iter(self.flows)))
        family = socket.AF_INET6 if ":" in self.item.target_ip else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_DGRAM)
        try:
            upstream.setblocking(False)
            upstream.connect((self.item.target_ip, self.item.target_port))
        except OSError:
            upstream.close()
            raise
        self.loop.add_reader(upstream.fileno(), self._from_container, client, upstream)
        return upstream

    def _from_container(self, client: Any, upstream: socket.socket) -> None:
        try:
            data = upstream.recv(_BUFFER)
        except OSError:
            return  # e.g. ICMP port unreachable: the container has no listener yet
        with contextlib.suppress(OSError):
            self.sock.sendto(data, client)

    def _expire(self, client: Any) -> None:
        flow = self.flows.pop(client, None)
        if flow is not None:
            upstream, timer = flow
            timer.cancel()
            self.loop.remove_reader(upstream.fileno())
            upstream.close()

    def close(self) -> None:
        for client in list(self.flows):
            self._expire(client)
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
