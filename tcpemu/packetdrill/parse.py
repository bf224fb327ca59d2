"""Reading packetdrill scripts: timed lines of packets, system calls, Python and shell.

The parser turns a script into a :class:`Script`: its ``--flags`` and a
list of :class:`Event` objects, each with the script line it came from.
Constructs that the runner does not implement are parsed far enough to be
named, and raise :class:`Unsupported` (the runner reports the script as
SKIP with that name); text that is not packetdrill's language raises
:class:`ScriptError` naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .._errors import TcpemuError, UsageError
from ..notation import SegmentPattern, parse_segment

__all__ = [
    "ScriptError",
    "Unsupported",
    "Timing",
    "Symbol",
    "Call",
    "Struct",
    "PacketEvent",
    "SyscallEvent",
    "CodeEvent",
    "ShellEvent",
    "Event",
    "Script",
    "parse_script",
    "parse_expression",
    "parse_time",
]


class ScriptError(TcpemuError):
    """A script is not packetdrill's language; the message names the file and line."""


class Unsupported(TcpemuError):
    """A construct the runner does not implement; ``construct`` names it for the SKIP line."""

    def __init__(self, construct: str, line: int = 0) -> None:
        super().__init__(f"unsupported: {construct}" + (f" (line {line})" if line else ""))
        self.construct = construct
        self.line = line


@dataclass(frozen=True, slots=True)
class Timing:
    """When an event happens.

    ``kind`` is "absolute", "relative" (to the previous event's actual
    time), or "any" (``*``).  ``start`` is the time (or offset) in
    seconds; ``end`` the end of a range (``a~b``) or of a blocking call
    (``a...b``), None otherwise; ``blocking`` tells the two apart.  A
    relative end is an offset from the same base as ``start``.
    """

    kind: str
    start: float = 0.0
    end: float | None = None
    blocking: bool = False


@dataclass(frozen=True, slots=True)
class Symbol:
    """A name in a system call's arguments (``SOCK_STREAM``, ``O_NONBLOCK``); looked up when run."""

    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """A function-like expression: ``htons(8080)``, ``inet_addr("192.0.2.1")``."""

    name: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Struct:
    """``{name=value, ...}``: fields in order; a field written ``msg_iov(1)=...`` keeps the name only."""

    fields: tuple[tuple[str, object], ...]

    def get(self, name: str, default: object = None) -> object:
        for key, value in self.fields:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class PacketEvent:
    direction: str  # "<" the tester sends it to the stack, ">" the stack must send it
    pattern: SegmentPattern
    text: str


@dataclass(frozen=True, slots=True)
class SyscallEvent:
    name: str
    args: tuple[object, ...]
    result: object  # an int, or Ellipsis (any)
    errno: str | None
    text: str


@dataclass(frozen=True, slots=True)
class CodeEvent:
    code: str


@dataclass(frozen=True, slots=True)
class ShellEvent:
    command: str


@dataclass(frozen=True, slots=True)
class Event:
    line: int
    timing: Timing
    action: PacketEvent | SyscallEvent | CodeEvent | ShellEvent


@dataclass(slots=True)
class Script:
    """A parsed script: its path, its ``--flags`` (name to value) and its events in order."""

    path: str
    flags: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def has_syscalls(self) -> bool:
        return any(isinstance(e.action, SyscallEvent) for e in self.events)


# ---------------------------------------------------------------- lexing

_NUM: Final = r"(?:\d+(?:\.\d*)?|\.\d+)"
_TIME_RE: Final = re.compile(
    rf"^(?:(?P<any>\*)|(?P<s>\+?{_NUM})(?:(?P<sep>~|\.\.\.)(?P<e>\+?{_NUM}))?)(?=\s|$|`|%\{{)"
)


def _strip_comments(text: str) -> str:
    """Comments out, line numbers kept: ``//`` to the end of a line and ``/* ... */``,
    neither inside strings, backticks or ``%{ }%``."""
    out: list[str] = []
    i, n = 0, len(text)
    mode = ""  # "" code, '"' string, "`" shell, "%" python
    while i < n:
        c = text[i]
        if mode == "":
            if text.startswith("//", i):
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            if text.startswith("/*", i):
                j = text.find("*/", i + 2)
                end = n if j < 0 else j + 2
                out.append("".join(ch if ch == "\n" else " " for ch in text[i:end]))
                i = end
                continue
            if c in '"`':
                mode = c
            elif text.startswith("%{", i):
                mode = "%"
                out.append("%{")
                i += 2
                continue
        elif mode == '"' and c == "\\" and i + 1 < n:
            out.append(text[i : i + 2])
            i += 2
            continue
        elif (mode in '"`' and c == mode) or (mode == "%" and text.startswith("}%", i)):
            if mode == "%":
                out.append("}%")
                i += 2
                mode = ""
                continue
            mode = ""
        out.append(c)
        i += 1
    return "".join(out)


def _statements(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each statement: a line, or lines joined while
    brackets, a backtick command or a ``%{ }%`` block stay open."""
    lines = text.split("\n")
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        start = i
        stmt = lines[i]
        while i + 1 < len(lines) and _open(stmt):
            i += 1
            stmt += "\n" + lines[i]
        i += 1
        if stmt.strip():
            out.append((start + 1, stmt.strip()))
    return out


def _open(stmt: str) -> bool:
    if stmt.count("%{") > stmt.count("}%"):
        return True
    outside = re.sub(r'"(?:\\.|[^"\\])*"', '""', stmt)
    if outside.count("`") % 2:
        return True
    outside = re.sub(r"`[^`]*`", "", outside)
    outside = re.sub(r"%\{.*?\}%", "", outside, flags=re.S)
    return (
        outside.count("(") > outside.count(")")
        or outside.count("{") > outside.count("}")
        or (outside.count("[") > outside.count("]"))
    )


def parse_time(text: str, line: int = 0) -> tuple[Timing, str]:
    """The timing at the head of a statement and the rest; no timing is ``+0``."""
    m = _TIME_RE.match(text)
    if not m:
        return Timing("relative", 0.0), text
    rest = text[m.end() :].lstrip()
    if m.group("any"):
        return Timing("any"), rest
    s = m.group("s")
    kind = "relative" if s.startswith("+") else "absolute"
    start = float(s.lstrip("+"))
    e = m.group("e")
    if e is None:
        return Timing(kind, start), rest
    if e.startswith("+") and not s.startswith("+"):
        raise ScriptError(f"line {line}: a time range starts absolute and ends relative: {m.group(0)!r}")
    # "+0...0.1" (as scripts write it) and "+0~+0.1": the end is read as the start is
    end = float(e.lstrip("+"))
    if end < start:
        raise ScriptError(f"line {line}: time range {m.group(0)!r} ends before it starts")
    return Timing(kind, start, end, blocking=m.group("sep") == "..."), rest


# ----------------------------------------------------------- expressions

_EXPR_TOKEN: Final = re.compile(
    r'\s*(?:(?P<str>"(?:\\.|[^"\\])*")|(?P<num>-?(?:0x[0-9a-fA-F]+|\d+))(?![\w.])|(?P<ell>\.\.\.)'
    r"|(?P<id>[A-Za-z_][\w.]*)|(?P<p>[\[\]{}(),=|&*+-]))"
)


class _Expr:
    """A small recursive-descent reader of system call arguments."""

    def __init__(self, text: str, line: int) -> None:
        self.text, self.line = text, line
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _EXPR_TOKEN.match(stripped, pos)
            if not m or m.end() == pos:
                raise ScriptError(f"line {line}: cannot read {stripped[pos : pos + 20]!r} in {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            got = "the end" if tok is None else repr(tok[1])
            raise ScriptError(f"line {self.line}: expected {value or 'more'} in {self.text!r}, got {got}")
        self.i += 1
        return tok

    def expr(self) -> object:
        value = self.term()
        while (tok := self.peek()) is not None and tok[1] == "|":
            self.take()
            value = Call("|", (value, self.term()))
        return value

    def term(self) -> object:
        kind, value = self.take()
        if kind == "num":
            return int(value, 0)
        if kind == "str":
            return bytes(value[1:-1], "utf-8").decode("unicode_escape")
        if kind == "ell":
            return ...
        if value == "[":
            items = self.items("]")
            return list(items)
        if value == "{":
            return self.struct()
        if kind == "id":
            if (tok := self.peek()) is not None and tok[1] == "(":
                self.take("(")
                return Call(value, self.items(")"))
            return Symbol(value)
        raise ScriptError(f"line {self.line}: unexpected {value!r} in {self.text!r}")

    def items(self, close: str) -> tuple[object, ...]:
        out: list[object] = []
        if (tok := self.peek()) is not None and tok[1] == close:
            self.take()
            return ()
        while True:
            out.append(self.expr())
            _, value = self.take()
            if value == close:
                return tuple(out)
            if value != ",":
                raise ScriptError(
                    f"line {self.line}: expected ',' or {close!r} in {self.text!r}, got {value!r}"
                )

    def struct(self) -> Struct:
        fields: list[tuple[str, object]] = []
        if (tok := self.peek()) is not None and tok[1] == "}":
            self.take()
            return Struct(())
        while True:
            if (tok := self.peek()) is not None and tok[0] == "ell":
                self.take()
                fields.append(("...", ...))
            else:
                _, name = self.take()
                if (tok := self.peek()) is not None and tok[1] == "(":
                    self.take("(")
                    self.items(")")  # msg_iov(1)=...: the count is the list's length
                self.take("=")
                fields.append((name, self.expr()))
            _, value = self.take()
            if value == "}":
                return Struct(tuple(fields))
            if value != ",":
                raise ScriptError(f"line {self.line}: expected ',' or '}}' in {self.text!r}, got {value!r}")


def parse_expression(text: str, line: int = 0) -> object:
    """One argument expression (for tests and the runner's own use)."""
    reader = _Expr(text, line)
    value = reader.expr()
    if reader.peek() is not None:
        raise ScriptError(f"line {line}: unexpected {reader.peek()[1]!r} after {text!r}")  # type: ignore[index]
    return value


_SYSCALL_RE: Final = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s*\((?P<rest>.*)$", re.S)
_RESULT_RE: Final = re.compile(
    r"^\s*=\s*(?P<value>-?(?:0x[0-9a-fA-F]+|\d+)|\.\.\.)\s*(?P<errno>E[A-Z0-9]+)?\s*(?:\((?P<note>[^)]*)\))?\s*$"
)
SYSCALLS: Final = frozenset(
    {
        "socket", "bind", "listen", "accept", "connect", "read", "write", "send", "recv", "sendto",
        "recvfrom", "sendmsg", "recvmsg", "close", "shutdown", "setsockopt", "getsockopt", "fcntl",
        "ioctl", "poll", "writev", "readv",
    }
)  # fmt: skip
_UNSUPPORTED_CALLS: Final = {
    "sendfile": "sendfile()",
    "splice": "splice()",
    "epoll_create": "epoll",
    "epoll_ctl": "epoll",
    "epoll_wait": "epoll",
    "pipe": "pipe()",
    "open": "open()",
    "socketpair": "socketpair()",
    "select": "select()",
    "accept4": "accept4()",
    "mmap": "mmap()",
    "getpeername": "getpeername()",
    "getsockname": "getsockname()",
    "sendmmsg": "sendmmsg()",
}


_UNSUPPORTED_WORDS: Final = (
    ("FASTOPEN", "TCP Fast Open"),
    ("ZEROCOPY", "zero-copy"),
    ("MD5SIG", "MD5 signatures"),
    ("TCP_AO", "TCP-AO"),
    ("TCP_ULP", "upper layer protocols (TCP_ULP)"),
    ("msg_control", "control messages"),
)


def _split_call(rest: str, line: int) -> tuple[str, str]:
    """The argument text of ``name(...)`` and what follows the closing parenthesis."""
    depth, quote = 1, False
    for i, c in enumerate(rest):
        if c == '"' and (i == 0 or rest[i - 1] != "\\"):
            quote = not quote
        elif not quote and c in "([{":
            depth += 1
        elif not quote and c in ")]}":
            depth -= 1
            if depth == 0:
                return rest[:i], rest[i + 1 :]
    raise ScriptError(f"line {line}: unbalanced parentheses in {rest!r}")


def _syscall(text: str, line: int) -> SyscallEvent:
    m = _SYSCALL_RE.match(text)
    if not m:
        raise ScriptError(f"line {line}: not a packet, a system call, %{{ }}% or a `command`: {text!r}")
    name = m.group("name")
    if name in _UNSUPPORTED_CALLS:
        raise Unsupported(_UNSUPPORTED_CALLS[name], line)
    if name not in SYSCALLS:
        raise Unsupported(f"system call {name}()", line)
    for word, construct in _UNSUPPORTED_WORDS:
        if word in text:
            raise Unsupported(construct, line)
    inner, after = _split_call(m.group("rest"), line)
    reader = _Expr(inner + ")", line)
    args = reader.items(")")
    if reader.peek() is not None:
        raise ScriptError(f"line {line}: {name}(): unexpected {reader.peek()[1]!r} in its arguments")  # type: ignore[index]
    r = _RESULT_RE.match(after)
    if not r:
        raise ScriptError(
            f"line {line}: {name}(): expected '= <result> [ERRNO (text)]', got {after.strip()!r}"
        )
    value = r.group("value")
    result: object = ... if value == "..." else int(value, 0)
    return SyscallEvent(name, args, result, r.group("errno"), text)


_PACKET_RE: Final = re.compile(r"^(?P<dir>[<>])\s*(?P<rest>.*)$", re.S)


def _packet(text: str, line: int) -> PacketEvent:
    m = _PACKET_RE.match(text)
    assert m is not None
    direction, rest = m.group("dir"), m.group("rest").strip()
    first = rest.split(maxsplit=1)[0] if rest else ""
    if first in ("udp", "icmp", "udplite", "gre", "mpls", "ipv4", "ipv6"):
        raise Unsupported(f"{first} packets", line)
    if re.search(r"\b(FO|md5|mptcp|exp-tfo|tfo|dss|mp_)\b", rest):
        kind = re.search(r"\b(FO|md5|mptcp|exp-tfo|tfo|dss|mp_)\b", rest).group(1)  # type: ignore[union-attr]
        raise Unsupported(f"TCP option {kind}", line)
    if re.search(r"\[\s*(tos|ttl|flowlabel|hlim)", rest):
        raise Unsupported("IP header fields other than ECN marks", line)
    try:
        pattern = parse_segment(rest, omitted_options="none")
    except UsageError as exc:
        raise ScriptError(f"line {line}: {exc}") from None
    if direction == "<" and pattern.start is None:
        raise ScriptError(f"line {line}: an inbound packet needs its sequence range start:end(len)")
    if direction == "<" and (pattern.options is None or (pattern.ack_written and pattern.ack is None)):
        raise ScriptError(f"line {line}: an inbound packet cannot have <...> or * values: {rest!r}")
    return PacketEvent(direction, pattern, rest)


_FLAG_RE: Final = re.compile(r"^--(?P<name>[a-zA-Z0-9_-]+)(?:[= ](?P<value>.*))?$")


def parse_script(text: str, path: str = "<script>") -> Script:
    """Parse a whole script; :class:`ScriptError` or :class:`Unsupported` name the line."""
    script = Script(path)
    events_started = False
    for line, stmt in _statements(_strip_comments(text)):
        if stmt.startswith("--"):
            if events_started:
                raise ScriptError(f"{path}:{line}: --flags belong before the first event: {stmt!r}")
            for word in _flag_words(stmt):
                m = _FLAG_RE.match(word)
                if not m:
                    raise ScriptError(f"{path}:{line}: cannot read flag {word!r}")
                script.flags[m.group("name").replace("-", "_")] = (m.group("value") or "").strip().strip('"')
            continue
        events_started = True
        try:
            timing, rest = parse_time(stmt, line)
            if rest.startswith("`"):
                if not rest.endswith("`"):
                    raise ScriptError(f"line {line}: a `command` must end with a backtick: {rest!r}")
                action: PacketEvent | SyscallEvent | CodeEvent | ShellEvent = ShellEvent(rest[1:-1])
            elif rest.startswith("%{"):
                if not rest.endswith("}%"):
                    raise ScriptError(f"line {line}: a %{{ block must end with }}%: {rest[:40]!r}")
                action = CodeEvent(rest[2:-2])
            elif rest[:1] in "<>":
                action = _packet(rest, line)
            else:
                action = _syscall(rest, line)
        except ScriptError as exc:
            message = str(exc)
            raise ScriptError(message if message.startswith(path) else f"{path}:{message}") from None
        if timing.blocking and not isinstance(action, SyscallEvent):
            raise ScriptError(f"{path}:line {line}: only system calls can block (a...b)")
        script.events.append(Event(line, timing, action))
    return script


def _flag_words(stmt: str) -> list[str]:
    """``--a=1 --b="x y"`` to its flags."""
    return [w.strip() for w in re.findall(r'--[^\s=]+(?:=(?:"[^"]*"|\S+))?', stmt)]
