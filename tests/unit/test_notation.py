"""packetdrill notation: parse, format, compare, and expect/send on an in-memory link."""

from __future__ import annotations

import ipaddress

import pytest

import tcpemu
from tcpemu import MemoryLink, TcpFlags, TcpOption, UsageError, notation
from tcpemu.core import Message, SegmentKind
from tcpemu.notation import OptionPattern, SegmentMismatch, compare, format_segment, parse_segment
from tcpemu.wire import Frame, OptionKind, Segment, build_frame, parse_frame_untrusted

A, S, F, R, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH
PEER_IP, EMU_IP = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
PEER_MAC, EMU_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")
PEER_PORT, EMU_PORT = 40000, 20000
PEER_ISN, OUR_ISN = 1_000_000, 5_000


def msg(seq: int, ack: int, flags: TcpFlags, window: int = 100, options=(), payload=b"", urgent=0) -> Message:
    return Message(seq, ack, flags, window, tuple(options), payload, SegmentKind.EXPECTED, 0.0, urgent)


def test_parse_full_segment():
    p = parse_segment("P. 1:1001(1000) ack 1 win 511 <nop,nop,TS val 100 ecr 0>")
    assert p.flags == P | A and (p.start, p.end, p.length) == (1, 1001, 1000)
    assert (p.ack, p.window, p.urgent) == (1, 511, None)
    assert p.options == (
        OptionPattern(OptionKind.NOP),
        OptionPattern(OptionKind.NOP),
        OptionPattern(OptionKind.TIMESTAMP, (100, 0)),
    )
    assert p.seq_len == 1000


def test_parse_every_flag_option_and_ecn_mark():
    p = parse_segment(
        "[ect0] FSRP.UEWA 0:0(0) urg 7 <mss 1460,sackOK,wscale 7,sack 1:2 3:4,eol,opt30 0a0b,opt31 ->"
    )
    assert int(p.flags) == 0x1FF and p.ecn == "ect0" and p.urgent == 7
    kinds = [o.kind for o in p.options]
    assert kinds == [2, 4, 3, 5, 0, 30, 31]
    assert p.options[3].values == (1, 2, 3, 4) and p.options[5].raw == b"\x0a\x0b" and p.options[6].raw == b""


def test_omitted_fields_and_wildcards():
    p = parse_segment("F.")
    assert p.start is None and p.ack is None and p.window is None and p.options is None
    assert parse_segment(". 1:1(0)", omitted_options="none").options == ()
    assert parse_segment(". 1:1(0) ack * <...>").options is None
    assert parse_segment(". 1:1(0) <TS val * ecr 5>").options[0].values == (None, 5)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Q 0:0(0)", "unknown flag 'Q'"),
        (". 1:10(5)", "end - start is 9, length says 5"),
        (". 1:1(0) ack x", "ack must be a number"),
        (". 1:1(0) win 70000", "win 70000 does not fit 16 bits"),
        (". 1:1(0) <foo 1>", "unsupported option 'foo'"),
        (". 1:1(0) <TS val 1>", "write TS val <n> ecr <n>"),
        ("[bogus] S 0:0(0)", "unknown ECN mark"),
        (". 1:1(0) bork", "unexpected 'bork'"),
        ("", "empty segment"),
    ],
)
def test_bad_notation_is_a_clear_usage_error(text, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_segment(text)


def test_format_is_packetdrill_notation_and_parses_back():
    opts = (TcpOption.mss(1460), TcpOption.sack_permitted(), TcpOption.timestamps(1, 0), TcpOption(1),
            TcpOption.wscale(7))  # fmt: skip
    text = format_segment(S | A, PEER_ISN, OUR_ISN + 1, 65535, opts, 0, seq_base=PEER_ISN, ack_base=OUR_ISN)
    assert text == "S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>"
    back = parse_segment(text)
    got = msg(PEER_ISN, OUR_ISN + 1, S | A, 65535, opts)
    assert compare(back, got, seq_base=PEER_ISN, ack_base=OUR_ISN) == []
    # flag order as packetdrill prints them; no ack without the ACK flag; raw options
    assert format_segment(F | P | A, 10, 0, 5, (), 3) == "FP. 10:13(3) ack 0 win 5"
    assert format_segment(R, 10, 0, 0, (TcpOption(30, b"\x01"),), 0) == "R 10:10(0) win 0 <opt30 01>"
    assert format_segment(TcpFlags(0), 0, 0, 0, (), 0) == "- 0:0(0) win 0"


def test_sack_blocks_are_relative_to_the_receivers_isn():
    sack = TcpOption.sack([(OUR_ISN + 1001, OUR_ISN + 2001)])
    text = format_segment(A, PEER_ISN + 1, OUR_ISN + 1, 9, (TcpOption(1), TcpOption(1), sack), 0,
                          seq_base=PEER_ISN, ack_base=OUR_ISN)  # fmt: skip
    assert text.endswith("<nop,nop,sack 1001:2001>")
    got = msg(PEER_ISN + 1, OUR_ISN + 1, A, 9, (TcpOption(1), TcpOption(1), sack))
    assert compare(parse_segment(". 1:1(0) <nop,nop,sack 1001:2001>"), got, seq_base=PEER_ISN,
                   ack_base=OUR_ISN) == []  # fmt: skip
    diffs = compare(
        parse_segment(". 1:1(0) <nop,nop,sack 1001:3001>"), got, seq_base=PEER_ISN, ack_base=OUR_ISN
    )
    assert diffs == ["SACK edge 2: expected 3001, got 2001"]


def test_compare_names_each_difference():
    got = msg(PEER_ISN + 1, OUR_ISN + 1, F | A, 100, (TcpOption(1), TcpOption(1), TcpOption.timestamps(9, 4)))
    bases = {"seq_base": PEER_ISN, "ack_base": OUR_ISN}
    assert compare(parse_segment("F. 1:1(0) ack 1"), got, **bases) == []
    assert compare(parse_segment("F. 1:1(0) ack 2 win 100"), got, **bases) == ["ack: expected 2, got 1"]
    assert compare(parse_segment(". 2:3(1) win 7"), got, **bases) == [
        "flags: expected ., got F.",
        "seq: expected 2, got 1",
        "length: expected 1, got 0",
        "win: expected 7, got 100",
    ]
    assert compare(parse_segment("F. 1:1(0) <nop,nop,TS val 9 ecr 5>"), got, **bases) == [
        "TS ecr: expected 5, got 4"
    ]
    assert compare(parse_segment("F. 1:1(0) <nop,nop,TS val 1 ecr 4>"), got, check_tsval=False, **bases) == []
    assert compare(parse_segment("F. 1:1(0) <nop,nop,TS val * ecr 4>"), got, **bases) == []
    assert compare(parse_segment("F. 1:1(0) <mss 1460>"), got, **bases)[0].startswith("options: expected 1")
    # options written as none in a script line: any option is a difference
    assert compare(parse_segment("F. 1:1(0)", omitted_options="none"), got, **bases) != []
    # an ack expected on a segment without ACK
    assert compare(parse_segment("R 1:1(0) ack 1"), msg(PEER_ISN + 1, 0, R), **bases) == [
        "ack: expected 1, got no ACK flag"
    ]


def test_relative_numbers_wrap_around_the_sequence_space():
    base = 2**32 - 10
    got = msg((base + 20) % 2**32, 0, P | A, payload=b"x" * 5)
    assert compare(parse_segment("P. 20:25(5)"), got, seq_base=base, ack_base=None) == []
    assert format_segment(P, (base + 20) % 2**32, 0, 0, (), 5, seq_base=base).startswith("P 20:25(5)")


# ---------------------------------------------------------------- on a link


def peer_frame(seg: Segment) -> bytes:
    return build_frame(Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, seg))


async def opened(link_peer: MemoryLink, engine: tcpemu.Engine) -> tcpemu.Connection:
    """A SERVER connection that has seen the peer's SYN and answered it (the peer's ISN is known)."""
    conn = engine.connection(
        tcpemu.SERVER,
        local=(str(EMU_IP), EMU_PORT),
        remote=(str(PEER_IP), None),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
        isn=OUR_ISN,
    )
    link_peer.send(peer_frame(Segment(PEER_PORT, EMU_PORT, PEER_ISN, 0, S, 1000)))
    await conn.wait_msg(timeout=1)
    return conn


def sent_by_emulator(link_peer: MemoryLink) -> list[Segment]:
    out = []
    while (raw := link_peer.recv_nowait()) is not None:
        out.append(parse_frame_untrusted(raw).segment)
    return out


async def test_expect_send_and_expect_nothing_on_a_memory_link(autojump_clock):
    emu_side, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_side, seed=1) as engine:
        conn = await opened(peer, engine)
        syn = await notation.expect(conn, "S 0:0(0) win 1000", within=0.2)
        assert syn.seq == PEER_ISN
        seg = await notation.send(conn, "S. 0:0(0) ack 1 win 512 <mss 1000,nop,nop,TS val 100 ecr 0>")
        assert (notation.rel_seq(conn, seg, sent=True), notation.rel_ack(conn, seg, sent=True)) == (0, 1)
        assert notation.format_message(seg, conn, sent=True).startswith("S. 0:0(0) ack 1 win 512 <mss 1000")
        assert (seg.seq, seg.ack, seg.window, seg.flags) == (OUR_ISN, PEER_ISN + 1, 512, S | A)
        assert seg.option(OptionKind.TIMESTAMP).value() == (100, 0)
        assert conn.next_seqn == OUR_ISN + 1  # the SYN took one
        data = await notation.send(conn, "P. 1:11(10) ack 1", payload=b"0123456789")
        assert data.seq == OUR_ISN + 1 and data.payload == b"0123456789" and conn.next_seqn == OUR_ISN + 11
        wire = sent_by_emulator(peer)
        assert [s.seq for s in wire] == [OUR_ISN, OUR_ISN + 1] and wire[1].window == conn.segment().window
        # the peer acknowledges; a wrong ack is a plain AssertionError naming both sides
        peer.send(peer_frame(Segment(PEER_PORT, EMU_PORT, PEER_ISN + 1, OUR_ISN + 11, A, 900)))
        with pytest.raises(AssertionError) as info:
            await notation.expect(conn, ". 1:1(0) ack 12", within=0.2)
        assert isinstance(info.value, SegmentMismatch)
        text = str(info.value)
        assert "expected: . 1:1(0) ack 12" in text and "got:      . 1:1(0) ack 11 win 900" in text
        assert "ack: expected 12, got 11" in text and "recent trace" in text
        # silence: passes, and leaves no line in the trace
        before = conn.trace()
        await notation.expect_nothing(conn, for_=0.3)
        assert conn.trace() == before
        # anything sent fails it, with the segment
        peer.send(peer_frame(Segment(PEER_PORT, EMU_PORT, PEER_ISN + 1, OUR_ISN + 11, F | A, 900)))
        with pytest.raises(SegmentMismatch, match=r"got:      F\. 1:1\(0\) ack 11 win 900"):
            await notation.expect_nothing(conn, for_=0.3)
        # nothing at all within the bound
        with pytest.raises(SegmentMismatch, match=r"no segment from the peer within 0\.1 s"):
            await notation.expect(conn, "F. 1:1(0)", within=0.1)
        assert sent_by_emulator(peer) == []  # expect never acknowledged anything


async def test_expect_acks_only_when_asked(autojump_clock):
    emu_side, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_side, seed=2) as engine:
        conn = await opened(peer, engine)
        await notation.expect(conn, "S 0:0(0)", within=1)
        await notation.send(conn, "S. 0:0(0) ack 1")
        sent_by_emulator(peer)
        peer.send(
            peer_frame(Segment(PEER_PORT, EMU_PORT, PEER_ISN + 1, OUR_ISN + 1, P | A, 900, payload=b"ab"))
        )
        got = await notation.expect(conn, "P. 1:3(2) ack 1", within=1, ack=True)
        assert notation.rel_seq(conn, got) == 1 and notation.rel_ack(conn, got) == 1
        assert notation.format_message(got, conn) == "P. 1:3(2) ack 1 win 900"
        (ack,) = sent_by_emulator(peer)
        assert ack.flags == A and ack.ack == PEER_ISN + 3


async def test_send_rejects_what_it_cannot_build(autojump_clock):
    emu_side, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_side, seed=3) as engine:
        conn = await opened(peer, engine)
        with pytest.raises(UsageError, match="payload has 3 bytes"):
            await notation.send(conn, "P. 1:11(10) ack 1", payload=b"abc")
        with pytest.raises(UsageError, match="needs a value for ack"):
            await notation.send(conn, ". 1:1(0) ack *")
        with pytest.raises(UsageError, match="within must be >= 0"):
            await notation.expect(conn, ".", within=-1)
        assert sent_by_emulator(peer) == []


def test_a_message_is_formatted_from_the_isns_it_carries():
    """Messages know the ISNs they count from: no connection is needed to print them relative."""
    got = Message(PEER_ISN + 1, OUR_ISN + 1, P | A, 100, (), b"abc", SegmentKind.EXPECTED, 0.0, 0, None,
                  PEER_ISN, OUR_ISN)  # fmt: skip
    assert notation.format_message(got) == "P. 1:4(3) ack 1 win 100"
    assert notation.format_message(got._replace(seq_base=None, ack_base=None)) == (
        f"P. {PEER_ISN + 1}:{PEER_ISN + 4}(3) ack {OUR_ISN + 1} win 100"
    )


def test_a_pattern_demanding_no_options_reads_back_so():
    from tcpemu.notation import parse_segment

    assert str(parse_segment(". 1:1(0) ack 1 <>")) == ". 1:1(0) ack 1 <>"
    assert str(parse_segment(". 1:1(0) ack 1")) == ". 1:1(0) ack 1 <...>"  # omitted: any
