#!/usr/bin/env python3
"""Writes two synthetic snapshot files (ctsync snapshot save format) for the diff benchmark.

A holds N entries shaped like a busy router's table: 80% TCP over IPv4 (window scale, flags,
counters), 15% UDP, 5% TCP over IPv6; every 50th entry in zone 1, every 40th with labels.
B is A with 1% changed: 0.4% of A's entries missing, as many new ones, 0.3% with another mark
and 0.3% in another TCP state. Deterministic (seeded), so figures are comparable.

usage: make_snapshots.py N A.jsonl B.jsonl
"""
import random
import sys
import time

TCP_STATES = ["ESTABLISHED", "TIME_WAIT", "SYN_SENT", "FIN_WAIT", "CLOSE_WAIT"]


def entry(i, rng, mark=0, state=None):
    kind = i % 20
    zone = 1 if i % 50 == 0 else None
    if kind < 16 or kind == 19:
        proto = 6
    else:
        proto = 17
    v6 = kind == 19
    if v6:
        src = "2001:db8:%x::%x" % (i >> 16 & 0xffff, i & 0xffff)
        dst = "2001:db8:ffff::%x" % (1 + i % 4000)
        fam = "ipv6"
    else:
        src = "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
        dst = "198.51.100.%d" % (1 + i % 250)
        fam = "ipv4"
    sport = 1024 + i % 64000
    dport = [443, 80, 53, 22, 8080][i % 5] if proto == 6 else 53
    # A zone set for both directions (ct zone set) is the top-level "zone" only, as
    # `ctsync dump -o json` writes it; tuple zones are per-direction zones.
    orig = '{"src":"%s","dst":"%s","sport":%d,"dport":%d}' % (src, dst, sport, dport)
    reply = '{"src":"%s","dst":"%s","sport":%d,"dport":%d}' % (dst, src, dport, sport)
    if proto == 6:
        status, flags = 14, '["SEEN_REPLY","ASSURED","CONFIRMED"]'
        st = state or TCP_STATES[0 if i % 10 else 1]
        timeout = 432000 if st == "ESTABLISHED" else 120
        extra = (',"tcp":{"state":"%s","wscale_orig":7,"wscale_reply":7,'
                 '"flags_orig":{"flags":35,"mask":0},"flags_reply":{"flags":35,"mask":0}}' % st)
    else:
        status, flags = 10, '["SEEN_REPLY","CONFIRMED"]'
        timeout, extra = 30, ""
    pk = 1 + rng.randrange(1000)
    counters = ',"counters":{"orig":{"packets":%d,"bytes":%d},"reply":{"packets":%d,"bytes":%d}}' % (
        pk, pk * 700, pk, pk * 90)
    labels = ',"labels":"0x5"' if i % 40 == 0 else ""
    zkey = ',"zone":%d' % zone if zone else ""
    return ('{"v":1,"family":"%s","proto":%d,"orig":%s,"reply":%s,"status":%d,"flags":%s,"timeout":%d,'
            '"mark":%d%s,"use":1,"id":%d%s%s%s}\n' % (fam, proto, orig, reply, status, flags, timeout, mark, zkey,
                                                     (i * 2654435761) & 0xffffffff, extra, counters, labels))


def main():
    n, fa, fb = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # Saved "now", so that a load subtracts no time and skips nothing as expired.
    header = ('{"v":1,"kind":"snapshot","time":%d,"kernel":"6.18.0",'
              '"sysctls":{"nf_conntrack_acct":1}}\n' % time.time_ns())
    with open(fa, "w") as a, open(fb, "w") as b:
        a.write(header)
        b.write(header)
        for i in range(n):
            ra, rb = random.Random(i), random.Random(i)
            a.write(entry(i, ra))
            m = i % 1000
            if m < 4:        # missing from B, replaced by a new connection
                b.write(entry(n + i, rb))
            elif m < 7:      # another mark
                b.write(entry(i, rb, mark=0x10))
            elif m < 10 and i % 20 < 16:   # another TCP state
                b.write(entry(i, rb, state="CLOSE_WAIT"))
            else:
                b.write(entry(i, rb))


if __name__ == "__main__":
    main()
