"""Telling a link's neighbours that its addresses are at its MAC now: a gratuitous ARP per IPv4
address and an unsolicited Neighbor Advertisement per IPv6 one, from a packet socket opened in
the link's namespace (:func:`shim.netlink.netns_socket`)."""

from __future__ import annotations

import errno
import fcntl
import functools
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable

from . import netlink
from .errors import NetlinkFailure

log = logging.getLogger(__name__)

_BROADCAST = b"\xff" * 6
_ALL_NODES_MAC = bytes.fromhex("333300000001")  # ff02::1 on Ethernet
_ALL_NODES = ipaddress.IPv6Address("ff02::1")
_ETH_P_ARP = 0x0806
_ETH_P_IPV6 = 0x86DD
_ICMPV6 = 58
_NA = 136
_NA_OVERRIDE = 0x20000000
_OPT_TARGET_LLADDR = 2
_SIOCGIFHWADDR = 0x8927


def _gratuitous_arp(mac: bytes, *, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP request for ``ip`` from ``ip`` itself, broadcast (what ``arping -U`` and the
    kernel's ``arp_notify`` send): every neighbour holding an entry for ``ip`` takes ``mac``."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip.packed, b"\0" * 6, ip.packed)
    return _BROADCAST + mac + struct.pack("!H", _ETH_P_ARP) + arp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _unsolicited_na(mac: bytes, *, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for ``ip`` to all nodes, with the
    Override flag and the target link-layer address: neighbours update an entry they hold."""
    body = struct.pack("!BBHI16sBB6s", _NA, 0, 0, _NA_OVERRIDE, ip.packed, _OPT_TARGET_LLADDR, 1,
                       mac)
    pseudo = ip.packed + _ALL_NODES.packed + struct.pack("!I3xB", len(body), _ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), _ICMPV6, 255, ip.packed,
                         _ALL_NODES.packed)
    return _ALL_NODES_MAC + mac + struct.pack("!H", _ETH_P_IPV6) + header + body


def announce(ns: str, ifname: str, addresses: Iterable[str]) -> None:
    """Tell ``ifname``'s neighbours (in netns ``ns``) that ``addresses`` are at its MAC now.

    A gratuitous ARP per IPv4 address and an unsolicited Neighbor Advertisement per IPv6 one, as
    Docker 27's bridge sends when an endpoint comes up. A container restarted with the same
    address but a new MAC is otherwise unreachable from neighbours that still hold the old MAC,
    until their entry times out (tens of seconds).

    One packet socket in ``ns`` reads the MAC and sends the frames. Closing a packet socket
    waits for an RCU grace period in the kernel (``synchronize_net``, ~10 ms here), so it is
    closed by a thread of its own: the caller doesn't wait for it.
    """
    frames: list[Callable[[bytes], bytes]] = []
    for cidr in addresses:
        ip = ipaddress.ip_interface(cidr).ip
        if isinstance(ip, ipaddress.IPv4Address):
            frames.append(functools.partial(_gratuitous_arp, ip=ip))
        elif not ip.is_link_local:
            frames.append(functools.partial(_unsolicited_na, ip=ip))
    if not frames:
        return
    try:
        sock = netlink.netns_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise NetlinkFailure(f"cannot announce {ifname} in {ns}: {exc.strerror or exc}") from exc
    try:
        try:
            got = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR,
                              struct.pack("256s", ifname.encode()[:15]))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise NetlinkFailure(f"no interface {ifname} in {ns} to announce") from exc
            raise
        mac = got[18:24]
        for frame in frames:
            sock.sendto(frame(mac), (ifname, 0))
    except OSError as exc:
        raise NetlinkFailure(f"cannot announce {ifname} in {ns}: {exc.strerror or exc}") from exc
    finally:
        threading.Thread(target=sock.close, name="pycni-announce", daemon=True).start()
