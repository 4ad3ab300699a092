"""Listeners and probes of tests/firewall_traffic.rs, run inside a network
namespace (`ip netns exec NS python3 tests/traffic.py ...`). One process per
namespace serves or sends everything at once, which keeps a test with a
hundred flows fast on a small machine.

  listen ADDRESS,PORT,PROTO,ANSWER ...
      Binds every TCP or UDP socket, prints `ready`, then answers every
      connection or datagram with the ANSWER of the socket it arrived on.

  send PROTO,SRC,DST,PORT ...
      Sends every probe at once from address SRC: a TCP connection that
      reads until the peer closes, one UDP datagram, or one ICMP echo
      request (PORT 0). Prints one line per probe, in order: `answer TEXT`,
      or `nothing REASON` when no answer came within 2 seconds.
"""

import os
import selectors
import socket
import struct
import sys
import threading
import time

TIMEOUT = 2.0


def listen(specs):
    selector = selectors.DefaultSelector()
    for spec in specs:
        address, port, proto, answer = spec.split(",")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, int(port)))
        if proto == "tcp":
            sock.listen(128)
        selector.register(sock, selectors.EVENT_READ, (proto, (answer + "\n").encode()))
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            proto, answer = key.data
            if proto == "tcp":
                conn, _ = key.fileobj.accept()
                conn.sendall(answer)
                conn.close()
            else:
                _, peer = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(answer, peer)


def tcp(src, dst, port):
    with socket.create_connection((dst, port), TIMEOUT, (src, 0)) as sock:
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk


def udp(src, dst, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src, 0))
        sock.settimeout(TIMEOUT)
        sock.sendto(b"probe\n", (dst, port))
        return sock.recvfrom(2048)[0]


def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp(src, dst, _port, ident):
    """An echo request; the reply reads `sov-probe-DST-0-icmp`."""
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"sov-probe!"
    packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.bind((src, 0))
        sock.sendto(packet, (dst, 0))
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no echo reply")
            sock.settimeout(left)
            data, (addr, _) = sock.recvfrom(2048)
            start = (data[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[start:start + 8])
            # Every raw ICMP socket sees every reply: keep only our own.
            if addr == dst and kind == 0 and rid == ident:
                return ("sov-probe-%s-0-icmp\n" % dst).encode()


def send(specs):
    results = [None] * len(specs)

    def probe(i, spec):
        proto, src, dst, port = spec.split(",")
        try:
            if proto == "icmp":
                ident = (os.getpid() + i) & 0xFFFF
                data = icmp(src, dst, int(port), ident)
            else:
                data = {"tcp": tcp, "udp": udp}[proto](src, dst, int(port))
            results[i] = "answer " + data.decode(errors="replace").strip()
        except Exception as e:  # the reason is the result
            results[i] = "nothing %s: %s" % (type(e).__name__, e)

    threads = [threading.Thread(target=probe, args=(i, s)) for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for line in results:
        print(line.replace("\n", " "))


if __name__ == "__main__":
    {"listen": listen, "send": send}[sys.argv[1]](sys.argv[2:])
