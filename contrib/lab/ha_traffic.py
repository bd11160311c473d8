#!/usr/bin/env python3
"""Long-lived TCP connections and UDP flows for the failover test (issue 6). Standard library only.

  ha_traffic.py serve HOST TCPPORT UDPPORT
      echo server: every TCP connection and UDP datagram is echoed back
  ha_traffic.py client SERVER TCPPORT UDPPORT NTCP NUDP SECONDS [INTERVAL]
      opens NTCP connections and NUDP sockets, sends a numbered message on each every
      INTERVAL seconds (default 0.2) and checks the echoes, for SECONDS; prints "ready" once
      every connection is open, then at the end one JSON line:
        {"tcp": N, "udp": N, "reset": N, "tcp_errors": [...], "tcp_silent_at_end": N,
         "udp_silent_at_end": N, "max_tcp_gap": S, "max_udp_gap": S}
      "silent at end" counts flows that got no echo in the last 2 seconds;
      "gap" is the longest time between two echoes of one flow.
"""
import json
import selectors
import socket
import sys
import time


def serve(host, tport, uport):
    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, tport))
    ls.listen(512)
    ls.setblocking(False)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind((host, uport))
    us.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, 'listen')
    sel.register(us, selectors.EVENT_READ, 'udp')
    print('ready', flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == 'listen':
                c, _ = ls.accept()
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, 'tcp')
            elif key.data == 'udp':
                try:
                    d, a = us.recvfrom(2048)
                    us.sendto(d, a)
                except OSError:
                    pass
            else:
                c = key.fileobj
                try:
                    d = c.recv(4096)
                except OSError:
                    d = b''
                if not d:
                    sel.unregister(c)
                    c.close()
                else:
                    try:
                        c.sendall(d)
                    except OSError:
                        pass


def client(server, tport, uport, ntcp, nudp, seconds, interval):
    tcp = []
    for i in range(ntcp):
        s = socket.create_connection((server, tport), timeout=5)
        s.setblocking(False)
        tcp.append(s)
    udp = []
    for i in range(nudp):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((server, uport))
        s.setblocking(False)
        udp.append(s)
    print('ready', flush=True)
    start = time.time()
    last = {('t', i): start for i in range(ntcp)}
    last.update({('u', i): start for i in range(nudp)})
    gap = {k: 0.0 for k in last}
    errors = []
    dead = set()
    sel = selectors.DefaultSelector()
    for i, s in enumerate(tcp):
        sel.register(s, selectors.EVENT_READ, ('t', i))
    for i, s in enumerate(udp):
        sel.register(s, selectors.EVENT_READ, ('u', i))
    next_send = start
    n = 0
    while time.time() - start < seconds:
        now = time.time()
        if now >= next_send:
            n += 1
            for i, s in enumerate(tcp):
                if ('t', i) in dead:
                    continue
                try:
                    s.send(b'%d\n' % n)
                except OSError as e:
                    dead.add(('t', i))
                    errors.append(f'tcp {i}: send: {e}')
            for i, s in enumerate(udp):
                try:
                    s.send(b'%d' % n)
                except OSError:
                    pass            # ICMP errors come back as send/recv errors on UDP: retried next round
            next_send += interval
        for key, _ in sel.select(timeout=max(0.0, min(interval, next_send - time.time()))):
            k = key.data
            try:
                d = key.fileobj.recv(4096)
            except OSError as e:
                if k[0] == 't':
                    dead.add(k)
                    errors.append(f'tcp {k[1]}: recv: {e}')
                    sel.unregister(key.fileobj)
                continue
            if k[0] == 't' and not d:
                dead.add(k)
                errors.append(f'tcp {k[1]}: closed by the peer')
                sel.unregister(key.fileobj)
                continue
            t = time.time()
            gap[k] = max(gap[k], t - last[k])
            last[k] = t
    end = time.time()
    result = {
        'tcp': ntcp, 'udp': nudp,
        'reset': len([e for e in errors if 'reset' in e.lower() or 'closed by the peer' in e]),
        'tcp_errors': errors[:10],
        'tcp_silent_at_end': len([k for k in last if k[0] == 't' and end - last[k] > 2]),
        'udp_silent_at_end': len([k for k in last if k[0] == 'u' and end - last[k] > 2]),
        'max_tcp_gap': round(max([gap[k] for k in gap if k[0] == 't'] or [0]), 3),
        'max_udp_gap': round(max([gap[k] for k in gap if k[0] == 'u'] or [0]), 3),
    }
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
    a = sys.argv
    if len(a) == 5 and a[1] == 'serve':
        serve(a[2], int(a[3]), int(a[4]))
    elif len(a) in (8, 9) and a[1] == 'client':
        client(a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]), float(a[7]), float(a[8]) if len(a) == 9 else 0.2)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
