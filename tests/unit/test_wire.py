"""Wire codec: build -> parse round trips, checksums, options, untrusted parsing."""

from __future__ import annotations

import ipaddress
import os
import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpemu import MalformedFrameError, UsageError
from tcpemu.wire import (
    Frame,
    OptionKind,
    Segment,
    TcpFlags,
    TcpOption,
    build_frame,
    classify_untrusted,
    decode_options_untrusted,
    encode_options,
    flow_key,
    internet_checksum,
    ipv4_header_checksum_ok,
    listen_key,
    parse_frame_untrusted,
    parse_mac,
    parse_tcp_untrusted,
    predict_untrusted,
    tcp_checksum_ok,
)

V4 = (ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))
MAC_A, MAC_B = bytes.fromhex("02aabbccdd01"), bytes.fromhex("02aabbccdd02")


def make(addrs=V4, **seg_kw) -> Frame:
    seg = dict(src_port=40000, dst_port=80, seq=1, ack=2, flags=TcpFlags.ACK, window=1000)
    seg.update(seg_kw)
    return Frame(MAC_A, MAC_B, addrs[0], addrs[1], Segment(**seg))


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_round_trip_keeps_every_field(addrs):
    opts = (TcpOption.mss(1400), TcpOption(OptionKind.NOP), TcpOption.wscale(7), TcpOption.sack_permitted())
    frame = make(
        addrs,
        seq=0xFFFFFFF0,
        ack=0x12345678,
        flags=TcpFlags.SYN | TcpFlags.ACK | TcpFlags.ECE | TcpFlags.AE,
        window=4321,
        urgent=7,
        options=opts,
        payload=b"hello world",
    )
    frame.ttl = 33
    raw = build_frame(frame)
    back = parse_frame_untrusted(raw)
    assert (back.src_mac, back.dst_mac, back.src_ip, back.dst_ip) == (MAC_A, MAC_B, *addrs)
    assert back.ttl == 33
    s = back.segment
    assert (s.src_port, s.dst_port, s.seq, s.ack, s.window, s.urgent) == (
        40000,
        80,
        0xFFFFFFF0,
        0x12345678,
        4321,
        7,
    )
    assert s.flags == TcpFlags.SYN | TcpFlags.ACK | TcpFlags.ECE | TcpFlags.AE
    assert s.options == opts
    assert s.payload == b"hello world"
    assert s.data_offset == 20 + len(encode_options(opts))
    assert tcp_checksum_ok(raw)


def test_ipv4_df_id_and_header_checksum():
    frame = make()
    frame.ip_id, frame.df = 4242, True
    raw = build_frame(frame)
    back = parse_frame_untrusted(raw)
    assert back.ip_id == 4242 and back.df
    assert ipv4_header_checksum_ok(raw)
    frame.df = False
    assert not parse_frame_untrusted(build_frame(frame)).df


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_checksum_matches_dpkt_and_detects_corruption(addrs):
    raw = build_frame(make(addrs, payload=b"abc"))  # odd length: the padding path
    eth = dpkt.ethernet.Ethernet(raw)
    tcp = eth.data.data
    ours = tcp.sum
    tcp.sum = 0
    if addrs is V4:
        eth.data.sum = 0  # make dpkt recompute the IP header checksum too
    assert dpkt.ethernet.Ethernet(bytes(eth)).data.data.sum == ours
    bad = bytearray(raw)
    bad[-1] ^= 0xFF
    assert not tcp_checksum_ok(bytes(bad))


def test_internet_checksum_known_value():
    # RFC 1071 example words 0001 f203 f4f5 f6f7 -> sum ddf2, checksum 220d
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_parse_frames_built_by_dpkt():
    tcp = dpkt.tcp.TCP(sport=1, dport=2, seq=10, ack=20, flags=0x18, win=99, off=6, opts=b"\x02\x04\x05\xb4")
    tcp.data = b"xyz"
    ip = dpkt.ip.IP(src=V4[0].packed, dst=V4[1].packed, p=6, data=tcp)
    raw = bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip))
    seg = parse_frame_untrusted(raw).segment
    assert (seg.seq, seg.ack, seg.flags, seg.window, seg.payload) == (
        10,
        20,
        TcpFlags.PSH | TcpFlags.ACK,
        99,
        b"xyz",
    )
    assert seg.option(OptionKind.MSS).value() == 1460


def test_classify_keys_match_the_registration_keys():
    raw = build_frame(make())
    fkey, lkey, start, end = classify_untrusted(raw)
    assert fkey == flow_key(V4[0], 40000, V4[1], 80)
    assert lkey == listen_key(V4[1], 80)
    assert (start, end) == (34, 54)


def test_ethernet_padding_is_not_payload():
    raw = build_frame(make()) + b"\x00" * 6  # short frames are padded to 60 bytes on the wire
    assert parse_frame_untrusted(raw).segment.payload == b""


def test_options_round_trip_and_values():
    opts = [TcpOption.timestamps(1, 2), TcpOption.sack([(10, 20), (30, 40)]), TcpOption(200, b"\x01")]
    raw = encode_options(opts)
    assert len(raw) % 4 == 0
    back = decode_options_untrusted(raw)
    assert list(back) == opts
    assert back[0].value() == (1, 2)
    assert back[1].value() == [(10, 20), (30, 40)]
    assert back[2].value() == b"\x01"
    assert str(back[0]) == "TS val 1 ecr 2"


LINUX_SYN_OPTIONS = st.builds(
    lambda mss, tsval, tsecr, ws: encode_options(
        [
            TcpOption.mss(mss),
            TcpOption.sack_permitted(),
            TcpOption.timestamps(tsval, tsecr),
            TcpOption(OptionKind.NOP),
            TcpOption.wscale(ws),
        ]
    ),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
)
NOP_NOP_TS = st.builds(
    lambda tsval, tsecr: encode_options([TcpOption(1), TcpOption(1), TcpOption.timestamps(tsval, tsecr)]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        LINUX_SYN_OPTIONS,
        NOP_NOP_TS,
        # the shapes with one byte changed, and any bytes of their lengths
        st.tuples(st.one_of(LINUX_SYN_OPTIONS, NOP_NOP_TS), st.integers(0, 19), st.integers(0, 255)).map(
            lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
        ),
        st.binary(min_size=12, max_size=12),
        st.binary(min_size=20, max_size=20),
    )
)
def test_option_shapes_read_at_fixed_offsets_equal_the_loop(raw):
    from tcpemu.wire import _decode_options

    try:
        slow: tuple[TcpOption, ...] | str = _decode_options(raw)
    except MalformedFrameError as exc:
        slow = exc.reason
    try:
        fast: tuple[TcpOption, ...] | str = decode_options_untrusted(raw)
    except MalformedFrameError as exc:
        fast = exc.reason
    assert fast == slow
    if not isinstance(fast, str):
        assert [type(o) for o in fast] == [TcpOption] * len(fast)
        assert [type(o.data) for o in fast] == [bytes] * len(fast)


def test_linux_option_shapes_decode_to_their_values():
    syn = encode_options(
        [
            TcpOption.mss(1460),
            TcpOption.sack_permitted(),
            TcpOption.timestamps(7, 0),
            TcpOption(OptionKind.NOP),
            TcpOption.wscale(7),
        ]
    )
    opts = decode_options_untrusted(memoryview(syn))  # a view, as a ring slot gives it
    assert [o.kind for o in opts] == [2, 4, 8, 1, 3]
    assert (opts[0].value(), opts[2].value(), opts[4].value()) == (1460, (7, 0), 7)
    ts = decode_options_untrusted(b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 6))
    assert [o.kind for o in ts] == [1, 1, 8] and ts[2].value() == (5, 6)


def test_options_too_long_is_a_usage_error():
    with pytest.raises(UsageError, match="at most 40"):
        encode_options([TcpOption.timestamps(1, 2)] * 5)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x02", "tcp-option"),  # no length byte
        (b"\x02\x01\x00\x00", "tcp-option"),  # length < 2
        (b"\x08\x0a\x00\x00", "tcp-option"),  # length past the end
    ],
)
def test_bad_options_raise_malformed(raw, reason):
    with pytest.raises(MalformedFrameError) as info:
        decode_options_untrusted(raw)
    assert info.value.reason == reason


def _mutate(raw: bytes, offset: int, data: bytes) -> bytes:
    b = bytearray(raw)
    b[offset : offset + len(data)] = data
    return bytes(b)


GOOD = build_frame(make(payload=b"0123456789"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (GOOD[:30], "truncated"),
        (_mutate(GOOD, 12, b"\x08\x06"), "not-ip"),
        (_mutate(GOOD, 14, b"\x65"), "ip-version"),
        (_mutate(GOOD, 14, b"\x44"), "ip-header-length"),
        (_mutate(GOOD, 16, b"\x05\xdc"), "ip-length"),
        (_mutate(GOOD, 23, b"\x11"), "not-tcp"),
        (_mutate(GOOD, 20, b"\x20\x00"), "ip-fragment"),
        (_mutate(GOOD, 46, b"\x40"), "tcp-data-offset"),
        (_mutate(GOOD, 46, b"\xf0"), "tcp-data-offset"),
    ],
)
def test_malformed_frames_name_their_reason(raw, reason):
    with pytest.raises(MalformedFrameError) as info:
        parse_frame_untrusted(raw)
    assert info.value.reason == reason
    assert reason in str(info.value)


def test_parse_mac():
    assert parse_mac("02:00:5e:00:00:01") == bytes.fromhex("02005e000001")
    with pytest.raises(UsageError, match="not a MAC address"):
        parse_mac("02:00:5e")
    with pytest.raises(UsageError, match="6 bytes"):
        parse_mac(b"\x01")


def test_flags_short_form():
    assert (TcpFlags.SYN | TcpFlags.ACK).short() == "S."
    assert (TcpFlags.PSH | TcpFlags.ACK).short() == "P."
    assert TcpFlags(0).short() == "none"


# ---------------------------------------------------------------- fuzzing

frames = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda base, pos, junk: _mutate(base, pos % len(base), junk),
        st.sampled_from(
            [GOOD, build_frame(make(V6, payload=b"x" * 20)), build_frame(make(options=(TcpOption.mss(1),)))]
        ),
        st.integers(0, 200),
        st.binary(min_size=1, max_size=8),
    ),
    st.builds(lambda n: GOOD[:n], st.integers(0, len(GOOD))),
)


@settings(max_examples=int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "3000")), deadline=None)
@given(frames)
def test_untrusted_parser_raises_only_malformed(raw):
    try:
        frame = parse_frame_untrusted(raw)
    except MalformedFrameError as exc:
        assert exc.reason
    else:
        assert isinstance(frame.segment.payload, bytes)
        assert 20 <= frame.segment.data_offset <= 60


def _agrees_with_the_full_parse(raw: bytes) -> bool:
    """predict_untrusted never raises; what it returns equals the full parse.  True if it predicted."""
    fields = predict_untrusted(raw)
    if fields is None:
        return False
    fkey, _lkey, start, end = classify_untrusted(raw)
    seg = parse_tcp_untrusted(raw, start, end)
    assert fields == (
        fkey,
        seg.seq,
        seg.ack,
        int(seg.flags),
        seg.window,
        seg.urgent,
        seg.options,
        seg.payload,
        start,
        end,
    )
    return True


@settings(max_examples=int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "3000")), deadline=None)
@given(frames)
def test_header_prediction_never_raises_and_agrees_with_the_parser(raw):
    _agrees_with_the_full_parse(raw)


TS = (TcpOption(OptionKind.NOP), TcpOption(OptionKind.NOP), TcpOption.timestamps(7, 9))


@pytest.mark.parametrize(
    "frame",
    [
        make(),
        make(payload=b"abc", flags=TcpFlags.PSH | TcpFlags.ACK, urgent=3),
        make(options=TS, payload=b"x" * 100),
        make(flags=TcpFlags.FIN | TcpFlags.ACK),  # predicted by the wire; the core decides on flags
        make(V6, payload=b"abc"),
        make(V6, options=TS, payload=b"x" * 100),
    ],
    ids=["pure-ack", "data", "timestamps", "fin", "ipv6", "ipv6-timestamps"],
)
def test_common_ipv4_shapes_are_predicted(frame):
    assert _agrees_with_the_full_parse(build_frame(frame))


@pytest.mark.parametrize(
    "raw",
    [
        build_frame(make(options=(TcpOption.mss(1460),))),
        build_frame(
            make(
                options=(*TS, TcpOption(OptionKind.NOP), TcpOption(OptionKind.NOP), TcpOption.sack([(1, 2)]))
            )
        ),
        build_frame(make(), ip_options=b"\x01" * 4),
        _mutate(build_frame(make()), 20, b"\x00\x01"),  # fragment offset 8
        build_frame(make(payload=b"abc"))[:-1],  # IP total length past the frame
        _mutate(build_frame(make(V6)), 20, b"\x00"),  # IPv6 next header: hop-by-hop options
    ],
    ids=["mss-option", "sack-option", "ip-options", "fragment", "truncated", "ipv6-extension"],
)
def test_other_shapes_take_the_full_parser(raw):
    assert predict_untrusted(raw) is None


def test_struct_layout_of_tcp_header_offsets():
    # the fast path reads flags at tcp_start + 13 to spot SYNs
    raw = build_frame(make(flags=TcpFlags.SYN))
    _, _, start, _ = classify_untrusted(raw)
    assert raw[start + 13] & TcpFlags.SYN
    assert struct.unpack_from("!H", raw, start + 2)[0] == 80


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    "seg_kw",
    [
        {},
        {"payload": b"odd"},
        {"payload": bytes(range(256)) * 5, "flags": TcpFlags.PSH | TcpFlags.ACK},
        {"options": (TcpOption.mss(1460),), "flags": TcpFlags.SYN, "seq": 0xFFFFFFFF},
        {"payload": b"\x00" * 10, "urgent": 3, "window": 0},
    ],
)
def test_template_builds_the_same_bytes_as_dpkt(addrs, seg_kw):
    from tcpemu.wire import FrameTemplate

    frame = make(addrs, **seg_kw)
    template = FrameTemplate(frame.src_mac, frame.dst_mac, frame.src_ip, frame.dst_ip)
    assert template.build(frame.segment) == build_frame(frame)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([V4, V6]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0x1FF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
    st.lists(
        st.sampled_from([TcpOption(1), TcpOption.mss(536), TcpOption.timestamps(1, 2**32 - 1)]), max_size=3
    ),
    st.integers(0, 255),
    st.integers(1, 255),
    st.booleans(),
    st.integers(0, 0xFFFF),
)
def test_template_matches_dpkt_for_any_fields(
    addrs, seq, ack, flags, window, urgent, payload, opts, tos, ttl, df, ip_id
):
    from tcpemu.wire import FLAGS, FrameTemplate

    seg = Segment(40000, 80, seq, ack, FLAGS[flags], window, urgent, tuple(opts), payload)
    frame = Frame(MAC_A, MAC_B, addrs[0], addrs[1], seg, ttl=ttl, tos=tos, ip_id=ip_id, df=df)
    template = FrameTemplate(MAC_A, MAC_B, addrs[0], addrs[1], ttl=ttl, tos=tos, df=df)
    built = template.build(seg, ip_id if addrs is V4 else 0)
    assert built == build_frame(frame)
    assert tcp_checksum_ok(built)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_ones_sum_matches_the_word_loop(data):
    from tcpemu.wire import ones_sum

    padded = data + b"\x00" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert ones_sum(data) == total


def test_timestamp_options_are_shared_within_a_value_and_the_store_is_bounded():
    from tcpemu import wire

    def ts(tsval: int) -> bytes:
        return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, 7)

    first = decode_options_untrusted(ts(1))
    assert decode_options_untrusted(memoryview(ts(1))) is first  # one tuple for the segments of a millisecond
    assert first[2].value() == (1, 7)
    for tsval in range(5000):
        assert decode_options_untrusted(ts(tsval))[2].value() == (tsval, 7)
    assert 0 < len(wire._TS_OPTIONS) <= 1024
