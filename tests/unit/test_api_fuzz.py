"""Every public call of the connection, the listener and the engine, with arbitrary
arguments: each works or raises a TcpemuError, never a raw exception from a
dependency, and the pump survives it (a segment sent afterwards still arrives).
"""

from __future__ import annotations

import inspect
import os

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpemu
from tcpemu import MemoryLink, TcpemuError, TcpFlags, TcpOption

from .helpers import EMU_IP, EMU_MAC, PEER_MAC, PEER_PORT, Peer, open_server

A, P = TcpFlags.ACK, TcpFlags.PSH
EXAMPLES = int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "300"))

WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-2, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 2),
    st.text(max_size=6),
    st.binary(max_size=80),
    st.lists(st.integers(-5, 70000), max_size=3),
    st.tuples(st.text(max_size=12), st.integers(-1, 70000)),
    st.tuples(st.just(str(EMU_IP)), st.integers(-1, 70000)),
    st.sampled_from([tcpemu.AUTO, tcpemu.QUIET, TcpFlags.SYN, TcpFlags.FIN | TcpFlags.ACK, 0x210]),
    st.sampled_from([[TcpOption(1)], (TcpOption.mss(1),), [b"\x01"], b"\x00" * 60, [b"\x00" * 60]]),
    st.sampled_from([EMU_MAC, PEER_MAC, "02:00:00:00:00:09", "zz", bytearray(6), memoryview(b"x" * 6)]),
)


def _public(cls: type) -> dict[str, inspect.Signature]:
    out = {}
    for name, member in vars(cls).items():
        if name.startswith("_") or not callable(member) or isinstance(member, (classmethod, staticmethod)):
            continue
        out[name] = inspect.signature(member)
    return out


TARGETS = {
    "conn": _public(tcpemu.Connection),
    "listener": _public(tcpemu.Listener),
    "engine": _public(tcpemu.Engine),
}
SETTERS = {"conn": ["window"], "engine": ["reliable", "rto"]}
CALLS = [(kind, name) for kind, names in TARGETS.items() for name in sorted(names)] + [
    (kind, f"={attr}") for kind, attrs in SETTERS.items() for attr in attrs
]


@st.composite
def call(draw: st.DrawFn) -> tuple[str, str, list[object], dict[str, object]]:
    kind, name = draw(st.sampled_from(CALLS))
    if name.startswith("="):
        return kind, name, [draw(WILD)], {}
    params = list(TARGETS[kind][name].parameters.values())[1:]  # past self
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            kwargs.update(
                draw(st.dictionaries(st.sampled_from(["seq", "window", "bogus", "ttl"]), WILD, max_size=2))
            )
            continue
        if p.default is not p.empty and draw(st.booleans()):
            continue  # leave it at its default
        value = draw(WILD)
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return kind, name, args, kwargs


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(call(), min_size=1, max_size=4))
def test_any_arguments_work_or_raise_a_tcpemu_error_and_the_pump_lives(calls):
    async def main() -> None:
        emu_link, peer_link = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu_link, seed=5) as engine:
            peer = Peer(peer_link)
            conn, iss1 = await open_server(engine, peer)
            listener = engine.listen((str(EMU_IP), 30000), local_mac=EMU_MAC)
            objects = {"conn": conn, "listener": listener, "engine": engine}
            for kind, name, args, kwargs in calls:
                target = objects[kind]
                try:
                    with trio.move_on_after(3):  # virtual seconds: a call that waits is bounded
                        if name.startswith("="):
                            setattr(target, name[1:], args[0])
                        else:
                            result = getattr(target, name)(*args, **kwargs)
                            if inspect.isawaitable(result):
                                await result
                except TcpemuError:
                    pass  # refused with our own error: what the test asks
                except TypeError as exc:
                    # only Python's own call checking (wrong arity or an unknown keyword),
                    # never a TypeError from inside the library
                    assert "argument" in str(exc), exc
                    assert exc.__traceback__ is not None and exc.__traceback__.tb_next is None, exc
            # the pump survived: a segment from the peer still reaches the connection
            assert engine.statistics().internal_errors == 0
            if not conn._closed and not engine._closed:
                before = conn.statistics().segments_received
                peer.send(conn.next_ackn or 7001, iss1, A | P, b"alive", src_port=PEER_PORT)
                with trio.fail_after(3):
                    await conn.wait_until(lambda c: c.statistics().segments_received > before)
        peer_link.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
