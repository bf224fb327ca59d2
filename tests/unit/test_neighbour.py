"""ARP and NDP frames: what the engine sends parses back, with valid checksums."""

from __future__ import annotations

import ipaddress

import pytest

from tcpemu import MalformedFrameError
from tcpemu.neighbour import (
    arp_reply,
    arp_request,
    neighbour_advertisement,
    neighbour_solicitation,
    parse_neighbour_untrusted,
    solicited_node,
)
from tcpemu.wire import ones_sum

MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
V4A, V4B = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.5")
V6A, V6B = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::5")


def icmp6_checksum_ok(frame: bytes) -> bool:
    body = frame[54:]
    pseudo = frame[22:54] + len(body).to_bytes(4, "big") + b"\x00\x00\x00\x3a"
    return ones_sum(pseudo + body) == 0xFFFF


def test_arp_request_and_reply_round_trip():
    req = parse_neighbour_untrusted(arp_request(MAC_A, V4A, V4B))
    assert (req.request, req.target, req.sender_ip, req.sender_mac) == (True, V4B, V4A, MAC_A)
    rep_frame = arp_reply(MAC_B, V4B, MAC_A, V4A)
    assert rep_frame[:6] == MAC_A  # sent to the asker
    rep = parse_neighbour_untrusted(rep_frame)
    assert (rep.request, rep.target, rep.sender_mac) == (False, V4B, MAC_B)  # about V4B: its MAC


def test_ndp_solicitation_and_advertisement_round_trip():
    ns = neighbour_solicitation(MAC_A, V6A, V6B)
    assert ns[:2] == b"\x33\x33" and ns[38:54] == solicited_node(V6B).packed and ns[21] == 255
    assert icmp6_checksum_ok(ns)
    msg = parse_neighbour_untrusted(ns)
    assert (msg.request, msg.target, msg.sender_ip, msg.sender_mac) == (True, V6B, V6A, MAC_A)
    na = neighbour_advertisement(MAC_B, V6B, MAC_A, V6A)
    assert icmp6_checksum_ok(na) and na[:6] == MAC_A
    assert int.from_bytes(na[58:62], "big") & 0x60000000 == 0x60000000  # solicited, override
    ans = parse_neighbour_untrusted(na)
    assert (ans.request, ans.target, ans.sender_mac) == (False, V6B, MAC_B)


def test_bad_neighbour_frames_are_malformed():
    with pytest.raises(MalformedFrameError) as info:
        parse_neighbour_untrusted(arp_request(MAC_A, V4A, V4B)[:30])
    assert info.value.reason == "arp"
    bad = bytearray(neighbour_solicitation(MAC_A, V6A, V6B))
    bad[79] = 0  # an option of length 0 would loop for ever
    with pytest.raises(MalformedFrameError) as info:
        parse_neighbour_untrusted(bytes(bad))
    assert info.value.reason == "ndp"
