"""Header prediction in the core (receive_predicted) against the general path
(receive with prediction off): the same receive state and the same messages
for any run of segments, with and without window scaling, timestamps and a
receive queue that fills up."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpemu import SERVER
from tcpemu.core import ConnectionCore
from tcpemu.wire import FLAGS, Segment, TcpFlags, TcpOption

A, S, P, F, U = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.PSH, TcpFlags.FIN, TcpFlags.URG
ISS, IRS = 1_000, 5_000
FIELDS = (
    "state",
    "rcv_nxt",
    "snd_una",
    "last_win_got",
    "last_seqn_got",
    "last_ackn_got",
    "last_tsval_got",
    "last_tsecr_got",
    "ts_recent",
    "fin_got",
)


def opened(*, wscale: bool, timestamps: bool, max_queue: int) -> ConnectionCore:
    syn_options = [TcpOption.mss(1460)]
    if wscale:
        syn_options.append(TcpOption.wscale(7))
    if timestamps:
        syn_options.append(TcpOption.timestamps(77, 0))
    core = ConnectionCore(
        SERVER,
        src_port=20000,
        dst_port=None,
        isn=ISS,
        max_queue=max_queue,
        wscale=2 if wscale else None,
        window=200_000 if wscale else None,
    )
    core.receive(Segment(40000, 20000, IRS, 0, S, 1000, options=tuple(syn_options)), 0.0)
    core.syn_ack(0.0)
    core.send(b"x" * 50, now=0.0)  # something in flight for the ACKs to move
    core.read_stream()
    return core


segments = st.lists(
    st.tuples(
        st.integers(-5, 40),  # seq offset from the first data byte
        st.sampled_from([A, A | P, A | U, A | F, A | P | TcpFlags.CWR]),
        st.binary(max_size=12),
        st.integers(0, 60),  # how much of our data it acknowledges
        st.integers(0, 0xFFFF),  # window
        st.one_of(st.none(), st.integers(0, 2**32 - 1)),  # TSval, None: no options
    ),
    min_size=1,
    max_size=16,
)


@settings(max_examples=int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "300")), deadline=None)
@given(segments, st.booleans(), st.booleans(), st.integers(1, 8))
def test_prediction_takes_segments_as_the_general_path_does(runs, wscale, timestamps, max_queue):
    predicted = opened(wscale=wscale, timestamps=timestamps, max_queue=max_queue)
    general = opened(wscale=wscale, timestamps=timestamps, max_queue=max_queue)
    taken = 0
    for i, (off, flags, payload, acked, window, tsval) in enumerate(runs):
        options = () if tsval is None else (TcpOption(1), TcpOption(1), TcpOption.timestamps(tsval, 9))
        seq, ack = (IRS + 1 + off) % 2**32, ISS + 1 + acked
        now = 1.0 + i
        msg = predicted.receive_predicted(seq, ack, int(flags), window, 0, options, payload, now)
        if msg is None:
            msg = predicted.receive(Segment(40000, 20000, seq, ack, flags, window, 0, options, payload), now)
        else:
            taken += 1
        seg = Segment(40000, 20000, seq, ack, FLAGS[int(flags)], window, 0, options, payload)
        assert general.receive(seg, now, predicted=True) == msg
        assert predicted.statistics() == general.statistics()
        for name in FIELDS:
            assert getattr(predicted, name) == getattr(general, name), name
    assert predicted.read_stream() == general.read_stream()
    first_offset, first_flags = runs[0][:2]
    if first_offset == 0 and not first_flags & F:
        assert taken  # the first one was in order: prediction took it, not the fallback
