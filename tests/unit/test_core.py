"""The sans-IO core, grouped by TCP state, with small builders (no network, explicit now)."""

from __future__ import annotations

import ast
import enum
import pathlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpemu import AUTO, CLIENT, QUIET, SERVER, SegmentKind, TcpState, UsageError, WouldBlock
from tcpemu.core import TRANSITIONS, ConnectionCore, StateEvent, seq_add, seq_diff
from tcpemu.wire import OptionKind, Segment, TcpFlags, TcpOption

ISS = 1_000
IRS = 5_000
A, S, F, R, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH


def seg(
    seq: int, ack: int = 0, flags: TcpFlags = A, payload: bytes = b"", window: int = 1000, **kw
) -> Segment:
    """A segment from the peer (port 40000) to the emulator (port 20000)."""
    return Segment(40000, 20000, seq, ack, flags, window, payload=payload, **kw)


def expect(core: ConnectionCore, now: float, s: Segment, kind: SegmentKind) -> None:
    msg = core.receive(s, now)
    assert msg.kind is kind, f"{s} classified {msg.kind}, expected {kind}"


def expect_nothing_queued(core: ConnectionCore) -> None:
    with pytest.raises(WouldBlock):
        core.pop_message_nowait()


def listen() -> ConnectionCore:
    return ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS)


def syn_received() -> ConnectionCore:
    core = listen()
    core.receive(seg(IRS, flags=S, options=(TcpOption.mss(1460),)), 0.0)
    core.syn_ack(0.0)
    return core


@pytest.fixture
def established() -> ConnectionCore:
    core = syn_received()
    core.receive(seg(IRS + 1, ISS + 1), 0.1)
    core.read_stream()  # empty the queue: tests start from a clean slate
    assert core.state is TcpState.ESTABLISHED
    return core


# ------------------------------------------------------------------ LISTEN


class TestListen:
    def test_starts_in_listen_and_sends_nothing(self):
        core = listen()
        assert core.state is TcpState.LISTEN
        assert core.first_seqn_sent is None and core.next_ackn is None
        assert core.statistics().segments_sent == 0

    def test_syn_is_recorded_but_answered_only_on_request(self):
        core = listen()
        expect(core, 0.0, seg(IRS, flags=S), SegmentKind.EXPECTED)
        assert core.state is TcpState.LISTEN
        assert (core.first_seqn_got, core.next_ackn, core.dst_port) == (IRS, IRS + 1, 40000)
        out = core.syn_ack(0.0)
        assert out.flags == S | A and out.seq == ISS and out.ack == IRS + 1
        assert out.option(OptionKind.MSS).value() == 1460
        assert core.state is TcpState.SYN_RECEIVED and core.next_seqn == ISS + 1

    def test_syn_ack_without_syn_is_local_misuse(self):
        with pytest.raises(UsageError, match="no SYN from the peer"):
            listen().syn_ack(0.0)

    def test_send_before_remote_port_known_raises(self):
        with pytest.raises(UsageError, match="remote port is not known"):
            listen().send(b"x", now=0.0)

    def test_segments_before_syn_are_unexpected(self):
        core = listen()
        expect(core, 0.0, seg(IRS, 7), SegmentKind.UNEXPECTED)
        assert core.next_ackn is None and core.last_ackn_got is None
        assert core.statistics().unexpected_seen == 1

    def test_retransmitted_syn_is_flagged(self):
        core = listen()
        core.receive(seg(IRS, flags=S), 0.0)
        expect(core, 1.0, seg(IRS, flags=S), SegmentKind.RETRANSMIT)
        expect(core, 1.0, seg(IRS + 99, flags=S), SegmentKind.UNEXPECTED)
        assert core.next_ackn == IRS + 1

    @pytest.mark.parametrize("reliable", [False, True])
    def test_fork_is_a_fresh_core_that_shares_nothing_mutable(self, reliable):
        kw = dict(window=30_000, mss=1400, max_queue=9, reliable=reliable, rto=0.5, sack=True, wscale=3)
        proto = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=0, **kw)
        fork = proto.fork(dst_port=40000, isn=ISS)
        made = ConnectionCore(SERVER, src_port=20000, dst_port=40000, isn=ISS, **kw)
        immutable = (int, float, str, bytes, tuple, frozenset, type(None), enum.Enum)
        for name in ConnectionCore.__slots__:
            value = getattr(fork, name)
            if not isinstance(value, immutable):
                assert value is not getattr(proto, name), f"{name} is shared with the prototype"
                assert type(value) is type(getattr(made, name)) and value == getattr(made, name), name
            else:
                assert value == getattr(made, name), name
        # two forks live independent lives, and the prototype stays unused
        other = proto.fork(dst_port=40001, isn=ISS + 7)
        fork.receive(seg(IRS, flags=S, payload=b"x"), 0.0)
        fork.syn_ack(0.0)
        assert fork.state is TcpState.SYN_RECEIVED and fork.stream_available() == 1
        assert other.state is proto.state is TcpState.LISTEN
        assert other.stream_available() == proto.stream_available() == 0
        assert other.statistics().segments_received == proto.statistics().segments_received == 0
        assert proto.pending() == other.pending() == 0 and other.next_seqn == ISS + 7

    def test_fork_of_a_used_core_is_local_misuse(self):
        with pytest.raises(UsageError, match="fork needs an unused core"):
            syn_received().fork(dst_port=40000, isn=ISS)


class TestListenHandshake:
    """core.handshake(now): the decisions wait_open and a listener take, as data."""

    def test_nothing_is_due_before_the_peer_syn(self):
        core = listen()
        assert core.handshake(0.0) == (None, False)
        assert core.statistics().segments_sent == 0

    def test_the_peer_syn_is_answered_with_a_syn_ack_once(self):
        core = listen()
        core.receive(seg(IRS, flags=S), 0.0)
        answer, opened = core.handshake(0.5)
        assert answer is not None and answer.flags == S | A and (answer.seq, answer.ack) == (ISS, IRS + 1)
        assert not opened and core.state is TcpState.SYN_RECEIVED
        assert core.handshake(0.6) == (None, False)  # the ACK of our SYN is awaited

    def test_open_once_the_peer_acks(self):
        core = syn_received()
        core.receive(seg(IRS + 1, ISS + 1), 0.1)
        assert core.handshake(0.2) == (None, True) and core.opened

    def test_the_state_moves_are_events(self):
        core = listen()
        core.receive(seg(IRS, flags=S), 0.0)
        core.handshake(0.0)
        assert [e.text for e in core.pop_events()] == ["state LISTEN -> SYN_RECEIVED"]
        assert core.pop_events() == []


# ------------------------------------------------------------- SYN-SENT


class TestSynSent:
    def client(self) -> ConnectionCore:
        core = ConnectionCore(CLIENT, src_port=20000, dst_port=40000, isn=ISS)
        out = core.syn(0.0)
        assert out.flags == S and out.seq == ISS and out.ack == 0
        return core

    def test_syn_moves_to_syn_sent(self):
        core = self.client()
        assert core.state is TcpState.SYN_SENT
        assert core.first_seqn_sent == ISS and core.next_seqn == ISS + 1
        with pytest.raises(UsageError, match="already sent"):
            core.syn(0.0)

    def test_client_needs_remote_port(self):
        with pytest.raises(UsageError, match="CLIENT mode needs the remote port"):
            ConnectionCore(CLIENT, src_port=1, dst_port=None, isn=0)

    def test_syn_ack_then_our_ack_establishes(self):
        core = self.client()
        core.receive(seg(IRS, ISS + 1, S | A), 0.0)
        assert core.syn_ack_got and core.state is TcpState.SYN_SENT
        ack = core.ack_now(0.0)
        assert (ack.seq, ack.ack, ack.flags) == (ISS + 1, IRS + 1, A)
        assert core.state is TcpState.ESTABLISHED

    def test_syn_ack_with_wrong_ack_does_not_complete(self):
        core = self.client()
        core.receive(seg(IRS, ISS + 7, S | A), 0.0)
        assert not core.syn_ack_got

    def test_acceptable_rst_closes(self):
        core = self.client()
        core.receive(seg(0, ISS + 1, R | A), 0.0)
        assert core.rst_got and core.state is TcpState.CLOSED

    def test_rst_not_acking_our_syn_is_ignored(self):
        core = self.client()
        core.receive(seg(0, ISS + 5, R | A), 0.0)
        assert not core.rst_got and core.state is TcpState.SYN_SENT
        assert core.statistics().rst_ignored == 1

    def test_handshake_acks_the_syn_ack_and_opens(self):
        core = self.client()
        assert core.handshake(0.0) == (None, False)  # holding: no SYN-ACK yet
        core.receive(seg(IRS, ISS + 1, S | A), 0.0)
        answer, opened = core.handshake(0.1)
        assert answer is not None and (answer.flags, answer.ack) == (A, IRS + 1) and opened
        assert core.state is TcpState.ESTABLISHED

    def test_handshake_answers_a_crossing_syn_once(self):
        core = self.client()
        core.receive(seg(IRS, flags=S), 0.0)
        answer, opened = core.handshake(0.0)
        assert answer is not None and (answer.flags, answer.seq) == (S | A, ISS) and not opened
        assert core.handshake(0.1) == (None, False)
        core.receive(seg(IRS + 1, ISS + 1), 0.1)
        assert core.handshake(0.2) == (None, True)

    def test_rst_verdicts_are_events(self):
        core = self.client()
        assert [e.text for e in core.pop_events()] == ["state CLOSED -> SYN_SENT"]
        core.receive(seg(0, ISS + 5, R | A), 0.0)
        (event,) = core.pop_events()
        assert event.kind == "rst-ignored" and "must ACK our SYN" in event.text

    def test_simultaneous_open(self):
        core = self.client()
        core.receive(seg(IRS, flags=S), 0.0)
        assert core.state is TcpState.SYN_RECEIVED
        core.send(seq=ISS, flags=S | A, now=0.0)
        core.receive(seg(IRS + 1, ISS + 1), 0.1)
        assert core.state is TcpState.ESTABLISHED


# --------------------------------------------------------- SYN-RECEIVED


class TestSynReceived:
    def test_ack_of_syn_establishes(self):
        core = syn_received()
        core.receive(seg(IRS + 1, ISS + 1), 0.1)
        assert core.state is TcpState.ESTABLISHED and core.last_ackn_got == ISS + 1

    def test_fin_from_syn_received(self):
        core = syn_received()
        core.fin(0.0)
        assert core.state is TcpState.FIN_WAIT_1


# ---------------------------------------------------------- ESTABLISHED


class TestEstablishedAcks:
    """core.should_ack(): when a receiver owes an ACK (recv_data's rule, now the core's)."""

    def test_new_data_is_owed_an_ack_until_one_is_sent(self, established):
        assert not established.should_ack()
        established.receive(seg(IRS + 1, ISS + 1, A | P, b"abc"), 1.0)
        assert established.should_ack()
        established.ack_now(1.0)
        assert not established.should_ack()

    def test_a_retransmit_or_out_of_order_segment_is_owed_a_duplicate_ack(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A | P, b"abc"), 1.0)
        established.ack_now(1.0)
        established.receive(seg(IRS + 1, ISS + 1, A | P, b"abc"), 1.1)  # again
        assert established.should_ack()
        established.ack_now(1.1)
        established.receive(seg(IRS + 10, ISS + 1, A | P, b"later"), 1.2)  # a gap before it
        assert established.should_ack() and established.next_ackn == IRS + 4

    def test_a_probe_is_recognised_and_our_own_probe_is_one_below(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A | P, b"abc"), 1.0)
        probe = established.receive(seg(IRS + 3, ISS + 1, A), 2.0)
        assert probe.kind is SegmentKind.RETRANSMIT and established.is_probe(probe)
        ours = established.window_probe(2.0)
        assert (ours.seq, ours.flags, ours.payload) == (ISS, A, b"")
        assert established.next_seqn == ISS + 1  # a probe takes no sequence space


class TestNumbering:
    def test_auto_seq_advances_and_auto_ack_is_next_ackn(self, established):
        out = established.send(b"abc", now=0.0)
        assert (out.seq, out.ack, out.flags) == (ISS + 1, IRS + 1, A | P)
        assert established.next_seqn == ISS + 4
        assert (established.last_seqn_sent, established.last_ackn_sent) == (ISS + 1, IRS + 1)

    def test_explicit_seq_does_not_advance_until_update_sent_seq(self, established):
        out = established.send(b"abc", seq=ISS + 100, now=0.0)
        assert out.seq == ISS + 100 and established.next_seqn == ISS + 1
        established.update_sent_seq(3)
        assert established.next_seqn == ISS + 4
        with pytest.raises(UsageError):
            established.update_sent_seq(-1)

    def test_quiet_seq_and_ack(self, established):
        out = established.send(b"x", seq=QUIET, ack=QUIET, now=0.0)
        assert out.seq == 0 and out.ack == 0 and not out.flags & A
        assert established.next_seqn == ISS + 1

    def test_explicit_ack_and_flags_are_used_as_given(self, established):
        out = established.send(ack=77, flags=F | R | TcpFlags.URG, window=0, urgent=5, now=0.0)
        assert (out.ack, out.flags, out.window, out.urgent) == (77, F | R | TcpFlags.URG, 0, 5)

    def test_bad_numbers_are_usage_errors(self, established):
        with pytest.raises(UsageError, match="32-bit"):
            established.send(seq=-1, now=0.0)
        with pytest.raises(UsageError, match="32-bit"):
            established.send(ack=1 << 32, now=0.0)
        with pytest.raises(UsageError, match="window"):
            established.send(window=70000, now=0.0)
        with pytest.raises(UsageError, match="payload must be bytes"):
            established.send("text", now=0.0)  # type: ignore[arg-type]

    def test_auto_values_after_receiving(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A | P, b"hello"), 1.0)
        assert established.send(b"", now=0.0).ack == IRS + 6

    def test_seq_wraps_around(self):
        core = ConnectionCore(SERVER, src_port=1, dst_port=2, isn=(1 << 32) - 2)
        core.receive(seg((1 << 32) - 1, flags=S), 0.0)
        core.syn_ack(0.0)
        assert core.next_seqn == (1 << 32) - 1 and core.next_ackn == 0
        core.receive(seg(0, (1 << 32) - 1, A | P, b"abcd"), 0.1)
        assert core.next_ackn == 4 and core.read_stream() == b"abcd"
        out = core.send(b"xy", now=0.0)
        assert out.seq == (1 << 32) - 1 and core.next_seqn == 1


class TestReceive:
    def test_expected_data_moves_the_receive_state(self, established):
        expect(established, 1.0, seg(IRS + 1, ISS + 1, A | P, b"abc", window=777), SegmentKind.EXPECTED)
        assert established.next_ackn == IRS + 4
        assert established.last_seqn_got == IRS + 1
        assert established.last_win_got == 777
        assert established.read_stream() == b"abc"

    def test_predicted_segment_is_taken_as_receive_takes_it(self, established):
        msg = established.receive_predicted(IRS + 1, ISS + 1, int(A | P), 777, 0, (), b"abc", 1.0)
        assert msg is not None and msg.kind is SegmentKind.EXPECTED and msg.flags == A | P
        assert (established.next_ackn, established.last_win_got) == (IRS + 4, 777)
        assert established.pop_message_nowait() == msg and established.read_stream() == b""

    @pytest.mark.parametrize(
        "seq, flags",
        [(IRS + 2, A), (IRS, A), (IRS + 1, A | F), (IRS + 1, R), (IRS + 1, S | A)],
        ids=["ahead", "behind", "fin", "rst", "syn"],
    )
    def test_unpredicted_segment_changes_nothing(self, established, seq, flags):
        before = (established.statistics(), established.next_ackn, established.last_win_got)
        assert established.receive_predicted(seq, ISS + 1, int(flags), 5, 0, (), b"x", 1.0) is None
        assert (established.statistics(), established.next_ackn, established.last_win_got) == before
        expect_nothing_queued(established)

    def test_nothing_is_predicted_before_the_syn(self):
        core = listen()
        assert core.receive_predicted(0, 0, int(A), 5, 0, (), b"", 1.0) is None
        assert core.statistics().segments_received == 0

    def test_retransmit_is_queued_flagged_and_moves_nothing(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 1.0)
        expect(established, 2.0, seg(IRS + 1, ISS + 1, A, b"abc"), SegmentKind.RETRANSMIT)
        assert established.next_ackn == IRS + 4 and established.last_seqn_got == IRS + 1
        assert established.statistics().retransmits_seen == 1
        assert [m.kind for m in (established.pop_message_nowait(), established.pop_message_nowait())] == [
            SegmentKind.EXPECTED,
            SegmentKind.RETRANSMIT,
        ]

    def test_skip_retransmits(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 1.0)
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 2.0)
        established.receive(seg(IRS + 4, ISS + 1, A, b"def"), 3.0)
        first = established.pop_message_nowait(skip_retransmits=True)
        second = established.pop_message_nowait(skip_retransmits=True)
        assert (first.payload, second.payload) == (b"abc", b"def")
        expect_nothing_queued(established)

    def test_out_of_order_is_kept_and_reassembled(self, established):
        expect(established, 1.0, seg(IRS + 4, ISS + 1, A, b"def"), SegmentKind.OUT_OF_ORDER)
        assert established.next_ackn == IRS + 1
        expect(established, 2.0, seg(IRS + 1, ISS + 1, A, b"abc"), SegmentKind.EXPECTED)
        assert established.next_ackn == IRS + 7
        assert established.read_stream() == b"abcdef"

    def test_partial_overlap_takes_only_the_new_bytes(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 1.0)
        expect(established, 2.0, seg(IRS + 2, ISS + 1, A, b"bcde"), SegmentKind.RETRANSMIT)
        assert established.next_ackn == IRS + 6
        assert established.read_stream() == b"abcde"

    def test_overlapping_out_of_order_pieces(self, established):
        established.receive(seg(IRS + 3, ISS + 1, A, b"cdef"), 1.0)
        established.receive(seg(IRS + 5, ISS + 1, A, b"efgh"), 1.0)
        established.receive(seg(IRS + 1, ISS + 1, A, b"ab"), 1.0)
        assert established.read_stream() == b"abcdefgh"
        assert established.next_ackn == IRS + 9

    def test_pure_ack_in_order_is_expected(self, established):
        established.send(b"xyz", now=0.0)
        expect(established, 1.0, seg(IRS + 1, ISS + 4), SegmentKind.EXPECTED)
        assert established.last_ackn_got == ISS + 4 and established.snd_una == ISS + 4

    def test_ack_beyond_snd_nxt_does_not_move_snd_una(self, established):
        established.receive(seg(IRS + 1, ISS + 999), 1.0)
        assert established.last_ackn_got == ISS + 999 and established.snd_una == ISS + 1

    def test_queue_overflow_is_counted_and_state_still_moves(self, caplog):
        core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS, max_queue=2)
        core.receive(seg(IRS, flags=S), 0.0)
        core.receive(seg(IRS + 1, 0, A, b"a"), 0.0)
        core.receive(seg(IRS + 2, 0, A, b"b"), 0.0)
        assert core.statistics().queue_overflows == 1
        assert "receive queue full" in caplog.text
        assert core.next_ackn == IRS + 3 and core.pending() == 2
        assert core.read_stream() == b"ab"

    def test_stream_bound_is_counted(self):
        core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS, max_stream=4)
        core.receive(seg(IRS, flags=S), 0.0)
        core.receive(seg(IRS + 1, 0, A, b"abcdef"), 0.0)
        assert core.statistics().stream_overflow_bytes == 2
        assert core.next_ackn == IRS + 7 and core.read_stream() == b"abcd"

    def test_recv_msg_consumes_its_bytes_from_the_stream(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 1.0)
        established.receive(seg(IRS + 4, ISS + 1, A, b"def"), 1.0)
        assert established.pop_message_nowait().payload == b"abc"
        assert established.read_stream() == b"def"

    def test_info_is_none_where_there_is_no_value(self):
        core = listen()
        assert core.first_seqn_got is None
        assert core.last_seqn_got is None
        assert core.last_ackn_got is None
        assert core.last_seqn_sent is None
        assert core.last_ackn_sent is None
        assert core.last_win_got is None
        assert core.next_ackn is None
        assert core.first_seqn_sent is None


# ------------------------------------------------------------ closing


class TestClosing:
    def test_fin_with_data_counts_in_next_ackn(self, established):
        established.receive(seg(IRS + 1, ISS + 1, A | F, b"bye"), 1.0)
        assert established.fin_got and established.next_ackn == IRS + 5
        assert established.state is TcpState.CLOSE_WAIT
        established.fin(0.0)
        assert established.state is TcpState.LAST_ACK
        established.receive(seg(IRS + 5, ISS + 2), 2.0)
        assert established.fin_acked and established.state is TcpState.CLOSED

    def test_out_of_order_fin_waits_for_the_gap(self, established):
        established.receive(seg(IRS + 4, ISS + 1, A | F, b"def"), 1.0)
        assert not established.fin_got
        established.receive(seg(IRS + 1, ISS + 1, A, b"abc"), 2.0)
        assert established.fin_got and established.next_ackn == IRS + 8
        assert established.read_stream() == b"abcdef"

    def test_active_close_to_time_wait(self, established):
        out = established.fin(0.0)
        assert out.flags == F | A and established.next_seqn == ISS + 2
        assert established.state is TcpState.FIN_WAIT_1 and not established.fin_acked
        established.receive(seg(IRS + 1, ISS + 2), 1.0)
        assert established.state is TcpState.FIN_WAIT_2 and established.fin_acked
        established.receive(seg(IRS + 1, ISS + 2, F | A), 2.0)
        assert established.state is TcpState.TIME_WAIT

    def test_simultaneous_close(self, established):
        established.fin(0.0)
        established.receive(seg(IRS + 1, ISS + 1, F | A), 1.0)
        assert established.state is TcpState.CLOSING
        established.receive(seg(IRS + 2, ISS + 2), 2.0)
        assert established.state is TcpState.TIME_WAIT

    def test_fin_before_handshake_is_misuse(self):
        with pytest.raises(UsageError, match="before the handshake"):
            listen().fin(0.0)

    def test_rst_in_window_closes(self, established):
        established.receive(seg(IRS + 1, 0, R), 1.0)
        assert established.rst_got and established.state is TcpState.CLOSED

    def test_rst_out_of_window_is_ignored(self, established):
        established.receive(seg(IRS + 100_000, 0, R), 1.0)
        assert not established.rst_got and established.statistics().rst_ignored == 1

    def test_sending_rst_closes(self, established):
        out = established.rst(0.0)
        assert out.flags == R | A and out.seq == ISS + 1
        assert established.state is TcpState.CLOSED


# ----------------------------------------------------- the state table


def test_transition_table_is_data_with_rfc_names():
    assert {s.value for s in TcpState} >= {"SYN-RECEIVED", "FIN-WAIT-1", "TIME-WAIT"}
    for (state, event), new in TRANSITIONS.items():
        assert isinstance(state, TcpState) and isinstance(event, StateEvent) and isinstance(new, TcpState)
    reachable = {TcpState.CLOSED}
    for _ in TcpState:
        reachable |= {new for (s, _e), new in TRANSITIONS.items() if s in reachable}
    assert reachable == set(TcpState)


def test_state_names_parse_in_every_spelling():
    assert TcpState.parse("FIN_WAIT1") is TcpState.FIN_WAIT_1
    assert TcpState.parse("syn-received") is TcpState.SYN_RECEIVED
    assert TcpState.parse("SYN_RECV") is TcpState.SYN_RECEIVED
    from tcpemu.tcpinfo import state_from_linux

    assert state_from_linux(1) is TcpState.ESTABLISHED
    assert state_from_linux(10) is TcpState.LISTEN
    assert state_from_linux(12) is TcpState.SYN_RECEIVED
    with pytest.raises(UsageError, match="unknown TCP state"):
        TcpState.parse("HALF_OPEN")


def test_seq_arithmetic():
    assert seq_add((1 << 32) - 1, 2) == 1
    assert seq_diff(1, (1 << 32) - 1) == 2
    assert seq_diff((1 << 32) - 1, 1) == -2


def test_core_imports_no_io():
    """The sans-IO layers import no trio, socket, time or random (and nothing of the engine)."""
    banned = {"trio", "socket", "time", "random", "select", "threading", "asyncio"}
    pkg = pathlib.Path(__file__).parents[2] / "tcpemu"
    sans_io = (
        "core.py", "_state.py", "_message.py", "_send.py", "_options.py", "_retransmit.py",
        "_receive_buffer.py", "_checks.py", "wire.py", "_errors.py",
    )  # fmt: skip
    for name in sans_io:
        tree = ast.parse((pkg / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]} if node.level == 0 else {node.module or ""}
            else:
                continue
            assert not mods & banned, f"{name} imports {mods & banned}"
            assert not mods & {"_engine", "_io", "lab", "net"}, f"{name} imports a higher layer: {mods}"


# ---------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    cuts=st.lists(st.integers(1, 399), max_size=12),
    seed=st.integers(0, 2**32),
    dups=st.integers(0, 4),
    irs=st.integers(0, (1 << 32) - 1),
    fin=st.booleans(),
)
def test_any_segmentation_order_and_duplication_reassembles_the_stream(data, cuts, seed, dups, irs, fin):
    rng = random.Random(seed)
    core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS)
    core.receive(seg(irs, flags=S), 0.0)
    core.syn_ack(0.0)
    bounds = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    pieces += [rng.choice(pieces) for _ in range(dups)]
    rng.shuffle(pieces)
    last_nxt = core.next_ackn
    got = bytearray()
    for i, (a, b) in enumerate(pieces):
        flags = A | (F if fin and b == len(data) else TcpFlags(0))
        core.receive(seg(seq_add(irs, 1 + a), ISS + 1, flags, data[a:b]), float(i))
        assert seq_diff(core.next_ackn, last_nxt) >= 0, "next_ackn moved backwards"
        last_nxt = core.next_ackn
        got += core.read_stream()
    assert bytes(got) == data
    assert core.next_ackn == seq_add(irs, 1 + len(data) + fin)
    assert core.fin_got is fin


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 32) - 1), st.binary(max_size=20), st.integers(0, 0x1FF))))
def test_arbitrary_segments_never_raise_and_keep_counts(segments):
    core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS, max_queue=5)
    for i, (seq, payload, flags) in enumerate(segments):
        core.receive(seg(seq, seq ^ 0x5555, TcpFlags(flags), payload), float(i))
    stats = core.statistics()
    assert stats.segments_received == len(segments)
    assert stats.queued_messages + stats.queue_overflows == len(segments)
    assert stats.queued_messages <= 5


def test_auto_is_the_default_sentinel():
    assert repr(AUTO) == "tcpemu.AUTO" and repr(QUIET) == "tcpemu.QUIET"


# ------------------------------------------------------------- options


def opened_with(peer_options, **kw) -> tuple[ConnectionCore, Segment]:
    core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS, **kw)
    core.receive(seg(IRS, flags=S, options=tuple(peer_options)), 0.0)
    synack = core.syn_ack(now=0.0)
    core.receive(seg(IRS + 1, ISS + 1, window=100), 0.001)
    return core, synack


class TestOptions:
    LINUX_SYN = (
        TcpOption.mss(1460),
        TcpOption.sack_permitted(),
        TcpOption.timestamps(777, 0),
        TcpOption(OptionKind.NOP),
        TcpOption.wscale(7),
    )

    def test_syn_ack_offers_only_what_the_peer_offered(self):
        _, synack = opened_with([TcpOption.mss(1000)], wscale=5, sack=True, timestamps=True)
        assert [o.kind for o in synack.options] == [OptionKind.MSS]

    def test_full_negotiation_in_linux_order(self):
        core, synack = opened_with(self.LINUX_SYN, wscale=5, sack=True)
        kinds = [o.kind for o in synack.options]
        assert kinds == [
            OptionKind.MSS,
            OptionKind.SACK_PERMITTED,
            OptionKind.TIMESTAMP,
            OptionKind.NOP,
            OptionKind.WSCALE,
        ]
        assert synack.option(OptionKind.TIMESTAMP).value()[1] == 777  # echo of the peer's TSval
        assert (core.snd_wscale, core.rcv_wscale, core.sack_ok, core.ts_enabled) == (7, 5, True, True)
        assert core.last_win_got == 100 << 7  # the peer's window, scaled

    def test_window_scaled_both_ways(self):
        core, synack = opened_with(self.LINUX_SYN, wscale=5, window=200_000)
        assert synack.window == 0xFFFF  # a SYN's window is never scaled
        out = core.send(b"x", now=0.01)
        assert out.window == 200_000 >> 5
        syn_msg, ack_msg = core.pop_message_nowait(), core.pop_message_nowait()
        assert syn_msg.window_bytes == syn_msg.window == 1000  # a SYN's window is never scaled
        assert (ack_msg.window, ack_msg.window_bytes) == (100, 100 << 7)

    def test_timestamps_on_every_segment_and_echo_ts_recent(self):
        core, _ = opened_with(self.LINUX_SYN, ts_start=1000)
        core.receive(seg(IRS + 1, ISS + 1, options=(TcpOption.timestamps(900, 1000),)), 0.5)
        out = core.send(b"data", now=0.25)
        assert out.option(OptionKind.TIMESTAMP).value() == (1250, 900)  # ts_start + 250 ms, echo 900
        assert (core.last_tsval_sent, core.last_tsecr_sent, core.last_tsval_got) == (1250, 900, 900)

    def test_no_timestamps_when_the_peer_sent_none(self):
        core, _ = opened_with([TcpOption.mss(1460)], timestamps=None)
        assert not core.ts_enabled and core.send(b"x", now=1.0).options == ()

    def test_sack_blocks_from_the_out_of_order_store(self):
        core, _ = opened_with(self.LINUX_SYN, sack=True, timestamps=False)
        core.receive(seg(IRS + 11, ISS + 1, payload=b"b" * 10), 1.0)
        core.receive(seg(IRS + 31, ISS + 1, payload=b"c" * 5), 1.0)
        core.receive(seg(IRS + 21, ISS + 1, payload=b"x" * 10), 1.0)  # joins the first block
        assert core.sack_blocks() == [(IRS + 11, IRS + 36)]
        ack = core.ack_now(0.0)
        assert ack.option(OptionKind.SACK).value() == [(IRS + 11, IRS + 36)]
        core.receive(seg(IRS + 1, ISS + 1, payload=b"a" * 10), 1.1)  # the gap fills
        assert core.sack_blocks() == [] and core.ack_now(0.0).options == ()

    def test_bad_option_settings(self):
        with pytest.raises(UsageError, match=r"wscale \(RFC 7323\) must be an int 0\.\.14"):
            ConnectionCore(SERVER, src_port=1, dst_port=None, isn=0, wscale=15)
        with pytest.raises(UsageError, match="window must be"):
            ConnectionCore(SERVER, src_port=1, dst_port=None, isn=0, window=70000)


def test_messages_carry_their_relative_numbers(established):
    """Message.rel_seq / rel_ack count from the ISNs, as the trace and packetdrill do."""
    msg = established.receive(seg(IRS + 1, ISS + 1, A | P, b"abc"), 1.0)
    assert (msg.rel_seq, msg.rel_ack) == (1, 1)
    wrapped = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=(1 << 32) - 1)
    syn = wrapped.receive(seg((1 << 32) - 2, flags=S), 0.0)
    assert (syn.rel_seq, syn.seq_base, syn.ack_base) == (0, (1 << 32) - 2, None)
    wrapped.syn_ack(0.0)
    ack = wrapped.receive(seg((1 << 32) - 1, 0), 0.1)  # both numbers wrap around 2**32
    assert (ack.rel_seq, ack.rel_ack) == (1, 1)


# ------------------------------------------------------ the unread stream


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("data"), st.binary(min_size=1, max_size=9)),
            st.tuples(st.just("read_bytes"), st.integers(0, 30)),
            st.tuples(st.just("unread"), st.binary(max_size=5)),
            st.tuples(st.just("read_stream"), st.none()),
        ),
        max_size=30,
    ),
    st.sampled_from([12, 1 << 20]),
)
def test_the_unread_stream_reads_as_one_byte_string_would(steps, max_stream):
    """The stream keeps the segments' pieces; every way of reading it gives what a plain
    byte string would, across piece boundaries and at its bound."""
    core = syn_received()
    core.receive(seg(IRS + 1, ISS + 1), 0.1)
    core.read_stream()
    core.max_stream = max_stream
    model, seq = b"", IRS + 1
    for what, arg in steps:
        if what == "data":
            core.receive(seg(seq, ISS + 1, payload=arg), 1.0)
            seq += len(arg)
            model += arg[: max(0, max_stream - len(model))]
        elif what == "read_bytes":
            assert core.read_bytes(arg) == model[:arg]
            model = model[arg:]
        elif what == "unread":
            core.unread(arg)
            model = arg + model
        else:
            assert core.read_stream() == model
            model = b""
        assert core.stream_available() == len(model)
    assert core.read_stream() == model
