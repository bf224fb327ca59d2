"""Hostile frames through the real parse and dispatch path: the pump never dies.

At least 100,000 frames per run (``TCPEMU_FUZZ_FRAMES`` raises it: ``nox -s
fuzz``), from a seeded mutator over valid frames of every kind the engine
meets: bit flips, truncation, garbage tails, absurd lengths and offsets,
random option bytes, random flags and numbers.  Every frame the filter lets
through is counted: dispatched, unmatched, or malformed by reason.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpemu
from tcpemu import SERVER, MemoryLink, TcpFlags, TcpOption
from tcpemu.wire import Frame, Segment, build_frame, parse_frame_untrusted

FRAMES = int(os.environ.get("TCPEMU_FUZZ_FRAMES", "100000"))
PEER_IP, EMU_IP = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
PEER_MAC, EMU_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")
KNOWN_REASONS = {
    "truncated",
    "not-ip",
    "ip-version",
    "ip-header-length",
    "ip-length",
    "not-tcp",
    "ip-fragment",
    "tcp-data-offset",
    "tcp-option",
    "arp",
    "ndp",
}


def frame(
    sport: int, dport: int, seq: int, ack: int, flags: TcpFlags, payload: bytes = b"", options=()
) -> bytes:
    seg = Segment(sport, dport, seq, ack, flags, 1000, options=tuple(options), payload=payload)
    return build_frame(Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, seg))


def mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    kind = rng.randrange(8)
    if kind == 0:  # flip bytes anywhere
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del b[rng.randrange(14, len(b)) :]
    elif kind == 2:  # garbage tail
        b += rng.randbytes(rng.randint(1, 60))
    elif kind == 3:  # absurd IP total length or header length
        struct.pack_into("!H", b, 16, rng.choice([0, 1, 19, 21, 0xFFFF, rng.randrange(65536)]))
        if rng.random() < 0.5:
            b[14] = 0x40 | rng.randrange(16)
    elif kind == 4:  # absurd data offset
        b[46] = (rng.randrange(16) << 4) | (b[46] & 0x0F)
    elif kind == 5:  # random option bytes in a 60-byte header
        opts = rng.randbytes(40)
        b = b[:46] + bytes([0xF0 | (b[46] & 0x0F)]) + b[47:54] + opts + b[54:]
        struct.pack_into("!H", b, 16, len(b) - 14)
    elif kind == 6:  # random flags and numbers
        struct.pack_into(
            "!IIH", b, 38, rng.getrandbits(32), rng.getrandbits(32), (5 << 12) | rng.randrange(512)
        )
    else:  # random ethertype or protocol
        if rng.random() < 0.5:
            struct.pack_into("!H", b, 12, rng.choice([0x0806, 0x86DD, 0x8100, rng.randrange(65536)]))
        else:
            b[23] = rng.randrange(256)
    return bytes(b)


async def drain(peer: MemoryLink) -> list[Segment]:
    out = []
    while (raw := peer.recv_nowait()) is not None:
        out.append(parse_frame_untrusted(raw).segment)
    return out


async def test_pump_survives_hostile_frames_and_counts_them():
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1, max_queue=64) as engine:
        conn = engine.connection(
            SERVER,
            local=(str(EMU_IP), 20000),
            remote=(str(PEER_IP), None),
            local_mac=EMU_MAC,
            remote_mac=PEER_MAC,
        )
        engine.listen((str(EMU_IP), 21000), local_mac=EMU_MAC, backlog=64)
        peer.send(frame(40000, 20000, 100, 0, TcpFlags.SYN))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.wait_open, 5)
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(peer.fileno())
            synack = (await drain(peer))[0]
            peer.send(frame(40000, 20000, 101, synack.seq + 1, TcpFlags.ACK))
        snd = synack.seq + 1
        pool = [
            frame(40000, 20000, 101, snd, TcpFlags.ACK | TcpFlags.PSH, b"data" * 10),
            frame(40000, 20000, 101, snd, TcpFlags.RST),
            frame(40000, 20000, 101, snd, TcpFlags.FIN | TcpFlags.ACK),
            frame(41000, 21000, 5, 0, TcpFlags.SYN, options=[TcpOption.mss(1460), TcpOption.wscale(7)]),
            frame(42000, 20000, 5, 0, TcpFlags.SYN),
            frame(
                40000,
                20000,
                101,
                snd,
                TcpFlags.ACK,
                options=[TcpOption.timestamps(1, 2), TcpOption.sack([(1, 2)])],
            ),
        ]
        rng = random.Random(20261127)
        batch = 500
        for _ in range(0, FRAMES, batch):
            peer.send_batch([mutate(rng, rng.choice(pool)) for _ in range(batch)])
            await trio.testing.wait_all_tasks_blocked()
            await drain(peer)  # whatever the engine answered
        stats = engine.statistics()
        assert stats.frames_received > FRAMES // 2  # most still pass the address filter
        assert set(stats.malformed) <= KNOWN_REASONS
        assert sum(stats.malformed.values()) > FRAMES // 10
        assert stats.frames_unmatched + sum(stats.malformed.values()) <= stats.frames_received
        assert engine._broken is None
        # and it still serves a well-formed exchange on a fresh connection
        fresh = engine.connection(
            SERVER,
            local=(str(EMU_IP), 22000),
            remote=(str(PEER_IP), None),
            local_mac=EMU_MAC,
            remote_mac=PEER_MAC,
        )
        peer.send(frame(43000, 22000, 7, 0, TcpFlags.SYN))
        msg = await fresh.wait_msg(timeout=5)
        assert msg.flags == TcpFlags.SYN and msg.seq == 7


# Hypothesis strategies through the same dispatch path: every option kind,
# absurd lengths, truncation.  Fewer cases than the mutator above (hypothesis
# spends its time on shrinking-friendly generation), more variety per case.
option_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\x00", b"\x01"]),
        st.builds(lambda k, d: bytes([k, len(d) + 2]) + d, st.integers(2, 255), st.binary(max_size=10)),
        st.builds(lambda k, n: bytes([k, n]), st.integers(0, 255), st.integers(0, 255)),
    ),
    max_size=8,
).map(b"".join)


@st.composite
def hostile_frames(draw):
    opts = draw(option_bytes)[:40]
    opts += b"\x00" * (-len(opts) % 4)
    doff = draw(st.one_of(st.just(20 + len(opts)), st.integers(0, 15).map(lambda n: n * 4)))
    payload = draw(st.binary(max_size=64))
    flags = draw(st.integers(0, 0xFFF))
    tcp = (
        struct.pack(
            "!HHIIHHHH",
            draw(st.sampled_from([40000, 0, 65535])),  # port 0 is data too: a SYN from it makes a connection
            draw(st.sampled_from([20000, 21000, 1])),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 2**32 - 1)),
            ((doff // 4) << 12) | flags,
            1000,
            0,
            0,
        )
        + opts
        + payload
    )
    total = draw(st.one_of(st.just(20 + len(tcp)), st.integers(0, 0xFFFF)))
    ihl = draw(st.one_of(st.just(5), st.integers(0, 15)))
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, 0x4000, 64, 6, 0, PEER_IP.packed, EMU_IP.packed
    )
    raw = PEER_MAC + EMU_MAC + b"\x08\x00" + ip + tcp
    cut = draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))))
    return raw[:cut]


@settings(max_examples=int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "600")), deadline=None)
@given(st.lists(hostile_frames(), min_size=1, max_size=20))
def test_dispatch_takes_any_frame_hypothesis(frames):
    async def run() -> None:
        emu, peer = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu, seed=1, max_queue=8) as engine:
            engine.connection(
                SERVER,
                local=(str(EMU_IP), 20000),
                remote=(str(PEER_IP), None),
                local_mac=EMU_MAC,
                remote_mac=PEER_MAC,
            )
            engine.listen((str(EMU_IP), 21000), local_mac=EMU_MAC, backlog=4)
            for raw in frames:
                engine._dispatch(raw, 0.0)  # the pump's own per-frame path
            stats = engine.statistics()
            assert stats.frames_received == len(frames)
            assert set(stats.malformed) <= KNOWN_REASONS
        peer.close()

    trio.run(run)
