#!/usr/bin/env python3
"""Writes the crafted golden captures. Standard library only. Run from this folder.
cooked.pcapng: LINUX_SLL2 frames in pcapng (nanosecond timestamps) covering directions and
interface indexes, IPv4 and IPv6 fragments, an ICMP error, GRE, a frame cut by the snaplen
and a frame with a bad IP header length.
links.*.pcap: the other link types (EN10MB with an 802.1ad/802.1Q stack, LINUX_SLL, RAW,
NULL, LOOP) carrying SCTP, DCCP, UDPLITE, GRE v1, ICMPv6 errors and IPv6 extension headers."""
import struct

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def v4(src, dst, proto, payload, ident=1, frag=0x4000, ihl=5):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                    bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload

def a6(s):
    import ipaddress
    return ipaddress.IPv6Address(s).packed

def v6(src, dst, nxt, payload):
    return struct.pack("!IHBB", 0x60000000, len(payload), nxt, 64) + a6(src) + a6(dst) + payload

def udp(sp, dp, data=b""):
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data

def sll2(ip, ptype, ifindex):
    proto = 0x86dd if ip[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHIHBB", proto, 0, ifindex, 1, ptype, 6) + b"\x02\0\0\0\0\x01\0\0" + ip

frames = []
def add(frame, wire=None):
    frames.append((frame, wire or len(frame)))

# A UDP request in on interface 2 and out on interface 3 (a router's "any" capture).
req = v4("198.51.100.2", "203.0.113.2", 17, udp(4000, 53, b"query"))
add(sll2(req, 0, 2)); add(sll2(req, 4, 3))
# IPv4 datagram of 3000 bytes in 3 fragments (1480-byte pieces).
body = udp(4001, 53, bytes(i % 251 for i in range(2992)))
for off in range(0, len(body), 1480):
    piece = body[off:off + 1480]
    more = off + 1480 < len(body)
    add(sll2(v4("198.51.100.2", "203.0.113.2", 17, piece, ident=77, frag=(off // 8) | (0x2000 if more else 0)), 0, 2))
# IPv6 datagram in 2 fragments.
body6 = udp(4002, 53, bytes(range(200)) * 10)
for off, size in ((0, 1232), (1232, len(body6) - 1232)):
    more = off + size < len(body6)
    fh = struct.pack("!BBHI", 17, 0, off | (1 if more else 0), 9)
    add(sll2(v6("2001:db8:1::2", "2001:db8:2::2", 44, fh + body6[off:off + size]), 0, 2))
# An ICMP port unreachable quoting the UDP request, coming back.
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + req[:28]
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
add(sll2(v4("203.0.113.2", "198.51.100.2", 1, icmp), 0, 3))
# GRE v0 with key 0x2a.
add(sll2(v4("198.51.100.2", "203.0.113.2", 47, struct.pack("!HHI", 0x2000, 0x0800, 0x2a) + req), 0, 2))
# A frame cut by a 64-byte snaplen (wire length larger), and a bad IP header length.
long = sll2(v4("198.51.100.2", "203.0.113.2", 6, struct.pack("!HHIIBBHHH", 5000, 80, 1, 0, 0x50, 0x02, 65535, 0, 0) + b"x" * 400), 4, 3)
add(long[:64], len(long))
add(sll2(v4("198.51.100.2", "203.0.113.2", 17, udp(1, 2), ihl=4), 0, 2))

def block(btype, body):
    pad = (-len(body)) % 4
    total = 12 + len(body) + pad
    return struct.pack("<II", btype, total) + body + b"\0" * pad + struct.pack("<I", total)

out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
tsresol = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)    # if_tsresol = 10^-9, end of options
out += block(1, struct.pack("<HHI", 276, 0, 262144) + tsresol)
t = 1_700_000_000_000_000_000
for i, (f, wire) in enumerate(frames):
    ts = t + i * 1_000_123
    out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xffffffff, len(f), wire) + f + b"\0" * ((-len(f)) % 4))
open("cooked.pcapng", "wb").write(out)
print(len(frames), "frames")

def pcap(path, linktype, frames):
    out = struct.pack("<IHHiIII", 0xa1b23c4d, 2, 4, 0, 0, 262144, linktype)
    t = 1_700_000_100_000_000_000
    for i, f in enumerate(frames):
        ts = t + i * 250_000_001
        out += struct.pack("<IIII", ts // 10**9, ts % 10**9, len(f), len(f)) + f
    open(path, "wb").write(out)

sctp = struct.pack("!HHII", 5000, 38412, 0xdeadbeef, 0) + bytes([1, 0, 0, 20]) + bytes(16)
dccp = struct.pack("!HHBBHBBHHI", 7000, 7001, 3, 0, 0, 0x01 << 1 | 1, 0, 0, 0, 0)   # Request, X=1
gre1 = struct.pack("!HHHH", 0x3081, 0x880b, 0, 0x4242) + struct.pack("!I", 1)         # PPTP call id 0x4242
inner6 = v6("2001:db8:1::2", "2001:db8:2::2", 17, udp(4000, 9))
err6 = struct.pack("!BBHI", 1, 4, 0, 0) + inner6                                      # port unreachable
hbh = bytes([58, 0, 1, 4, 0, 0, 0, 0])
ipv4s = [v4("198.51.100.2", "203.0.113.2", 132, sctp), v4("198.51.100.2", "203.0.113.2", 33, dccp),
         v4("198.51.100.2", "203.0.113.2", 136, udp(4003, 5000, b"lite")), v4("198.51.100.2", "203.0.113.2", 47, gre1)]
ipv6s = [v6("2001:db8:2::2", "2001:db8:1::2", 0, hbh + err6)]
eth = lambda ip: b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01" + struct.pack("!HHHH", 0x88a8, 100, 0x8100, 200) \
    + struct.pack("!H", 0x86dd if ip[0] >> 4 == 6 else 0x0800) + ip
sll = lambda ip, t: struct.pack("!HHH", t, 1, 6) + b"\x02\0\0\0\0\x01\0\0" + struct.pack("!H", 0x86dd if ip[0] >> 4 == 6 else 0x0800) + ip
af_le = lambda ip: struct.pack("<I", 10 if ip[0] >> 4 == 6 else 2) + ip
af_be = lambda ip: struct.pack("!I", 10 if ip[0] >> 4 == 6 else 2) + ip
pcap("links.ethernet-vlan.pcap", 1, [eth(x) for x in ipv4s + ipv6s])
pcap("links.sll.pcap", 113, [sll(x, 0) for x in ipv4s] + [sll(x, 4) for x in ipv6s])
pcap("links.raw.pcap", 101, ipv4s + ipv6s)
pcap("links.null.pcap", 0, [af_le(x) for x in ipv4s + ipv6s])
pcap("links.loop.pcap", 108, [af_be(x) for x in ipv4s + ipv6s])
print("links.*.pcap written")
