"""Helper processes for the benchmarks, each run inside a lab namespace.

python benchmarks/_peers.py NETNS connect HOST PORT COUNT
    sequential blocking connect() latencies (ns), closed with RST; JSON on stdout
python benchmarks/_peers.py NETNS bulk HOST PORT NBYTES
    connect, send NBYTES, shut down, wait for the peer's FIN; prints the
    times of its first and last send() (CLOCK_MONOTONIC, the parent's
    time.perf_counter clock)
python benchmarks/_peers.py NETNS many HOST PORTS COUNT
    COUNT non-blocking connects, at most 250 in flight at once, spread over
    the ports (comma-separated), after "ready" is printed and a line read
    from stdin; prints what connected with timing, holds them until stdin
    closes
python benchmarks/_peers.py NETNS sink HOST PORT
    accept one connection and read until EOF; prints the bytes read and the
    times the first and the last byte were read
python benchmarks/_peers.py NETNS flood IFACE FILE
    send the frames of FILE (each a 2-byte length, then the frame) 64 to a
    sendmmsg() as fast as they go; prints the seconds it took
python benchmarks/_peers.py NETNS scapy-responder IFACE PORT COUNT
    answer COUNT SYNs to PORT with scapy-built SYN-ACKs
python benchmarks/_peers.py NETNS raw-responder IFACE PORT COUNT MAC
    answer COUNT SYNs to PORT as MAC with the least Python can do: a raw
    socket, poll(), a fixed-offset look and a template-built SYN-ACK; no
    trio, no connection state (the floor for any Python responder)
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import select
import socket
import struct
import sys
import time

from tcpemu._netns import enter_netns


def connect_latencies(host: str, port: int, count: int) -> None:
    out = []
    linger = struct.pack("ii", 1, 0)
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.settimeout(5)
        t0 = time.perf_counter_ns()
        s.connect((host, port))
        out.append(time.perf_counter_ns() - t0)
        s.close()
    print(json.dumps(out))


def bulk(host: str, port: int, nbytes: int) -> None:
    s = socket.create_connection((host, port), timeout=30)
    chunk = bytes(1 << 16)
    left = nbytes
    first = time.perf_counter()
    while left:
        left -= s.send(chunk[: min(left, len(chunk))])
    last = time.perf_counter()
    s.shutdown(socket.SHUT_WR)
    while s.recv(1 << 16):
        pass
    s.close()
    print(json.dumps({"first": first, "last": last}), flush=True)


IN_FLIGHT = 250


def many(host: str, ports: list[int], count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    ep = select.epoll()
    socks = {}
    # the parent's clock starts at "go", not at this process's start
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    started = done = failed = 0

    def start_one() -> None:
        nonlocal started
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, ports[started % len(ports)]))
        socks[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLOUT)
        started += 1

    # at most IN_FLIGHT handshakes at once, as a soak opens them: a burst of
    # all of them would overflow the tester's receive ring, and a lost ACK of
    # a SYN-ACK leaves a handshake that nobody finishes (neither side resends)
    while started < min(count, IN_FLIGHT):
        start_one()
    deadline = time.monotonic() + 120
    while done < count and time.monotonic() < deadline:
        for fd, _ in ep.poll(1.0):
            ep.unregister(fd)
            if socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
            done += 1
            if started < count:
                start_one()
    print(json.dumps({"connected": done - failed, "failed": failed, "seconds": time.perf_counter() - t0}))
    sys.stdout.flush()
    sys.stdin.read()
    for s in socks.values():
        s.close()


def sink(host: str, port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    print("listening", flush=True)
    c, _ = srv.accept()
    buf = bytearray(1 << 16)
    total = c.recv_into(buf)
    # timed from the first byte read, as the emulated receiver is: the
    # processes' start and the handshake are nobody's throughput
    first = last = time.perf_counter()
    while n := c.recv_into(buf):
        total += n
        last = time.perf_counter()
    c.close()
    print(json.dumps({"bytes": total, "first": first, "last": last}), flush=True)


def flood(iface: str, path: str) -> None:
    from tcpemu._io import PacketLink

    data = pathlib.Path(path).read_bytes()
    frames = []
    i = 0
    while i < len(data):
        (n,) = struct.unpack_from("!H", data, i)
        frames.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    link = PacketLink(iface)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    t0 = time.perf_counter()
    for k in range(0, len(frames), 64):
        link.send_batch(frames[k : k + 64])
    dt = time.perf_counter() - t0
    link.close()
    print(json.dumps({"seconds": dt, "frames": len(frames)}), flush=True)


def scapy_responder(iface: str, port: int, count: int) -> None:
    from scapy.all import IP, TCP, Ether, conf

    sock = conf.L2socket(iface=iface)
    print("ready", flush=True)
    answered = 0
    deadline = time.monotonic() + 120
    while answered < count and time.monotonic() < deadline:
        pkt = sock.recv()
        if pkt is None or TCP not in pkt or pkt[TCP].dport != port or pkt[TCP].flags != "S":
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        reply = (
            Ether(src=pkt.dst, dst=pkt.src)
            / IP(src=ip.dst, dst=ip.src)
            / TCP(sport=tcp.dport, dport=tcp.sport, flags="SA", seq=1000, ack=tcp.seq + 1, window=65535)
        )
        sock.send(reply)
        answered += 1
    sock.close()


def raw_responder(iface: str, port: int, count: int, mac: str) -> None:
    import ipaddress

    from tcpemu.wire import FLAGS, FrameTemplate, Segment, parse_mac

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    own = parse_mac(mac)
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    print("ready", flush=True)
    templates: dict[bytes, FrameTemplate] = {}
    answered = 0
    deadline = time.monotonic() + 120
    syn_ack = FLAGS[0x12]
    while answered < count and time.monotonic() < deadline:
        if not poll.poll(1000):
            continue
        frame = sock.recv(2048)
        # IPv4, no IP options, TCP, to our port, SYN alone
        if frame[23] != 6 or frame[14] != 0x45 or frame[36:38] != port.to_bytes(2, "big"):
            continue
        if frame[47] & 0x17 != 0x02:
            continue
        key = frame[6:12] + frame[26:34]
        tpl = templates.get(key)
        if tpl is None:
            src, dst = ipaddress.ip_address(frame[26:30]), ipaddress.ip_address(frame[30:34])
            tpl = templates[key] = FrameTemplate(own, frame[6:12], dst, src)
        sport, seq = struct.unpack_from("!H2xI", frame, 34)
        sock.send(tpl.build(Segment(port, sport, 1000, (seq + 1) % 2**32, syn_ack, 65535)))
        answered += 1
    sock.close()


def main() -> None:
    netns, cmd, *args = sys.argv[1:]
    enter_netns(netns)
    if cmd == "connect":
        connect_latencies(args[0], int(args[1]), int(args[2]))
    elif cmd == "bulk":
        bulk(args[0], int(args[1]), int(args[2]))
    elif cmd == "many":
        many(args[0], [int(p) for p in args[1].split(",")], int(args[2]))
    elif cmd == "flood":
        flood(args[0], args[1])
    elif cmd == "sink":
        sink(args[0], int(args[1]))
    elif cmd == "raw-responder":
        raw_responder(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "scapy-responder":
        scapy_responder(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    os._exit(0)


if __name__ == "__main__":
    main()
