#!/usr/bin/env python3
"""UDP datagrams with a forged IPv4 source, for test/push-network.test.ts.

    spoof.py SRC_ADDR SRC_PORT DST_ADDR DST_PORT HEX_PAYLOAD...
    spoof.py --probe

Sends each payload (given in hex) as one UDP datagram from SRC_ADDR:SRC_PORT
to DST_ADDR:DST_PORT through a raw socket (IPPROTO_RAW: the IPv4 and UDP
headers are built here; the kernel fills in the IP checksum). Prints `sent N`.
--probe only opens the raw socket: exit 0 if it can, else 1 and why.
Needs root (CAP_NET_RAW).
"""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def datagram(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp_sum = checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, length, udp_sum) + payload
    # Version 4, IHL 5; total length; DF; TTL 64; the kernel fills in the checksum.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def main() -> int:
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as err:
        print(f"cannot open a raw socket: {err}", file=sys.stderr)
        return 1
    if sys.argv[1:] == ["--probe"]:
        return 0
    src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sent = 0
    for text in sys.argv[5:]:
        raw.sendto(datagram(src, sport, dst, dport, bytes.fromhex(text)), (dst, 0))
        sent += 1
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
