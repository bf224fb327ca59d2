"""packetdrill's notation for segments: parse, format, compare, and the async helpers.

A segment in packetdrill's notation reads
``P. 1:1001(1000) ack 1 win 257 <nop,nop,TS val 100 ecr 7>``: the flags
(``F S R P . U E W``, with ``.`` for ACK and ``A`` for AE), the sequence
range ``start:end(length)`` relative to the sender's ISN, then ``ack``
relative to the receiver's ISN, ``win`` (the raw 16-bit field), ``urg``
(the urgent pointer) and the options between ``<`` and ``>``.

Patterns parsed from text may leave fields out: an omitted ``ack``,
``win`` or ``urg`` matches anything, ``<...>`` matches any options, and
``*`` matches any value of a number (``ack *``, ``TS val * ecr 0``).
Whether omitted options mean "any" or "none" is the caller's choice:
:func:`expect` takes them as any, the packetdrill runner (as packetdrill
does) as none.

Options are written ``mss 1460``, ``wscale 7``, ``sackOK``, ``sack 1:1001
2001:3001`` (blocks relative to the ISN of the side whose data they
cover), ``TS val 100 ecr 0``, ``nop``, ``eol``, and any other option as
raw bytes ``opt30 0a0b`` (kind, then its data in hex, ``-`` for none).

The async helpers take a :class:`tcpemu.Connection`: :func:`expect` waits
for the peer's next segment and compares it, :func:`expect_nothing`
checks that the peer stays silent, :func:`send` builds and sends the
segment written.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, NamedTuple

import trio

from ._errors import TcpemuError, UsageError
from ._trace import _FLAG_ORDER, _rel, format_flags, format_options, format_segment
from .core import Message, seq_diff
from .wire import OptionKind, Segment, TcpFlags, TcpOption

if TYPE_CHECKING:
    from ._engine import Connection

__all__ = [
    "SegmentMismatch",
    "OptionPattern",
    "SegmentPattern",
    "parse_segment",
    "parse_options",
    "format_flags",
    "format_segment",
    "format_message",
    "format_options",
    "compare",
    "rel_seq",
    "rel_ack",
    "expect",
    "expect_nothing",
    "send",
    "TRACE_LINES",
]

SEQ_MOD: Final = 1 << 32
TRACE_LINES: Final = 20
"""How many of the connection's recent trace lines a mismatch shows."""

_FLAG_OF: Final = dict(_FLAG_ORDER)


class SegmentMismatch(TcpemuError, AssertionError):
    """The peer's segment is not the one expected (or a segment came where none was).

    An AssertionError, so that pytest reports it as a plain test failure.
    ``expected`` and ``got`` are the two segments in packetdrill notation
    (``got`` is None when nothing came); the message adds the differences
    and the connection's recent trace.
    """

    def __init__(self, text: str, *, expected: str | None, got: str | None) -> None:
        super().__init__(text)
        self.expected = expected
        self.got = got


class OptionPattern(NamedTuple):
    """One option of a pattern: its kind and the values written (None: any value).

    ``values`` holds MSS (mss,), window scale (shift,), timestamps (val,
    ecr), SACK (left1, right1, left2, right2, ...); ``raw`` the data bytes
    of an option written as ``optN hex``.
    """

    kind: int
    values: tuple[int | None, ...] = ()
    raw: bytes | None = None

    def __str__(self) -> str:
        v = ["*" if x is None else str(x) for x in self.values]
        if self.raw is not None:
            return f"opt{self.kind} {self.raw.hex() or '-'}"
        if self.kind == OptionKind.NOP:
            return "nop"
        if self.kind == OptionKind.EOL:
            return "eol"
        if self.kind == OptionKind.SACK_PERMITTED:
            return "sackOK"
        if self.kind == OptionKind.MSS:
            return f"mss {v[0]}"
        if self.kind == OptionKind.WSCALE:
            return f"wscale {v[0]}"
        if self.kind == OptionKind.TIMESTAMP:
            return f"TS val {v[0]} ecr {v[1]}"
        if self.kind == OptionKind.SACK:
            return "sack " + " ".join(f"{v[i]}:{v[i + 1]}" for i in range(0, len(v), 2))
        return f"opt{self.kind} -"


@dataclass(frozen=True, slots=True)
class SegmentPattern:
    """A segment written in packetdrill notation; None in a field matches anything.

    ``start``/``end``/``length`` are the relative sequence range (all three
    None when the range was not written); ``options`` None is "any
    options" (``<...>``), an empty tuple "no options".  ``ecn`` is the IP
    ECN mark written before the flags (``[ect0]``, ``[ect1]``, ``[ce]``,
    ``[noecn]``, ``[ect01]``), ``payload`` the bytes to send if given.
    """

    flags: TcpFlags
    start: int | None = None
    end: int | None = None
    length: int | None = None
    ack: int | None = None
    window: int | None = None
    urgent: int | None = None
    options: tuple[OptionPattern, ...] | None = None
    ecn: str | None = None
    ack_written: bool = False
    window_written: bool = False

    @property
    def seq_len(self) -> int:
        """Sequence space the segment takes: its length plus SYN and FIN."""
        f = int(self.flags)
        return (self.length or 0) + ((f >> 1) & 1) + (f & 1)

    def __str__(self) -> str:
        parts = []
        if self.ecn:
            parts.append(f"[{self.ecn}]")
        parts.append(format_flags(self.flags))
        if self.start is not None:
            parts.append(f"{self.start}:{self.end}({self.length})")
        if self.ack_written:
            parts.append(f"ack {'*' if self.ack is None else self.ack}")
        if self.window_written:
            parts.append(f"win {'*' if self.window is None else self.window}")
        if self.urgent is not None:
            parts.append(f"urg {self.urgent}")
        if self.options is None:
            parts.append("<...>")
        else:  # "<>" too: no options at all is a demand, not a wildcard
            parts.append("<" + ",".join(str(o) for o in self.options) + ">")
        return " ".join(parts)


# ------------------------------------------------------------------ parsing

_TOKEN = re.compile(r"\s*(<\s*\.\.\.\s*>|<[^>]*>|\[[^\]]*\]|[^\s<\[]+)")
_RANGE = re.compile(r"^(-?\d+):(-?\d+)\((\d+)\)$")
_NUMBER = re.compile(r"^(?:0x[0-9a-fA-F]+|\d+)$")
ECN_MARKS: Final = ("noecn", "ect0", "ect1", "ce", "ect01")


def _number(text: str, what: str, source: str, *, wild: bool = True, bits: int = 32) -> int | None:
    if wild and text == "*":
        return None
    if not _NUMBER.match(text):
        raise UsageError(f"{source!r}: {what} must be a number{' or *' if wild else ''}, got {text!r}")
    value = int(text, 0)
    if value >= 1 << bits:
        raise UsageError(f"{source!r}: {what} {value} does not fit {bits} bits")
    return value


def parse_flags(text: str, source: str = "") -> TcpFlags:
    """``"P."`` to PSH|ACK; ``"-"`` (or ``"none"``) is no flag at all."""
    if text in ("-", "none"):
        return TcpFlags(0)
    flags = TcpFlags(0)
    for ch in text:
        bit = _FLAG_OF.get(ch)
        if bit is None:
            raise UsageError(
                f"{source or text!r}: unknown flag {ch!r} in {text!r}; flags are F S R P . U E W A (AE)"
            )
        flags |= bit
    return flags


def parse_options(text: str, source: str = "") -> tuple[OptionPattern, ...] | None:
    """The inside of ``<...>`` (without the brackets): None for ``...`` (any options)."""
    body = text.strip()
    if body == "...":
        return None
    if not body:
        return ()
    out: list[OptionPattern] = []
    for item in body.split(","):
        words = item.split()
        if not words:
            raise UsageError(f"{source!r}: empty option in <{text}>")
        name = words[0]
        rest = words[1:]

        def arity(n: int, name: str = name, rest: list[str] = rest, item: str = item) -> None:
            if len(rest) != n:
                raise UsageError(f"{source!r}: option {item.strip()!r}: {name} takes {n} value(s)")

        if name == "nop":
            arity(0)
            out.append(OptionPattern(OptionKind.NOP))
        elif name == "eol":
            arity(0)
            out.append(OptionPattern(OptionKind.EOL))
        elif name == "sackOK":
            arity(0)
            out.append(OptionPattern(OptionKind.SACK_PERMITTED))
        elif name == "mss":
            arity(1)
            out.append(OptionPattern(OptionKind.MSS, (_number(rest[0], "mss", source, bits=16),)))
        elif name == "wscale":
            arity(1)
            out.append(OptionPattern(OptionKind.WSCALE, (_number(rest[0], "wscale", source, bits=8),)))
        elif name == "TS":
            if len(rest) != 4 or rest[0] != "val" or rest[2] != "ecr":
                raise UsageError(f"{source!r}: option {item.strip()!r}: write TS val <n> ecr <n>")
            out.append(
                OptionPattern(
                    OptionKind.TIMESTAMP,
                    (_number(rest[1], "TS val", source), _number(rest[3], "TS ecr", source)),
                )
            )
        elif name == "sack":
            values: list[int | None] = []
            for block in rest:
                left, sep, right = block.partition(":")
                if not sep:
                    raise UsageError(f"{source!r}: SACK block {block!r} is not left:right")
                values += [_number(left, "SACK left edge", source), _number(right, "SACK right edge", source)]
            if not values:
                raise UsageError(f"{source!r}: sack needs at least one left:right block")
            out.append(OptionPattern(OptionKind.SACK, tuple(values)))
        elif re.fullmatch(r"opt\d+", name):
            kind = int(name[3:])
            if not 0 <= kind <= 255:
                raise UsageError(f"{source!r}: option kind {kind} is not 0..255")
            arity(1)
            try:
                raw = b"" if rest[0] == "-" else bytes.fromhex(rest[0])
            except ValueError:
                raise UsageError(f"{source!r}: option {item.strip()!r}: data must be hex or -") from None
            out.append(OptionPattern(kind, (), raw))
        else:
            raise UsageError(
                f"{source!r}: unsupported option {name!r}; supported: mss, wscale, sackOK, sack, "
                "TS val/ecr, nop, eol, optN <hex>"
            )
    return tuple(out)


def parse_segment(text: str, *, omitted_options: str = "any") -> SegmentPattern:
    """Parse the segment part of a packetdrill packet line.

    ``omitted_options``: what a pattern without ``<...>`` means, "any" (as
    :func:`expect` reads it) or "none" (as packetdrill's script lines do).
    Raises :class:`~tcpemu.UsageError` naming what is wrong.
    """
    if omitted_options not in ("any", "none"):
        raise UsageError(f"omitted_options must be 'any' or 'none', got {omitted_options!r}")
    tokens = _TOKEN.findall(text)
    if "".join(tokens).replace(" ", "") != text.replace(" ", "").replace("\t", "").strip():
        raise UsageError(f"{text!r}: cannot read it as a segment in packetdrill notation")
    if not tokens:
        raise UsageError("empty segment: expected flags such as 'S', 'S.', 'P.', '.' first")
    i = 0
    ecn = None
    if tokens[0].startswith("["):
        ecn = tokens[0][1:-1].strip()
        if ecn not in ECN_MARKS:
            raise UsageError(f"{text!r}: unknown ECN mark [{ecn}]; expected one of {', '.join(ECN_MARKS)}")
        i = 1
    if i >= len(tokens):
        raise UsageError(f"{text!r}: flags missing")
    flags = parse_flags(tokens[i], text)
    i += 1
    start = end = length = None
    if i < len(tokens) and (m := _RANGE.match(tokens[i])):
        start, end, length = (int(g) for g in m.groups())
        if (end - start) % SEQ_MOD != length:
            raise UsageError(
                f"{text!r}: sequence range {tokens[i]}: end - start is {end - start}, length says {length}"
            )
        start %= SEQ_MOD
        end %= SEQ_MOD
        i += 1
    ack = window = urgent = None
    ack_written = window_written = False
    options: tuple[OptionPattern, ...] | None = None if omitted_options == "any" else ()
    while i < len(tokens):
        word = tokens[i]
        if word in ("ack", "win", "urg"):
            if i + 1 >= len(tokens):
                raise UsageError(f"{text!r}: {word} needs a value")
            if word == "ack":
                ack, ack_written = _number(tokens[i + 1], "ack", text), True
            elif word == "win":
                window, window_written = _number(tokens[i + 1], "win", text, bits=16), True
            else:
                urgent = _number(tokens[i + 1], "urg", text, wild=False, bits=16)
            i += 2
        elif word.startswith("<"):
            options = parse_options(word.strip()[1:-1], text)
            i += 1
            if i != len(tokens):
                raise UsageError(f"{text!r}: nothing may follow the options, got {' '.join(tokens[i:])!r}")
        else:
            raise UsageError(
                f"{text!r}: unexpected {word!r}; a segment is FLAGS [start:end(len)] [ack N] [win N] "
                "[urg N] [<options>]"
            )
    return SegmentPattern(
        flags, start, end, length, ack, window, urgent, options, ecn, ack_written, window_written
    )


# --------------------------------------------------------------- formatting


def rel_seq(conn: Connection, msg: Message | Segment, *, sent: bool = False) -> int:
    """The sequence number of a received message (or, ``sent=True``, of a segment we sent),
    relative to its sender's ISN, as the trace prints it; absolute while that ISN is unknown."""
    peer, ours = _bases(conn)
    return _rel(msg.seq, ours if sent else peer)


def rel_ack(conn: Connection, msg: Message | Segment, *, sent: bool = False) -> int:
    """The acknowledgement number of a received message (or, ``sent=True``, of a segment we
    sent), relative to the receiver's ISN; absolute while that ISN is unknown."""
    peer, ours = _bases(conn)
    return _rel(msg.ack, peer if sent else ours)


def format_message(msg: Message | Segment, conn: Connection | None = None, *, sent: bool = False) -> str:
    """A received :class:`~tcpemu.Message` (or a :class:`~tcpemu.Segment` we ``sent``) in notation.

    A message's numbers are relative to the ISNs it carries (``seq_base``,
    ``ack_base``), or, where it has none, to the ISNs as ``conn`` knows
    them: a received segment's seq to the peer's, its ack to ours; a sent
    one's the other way round.  Without either, numbers are absolute.
    """
    # a Message knows the ISNs it counts from (as they were when it arrived)
    seq_base: int | None = getattr(msg, "seq_base", None)
    ack_base: int | None = getattr(msg, "ack_base", None)
    if conn is not None:
        ours = conn.core.iss if conn.core.syn_sent else None
        theirs = conn.first_seqn_got
        if sent:
            seq_base, ack_base = ours, theirs
        else:
            seq_base = theirs if seq_base is None else seq_base
            ack_base = ours if ack_base is None else ack_base
    return format_segment(
        msg.flags,
        msg.seq,
        msg.ack,
        msg.window,
        msg.options,
        len(msg.payload),
        urgent=msg.urgent,
        seq_base=seq_base,
        ack_base=ack_base,
    )


# --------------------------------------------------------------- comparing


def _option_differences(
    want: tuple[OptionPattern, ...], got: Sequence[TcpOption], sack_base: int | None, check_tsval: bool
) -> list[str]:
    if len(want) != len(got):
        return [f"options: expected {len(want)} ({_pat_opts(want)}), got {len(got)}"]
    diffs = []
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        where = f"option {i + 1}"
        if w.kind != g.kind:
            diffs.append(f"{where}: expected {w}, got kind {g.kind}")
            continue
        if w.raw is not None:
            if w.raw != g.data:
                diffs.append(f"{where}: expected data {w.raw.hex() or '-'}, got {g.data.hex() or '-'}")
            continue
        if w.kind == OptionKind.TIMESTAMP:
            if len(g.data) != 8:
                diffs.append(f"{where}: timestamps of {len(g.data)} bytes, expected 8")
                continue
            values: tuple[int, ...] = struct.unpack("!II", g.data)
            names = ("TS val", "TS ecr")
            if not check_tsval:
                w = w._replace(values=(None, w.values[1]))
        elif w.kind == OptionKind.SACK:
            if len(g.data) % 8:
                diffs.append(f"{where}: SACK option of {len(g.data)} bytes")
                continue
            values = tuple(_rel(v, sack_base) for v in struct.unpack(f"!{len(g.data) // 4}I", g.data))
            names = tuple(f"SACK edge {j + 1}" for j in range(len(values)))
            if len(values) != len(w.values):
                diffs.append(f"{where}: expected {len(w.values) // 2} SACK blocks, got {len(values) // 2}")
                continue
        elif w.kind in (OptionKind.MSS, OptionKind.WSCALE):
            size = 2 if w.kind == OptionKind.MSS else 1
            if len(g.data) != size:
                diffs.append(f"{where}: {w} of {len(g.data)} data bytes")
                continue
            values = (int.from_bytes(g.data, "big"),)
            names = (str(w).split()[0],)
        else:  # nop, eol, sackOK: the kind says it all
            continue
        for name, wv, gv in zip(names, w.values, values, strict=True):
            if wv is not None and wv != gv:
                diffs.append(f"{name}: expected {wv}, got {gv}")
    return diffs


def _pat_opts(options: tuple[OptionPattern, ...]) -> str:
    return "<" + ",".join(str(o) for o in options) + ">"


def compare(
    want: SegmentPattern,
    got: Message | Segment,
    *,
    seq_base: int | None,
    ack_base: int | None,
    check_tsval: bool = True,
) -> list[str]:
    """The differences between a pattern and a segment, one readable line each (empty: it matches).

    ``seq_base`` is the sender's ISN, ``ack_base`` the receiver's (None:
    the numbers are absolute).  SACK blocks are relative to ``ack_base``.
    ``check_tsval=False`` leaves the TS value out (a runner that maps the
    sender's clock compares it itself).
    """
    diffs = []
    if int(want.flags) != int(got.flags) & 0x1FF:
        diffs.append(f"flags: expected {format_flags(want.flags)}, got {format_flags(got.flags)}")
    length = len(got.payload)
    if want.start is not None:
        s = _rel(got.seq, seq_base)
        if s != want.start:
            diffs.append(f"seq: expected {want.start}, got {s}")
        if want.length != length:
            diffs.append(f"length: expected {want.length}, got {length}")
    if want.ack is not None:
        if not int(got.flags) & TcpFlags.ACK:
            diffs.append(f"ack: expected {want.ack}, got no ACK flag")
        elif (a := _rel(got.ack, ack_base)) != want.ack:
            diffs.append(f"ack: expected {want.ack}, got {a}")
    if want.window is not None and want.window != got.window:
        diffs.append(f"win: expected {want.window}, got {got.window}")
    if want.urgent is not None and want.urgent != got.urgent:
        diffs.append(f"urg: expected {want.urgent}, got {got.urgent}")
    if want.options is not None:
        diffs += _option_differences(want.options, got.options, ack_base, check_tsval)
    return diffs


# ---------------------------------------------------------------- building


def build_options(
    options: tuple[OptionPattern, ...], *, sack_base: int | None, ecr_map: int = 0
) -> list[TcpOption]:
    """TcpOptions from a pattern's options: SACK edges relative to ``sack_base``, ``ecr_map``
    added to TS ecr (a runner's offset between the script's and the peer's clock)."""
    out = []
    for o in options:
        if any(v is None for v in o.values):
            raise UsageError(f"option {o}: a segment to send needs every value, not *")
        vals = [v for v in o.values if v is not None]
        if o.raw is not None:
            out.append(TcpOption(o.kind, o.raw))
        elif o.kind == OptionKind.MSS:
            out.append(TcpOption.mss(vals[0]))
        elif o.kind == OptionKind.WSCALE:
            out.append(TcpOption.wscale(vals[0]))
        elif o.kind == OptionKind.TIMESTAMP:
            out.append(TcpOption.timestamps(vals[0], (vals[1] + ecr_map) % SEQ_MOD))
        elif o.kind == OptionKind.SACK:
            base = sack_base or 0
            blocks = [
                ((vals[i] + base) % SEQ_MOD, (vals[i + 1] + base) % SEQ_MOD) for i in range(0, len(vals), 2)
            ]
            out.append(TcpOption.sack(blocks))
        else:
            out.append(TcpOption(o.kind))
    return out


# ------------------------------------------------------------ async helpers


def _bases(conn: Connection) -> tuple[int | None, int | None]:
    """(peer ISN, our ISN) as far as the connection knows them."""
    return conn.first_seqn_got, conn.core.iss if conn.core.syn_sent else None


def _failure(conn: Connection, head: str, expected: str | None, got: str | None, diffs: list[str]) -> str:
    lines = [head]
    if expected is not None:
        lines.append(f"  expected: {expected}")
    lines.append(f"  got:      {got if got is not None else 'nothing'}")
    lines += [f"  - {d}" for d in diffs]
    trace = conn.trace()[-TRACE_LINES:]
    if trace:
        lines.append(f"recent trace of {conn.label.strip() or 'the connection'}:")
        lines += [f"  {t}" for t in trace]
    return "\n".join(lines)


async def _next_message(conn: Connection, within: float | None) -> Message | None:
    """The peer's next queued segment, waiting up to ``within`` s; None if none came.

    The wait is cut by a cancel scope of ours rather than a ``timeout=``,
    so that a quiet peer leaves no timeout line in the connection's trace,
    and a RST received earlier does not end the wait.
    """
    core = conn.core
    if core.peek_message() is None:
        deadline = math.inf if within is None else trio.current_time() + within
        with trio.move_on_at(deadline):
            await conn.wait_until(lambda c: c.core.peek_message() is not None, what="the peer's next segment")
    if core.peek_message() is None:
        return None
    return core.pop_message_nowait()


async def expect(conn: Connection, text: str, within: float | None = 1.0, *, ack: bool = False) -> Message:
    """Wait up to ``within`` s for the peer's next segment and check it against ``text``.

    ``text`` is a segment in packetdrill notation (``"F. 1:1(0) ack 1"``):
    flags, the relative sequence range and length, ack, and, when written,
    window, urgent pointer and options; omitted fields, ``<...>`` and ``*``
    match anything.  Returns the message; raises :class:`SegmentMismatch`
    showing expected and got in the same notation and the recent trace.
    ``ack=True`` acknowledges the segment if it takes sequence space.
    """
    if within is not None and within < 0:
        raise UsageError(f"expect: within must be >= 0 seconds or None, got {within}")
    want = parse_segment(text)
    msg = await _next_message(conn, within)
    if msg is None:
        raise SegmentMismatch(
            _failure(conn, f"expect: no segment from the peer within {within} s", str(want), None, []),
            expected=str(want),
            got=None,
        )
    seq_base, ack_base = _bases(conn)
    own_seq_base, own_ack_base = getattr(msg, "seq_base", None), getattr(msg, "ack_base", None)
    seq_base = seq_base if own_seq_base is None else own_seq_base
    ack_base = ack_base if own_ack_base is None else own_ack_base
    diffs = compare(want, msg, seq_base=seq_base, ack_base=ack_base)
    if diffs:
        got = format_message(msg, conn)
        raise SegmentMismatch(
            _failure(conn, "expect: the peer's segment differs", str(want), got, diffs),
            expected=str(want),
            got=got,
        )
    if ack and msg.seq_len and not msg.flags & TcpFlags.RST:
        await conn.send_ack()
    return msg


async def expect_nothing(conn: Connection, for_: float) -> None:
    """Check that the peer sends nothing for ``for_`` s; :class:`SegmentMismatch` names what it sent.

    A segment queued already counts.  Nothing is written to the trace when the peer stays silent.
    """
    if not for_ >= 0:
        raise UsageError(f"expect_nothing: for_ must be >= 0 seconds, got {for_}")
    msg = await _next_message(conn, for_)
    if msg is not None:
        got = format_message(msg, conn)
        raise SegmentMismatch(
            _failure(conn, f"expect_nothing: the peer sent a segment within {for_} s", None, got, []),
            expected=None,
            got=got,
        )


async def send(conn: Connection, text: str, payload: bytes | None = None) -> Segment:
    """Build exactly the segment ``text`` describes, send it, and move the numbering.

    ``text`` is in packetdrill notation with numbers relative to the ISNs
    (``"P. 1:1001(1000) ack 1 win 511 <nop,nop,TS val 100 ecr 0>"``).
    Omitted: the range starts at next_seqn with length 0, ``ack`` is
    next_ackn, ``win`` the connection's (scaled) window, no options.  The
    window is sent raw, options as written.  ``payload`` must have the
    range's length (default: that many zero bytes).  As :meth:`send_msg`
    with AUTO seq does, next_seqn moves to the end of the segment when it
    goes beyond it.
    """
    want = parse_segment(text, omitted_options="none")
    for name in ("ack", "window"):
        if getattr(want, f"{name}_written") and getattr(want, name) is None:
            raise UsageError(f"send: {text!r}: a segment to send needs a value for {name}, not *")
    core = conn.core
    peer_isn, _ = _bases(conn)
    length = want.length if want.length is not None else (len(payload) if payload is not None else 0)
    if payload is None:
        payload = bytes(length)
    elif len(payload) != length:
        raise UsageError(f"send: payload has {len(payload)} bytes, the segment {text!r} says {length}")
    seq = core.snd_nxt if want.start is None else (core.iss + want.start) % SEQ_MOD
    if want.ack is not None:
        ackn = want.ack if peer_isn is None else (peer_isn + want.ack) % SEQ_MOD
    else:
        ackn = core.rcv_nxt or 0
    fields: dict[str, object] = {"seq": seq, "ack": ackn, "flags": want.flags}
    if want.window is not None:
        fields["window"] = want.window
    if want.urgent is not None:
        fields["urgent"] = want.urgent
    if want.options:
        fields["options"] = build_options(want.options, sack_base=peer_isn)
    if want.ecn:
        fields["tos"] = {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3, "ect01": 2}[want.ecn]
    spec = conn.segment(payload, **fields)
    await conn.send_segments(spec)
    seg = spec.as_segment()
    ts = seg.option(OptionKind.TIMESTAMP)
    if ts is not None and len(ts.data) == 8:
        core.last_tsval_sent, core.last_tsecr_sent = struct.unpack("!II", ts.data)
    end = (seq + seg.seq_len) % SEQ_MOD
    ahead = seq_diff(end, core.snd_nxt)
    if ahead > 0:
        if seg.flags & TcpFlags.FIN and core.fin_seq is None:
            core.fin_seq = (end - 1) % SEQ_MOD
        conn.update_sent_seq(ahead)
    return seg


def with_options(pattern: SegmentPattern, options: tuple[OptionPattern, ...] | None) -> SegmentPattern:
    """The pattern with other options (a runner rewrites them)."""
    return replace(pattern, options=options)
