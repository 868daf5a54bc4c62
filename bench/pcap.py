"""Reads the UDP payloads of a pcap file (as tcpdump -w writes it on Linux loopback),
with the kernel's capture timestamps. Only what the benchmark needs: IPv4 over Ethernet
(tcpdump's link type on `lo`) or Linux cooked capture, no fragments, no IPv6.

Standard library only, so the benchmark needs no packet library. The smoke
(`bench/run.sh --smoke`) reads a capture tcpdump wrote and fails unless every REFER is
paired with its target INVITE, so this reader is exercised in CI.
"""
import struct
from typing import Iterator

# Magic numbers of the classic pcap format, as read little- or big-endian.
_MICROSECONDS = 0xA1B2C3D4
_NANOSECONDS = 0xA1B23C4D

# Link-layer header before the IP packet, by link type.
_LINK_HEADER = {1: 14, 113: 16, 276: 20}  # Ethernet, Linux SLL, Linux SLL2
_ETHERTYPE_AT = {1: 12, 113: 14, 276: 0}
_IPV4 = 0x0800
_UDP = 17


class PcapError(Exception):
    pass


def udp_payloads(path: str) -> Iterator[tuple[float, int, int, bytes]]:
    """(timestamp in seconds, source port, destination port, payload) of every IPv4 UDP
    datagram in the file, in capture order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise PcapError(f"{path}: {len(data)} bytes, shorter than a pcap header")
    for order in ("<", ">"):
        magic = struct.unpack(order + "I", data[:4])[0]
        if magic in (_MICROSECONDS, _NANOSECONDS):
            break
    else:
        raise PcapError(f"{path}: not a pcap file (magic {data[:4].hex()})")
    fraction = 1e-9 if magic == _NANOSECONDS else 1e-6
    link = struct.unpack(order + "I", data[20:24])[0]
    if link not in _LINK_HEADER:
        raise PcapError(f"{path}: link type {link} is not Ethernet or Linux cooked")
    link_len, ethertype_at = _LINK_HEADER[link], _ETHERTYPE_AT[link]
    record = struct.Struct(order + "IIII")
    at = 24
    while at + record.size <= len(data):
        seconds, frac, captured, _ = record.unpack_from(data, at)
        at += record.size
        frame = data[at:at + captured]
        at += captured
        if len(frame) < link_len + 28:
            continue
        if struct.unpack_from(">H", frame, ethertype_at)[0] != _IPV4:
            continue
        ip = frame[link_len:]
        header_len = (ip[0] & 0x0F) * 4
        if ip[9] != _UDP or len(ip) < header_len + 8:
            continue
        source, destination, length = struct.unpack_from(">HHH", ip, header_len)
        payload = ip[header_len + 8:header_len + length]
        yield seconds + frac * fraction, source, destination, payload
