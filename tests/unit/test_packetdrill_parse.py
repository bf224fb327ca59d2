"""The packetdrill script parser: every line kind, timing forms, flags, expressions, errors."""

from __future__ import annotations

import pytest

from tcpemu.packetdrill.parse import (
    Call,
    CodeEvent,
    PacketEvent,
    ScriptError,
    ShellEvent,
    Struct,
    Symbol,
    SyscallEvent,
    Timing,
    Unsupported,
    parse_expression,
    parse_script,
    parse_time,
)
from tcpemu.wire import TcpFlags

SCRIPT = """\
// a script with every kind of line
--tolerance_usecs=10000 --ip_version=ipv6
--bind_port="9000"

`sysctl -q net.ipv4.tcp_timestamps=1`   // shell, no time
0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0  bind(3, ..., ...) = 0
+0  listen(3, 1) = 0   /* a comment
that spans lines */
+0  < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
+0  > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 8>
+.1 < . 1:1(0) ack 1 win 257
+0  accept(3, ..., ...) = 4
+0  fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0
+0  read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)
+0...0.1 read(4, ..., 10) = 10
0.1~0.2 > . 1:1(0) ack 1
* > F. 1:1(0) ack 1 <...>
+0 %{
assert tcpi_snd_cwnd == 10, tcpi_snd_cwnd   // not a comment in Python? it is kept
}%
+0 getsockopt(4, SOL_TCP, TCP_INFO, {tcpi_state=TCP_ESTABLISHED,
                                     tcpi_unacked=0}, 4) = 0
+0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLOUT}], 1, 0) = 1
+0 sendmsg(4, {msg_name(...)=..., msg_iov(1)=[{iov_base=..., iov_len=1000}], msg_flags=0}, 0) = 1000
+0 `echo one
echo two`
"""


def test_every_line_kind():
    script = parse_script(SCRIPT, "s.pkt")
    assert script.flags == {"tolerance_usecs": "10000", "ip_version": "ipv6", "bind_port": "9000"}
    kinds = [type(e.action).__name__ for e in script.events]
    assert kinds == (
        ["ShellEvent"] + ["SyscallEvent"] * 4 + ["PacketEvent"] * 3 + ["SyscallEvent"] * 4
        + ["PacketEvent"] * 2 + ["CodeEvent"] + ["SyscallEvent"] * 3 + ["ShellEvent"]
    )  # fmt: skip
    lines = [e.line for e in script.events]
    assert lines[:5] == [5, 6, 7, 8, 9] and lines[5] == 11  # the comment's lines are counted
    ev = {e.line: e for e in script.events}
    assert ev[5].action == ShellEvent("sysctl -q net.ipv4.tcp_timestamps=1")
    assert ev[5].timing == Timing("relative", 0.0)
    syn = ev[11].action
    assert isinstance(syn, PacketEvent) and syn.direction == "<" and syn.pattern.flags == TcpFlags.SYN
    assert syn.pattern.window == 32792 and len(syn.pattern.options) == 6
    synack = ev[12].action
    assert synack.direction == ">" and synack.pattern.window is None and synack.pattern.ack == 1
    assert ev[13].timing == Timing("relative", 0.1)
    read = ev[16].action
    assert read == SyscallEvent("read", (4, ..., 1000), -1, "EAGAIN", read.text)
    assert ev[17].timing == Timing("relative", 0.0, 0.1, blocking=True)
    assert ev[18].timing == Timing("absolute", 0.1, 0.2)
    assert ev[19].timing == Timing("any") and ev[19].action.pattern.options is None
    assert ev[20].action == CodeEvent(
        "\nassert tcpi_snd_cwnd == 10, tcpi_snd_cwnd   // not a comment in Python? it is kept\n"
    )
    info = ev[23].action
    assert info.args[3] == Struct((("tcpi_state", Symbol("TCP_ESTABLISHED")), ("tcpi_unacked", 0)))
    poll = ev[25].action
    assert poll.args[0] == [
        Struct(
            (
                ("fd", 4),
                ("events", Call("|", (Symbol("POLLIN"), Symbol("POLLOUT")))),
                ("revents", Symbol("POLLOUT")),
            )
        )
    ]
    msg = ev[26].action.args[1]
    assert (
        msg.get("msg_iov") == [Struct((("iov_base", ...), ("iov_len", 1000)))] and msg.get("msg_flags") == 0
    )
    assert ev[27].action == ShellEvent("echo one\necho two")


def test_fcntl_and_connect_arguments():
    assert parse_expression("O_RDWR|O_NONBLOCK") == Call("|", (Symbol("O_RDWR"), Symbol("O_NONBLOCK")))
    addr = parse_expression('{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("192.0.2.1")}')
    assert addr.get("sin_port") == Call("htons", (8080,)) and addr.get("sin_addr") == Call(
        "inet_addr", ("192.0.2.1",)
    )
    assert parse_expression("[-1]") == [-1] and parse_expression("0x10") == 16
    assert parse_expression("{onoff=1, linger=0}") == Struct((("onoff", 1), ("linger", 0)))


@pytest.mark.parametrize(
    "text, timing",
    [
        ("0 x", Timing("absolute", 0.0)),
        ("1.5 x", Timing("absolute", 1.5)),
        ("+.25 x", Timing("relative", 0.25)),
        ("* x", Timing("any")),
        ("0.1~0.3 x", Timing("absolute", 0.1, 0.3)),
        ("+0.1~+0.3 x", Timing("relative", 0.1, 0.3)),
        ("+0...0.2 x", Timing("relative", 0.0, 0.2, blocking=True)),
        ("0.1...0.4 x", Timing("absolute", 0.1, 0.4, blocking=True)),
        ("x", Timing("relative", 0.0)),
    ],
)
def test_timing_forms(text, timing):
    assert parse_time(text) == (timing, "x")


def test_bad_timing_is_named():
    with pytest.raises(ScriptError, match="ends before it starts"):
        parse_time("0.3~0.1 x", 7)


@pytest.mark.parametrize(
    "line, construct",
    [
        ("+0 < udp (1000)", "udp packets"),
        ("+0 > S. 0:0(0) ack 1 <mss 1460,FO 1234abcd>", "TCP option FO"),
        ("+0 sendfile(4, 5, ..., 100) = 100", "sendfile()"),
        ("+0 epoll_create(1) = 5", "epoll"),
        ("+0 frobnicate(1) = 0", "system call frobnicate()"),
        ("+0 > [tos 0x4] . 1:1(0) ack 1", "IP header fields other than ECN marks"),
        ("+0 sendto(3, ..., 1000, MSG_FASTOPEN, ..., ...) = 1000", "TCP Fast Open"),
        ("+0 setsockopt(3, SOL_SOCKET, SO_ZEROCOPY, [1], 4) = 0", "zero-copy"),
        ("+0 setsockopt(3, SOL_TCP, TCP_MD5SIG, [1], 4) = 0", "MD5 signatures"),
    ],
)
def test_unsupported_constructs_are_named(line, construct):
    with pytest.raises(Unsupported) as info:
        parse_script(line)
    assert info.value.construct == construct and info.value.line == 1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("+0 < . 1:1(0) ack 1 <...>", "cannot have <...>"),
        ("+0 < . ack 1", "needs its sequence range"),
        ("+0 < S 0:5(0) win 1", "end - start is 5, length says 0"),
        ("+0 socket(..., SOCK_STREAM) 3", "expected '= <result>"),
        ("+0 hello world", "not a packet, a system call"),
        ("0 socket(..., SOCK_STREAM, 0) = 3\n--late=1", "--flags belong before the first event"),
        ("+0 %{ print(1)", "a %{ block must end"),
        ("+0...1 > . 1:1(0)", "only system calls can block"),
    ],
)
def test_script_errors_name_file_and_line(text, fragment):
    with pytest.raises(ScriptError, match=r"f\.pkt") as info:
        parse_script(text, "f.pkt")
    assert fragment in str(info.value)


def test_inbound_ecn_mark_and_urgent_pointer():
    (event,) = parse_script("+0 < [ce] PU. 1:2(1) ack 1 win 100 urg 1").events
    assert event.action.pattern.ecn == "ce" and event.action.pattern.urgent == 1
    assert event.action.pattern.flags == TcpFlags.PSH | TcpFlags.URG | TcpFlags.ACK


# ----------------------------------------------------- evaluating arguments


def test_arguments_evaluate_to_values_with_packetdrills_addresses_mapped():
    from tcpemu.packetdrill.syscalls import CONSTANTS, Evaluator

    ev = Evaluator({"192.168.0.1": "198.18.0.1", "192.0.2.1": "198.18.0.2"})
    addr = ev(parse_expression('{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("192.0.2.1")}'))
    assert addr == {"sa_family": CONSTANTS["AF_INET"], "sin_port": 8080, "sin_addr": "198.18.0.2"}
    assert ev(parse_expression("O_RDWR|O_NONBLOCK")) == CONSTANTS["O_RDWR"] | CONSTANTS["O_NONBLOCK"]
    assert ev(parse_expression("[ECONNREFUSED]")) == [111] and ev(parse_expression("...")) is ...
    assert ev.map_address("10.0.0.1") == "10.0.0.1"  # an address the script did not get from packetdrill
    with pytest.raises(Unsupported, match="constant NO_SUCH_THING"):
        ev(parse_expression("NO_SUCH_THING"))


def test_filled_in_values_are_compared_field_by_field():
    from tcpemu.packetdrill.syscalls import compare_output

    assert compare_output({"tcpi_state": 1}, {"tcpi_state": 1, "tcpi_rto": 200000}, "v") == []
    assert compare_output({"tcpi_state": 1}, {"tcpi_state": 8}, "v") == ["v.tcpi_state: expected 1, got 8"]
    assert compare_output([{"fd": 4, "revents": 1}], [{"fd": 4, "revents": 5}], "poll") == [
        "poll[0].revents: expected 1, got 5"
    ]
    assert compare_output([1], [0], "opt") == ["opt[0]: expected 1, got 0"]
    assert compare_output(..., 7, "x") == []


def test_a_handler_without_the_method_means_unsupported():
    from tcpemu.packetdrill.syscalls import invoke

    (event,) = parse_script("0 listen(3, 1) = 0").events
    with pytest.raises(Unsupported, match=r"listen\(\) \(the syscall handler has no such method\)"):
        invoke(object(), event.action, [3, 1])

    class Recorder:
        def socket(self, *args, expected_fd):
            return (args, expected_fd)

    (event,) = parse_script("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 5").events
    assert invoke(Recorder(), event.action, [..., 1, 6])() == ((..., 1, 6), 5)


# ------------------------------------------------------- the command line


def _args(**kw):
    import argparse

    from tcpemu.packetdrill import cli

    parser = argparse.ArgumentParser(prog="tcpemu")
    cli.register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["packetdrill", *kw.pop("argv")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope.pkt"], "no such script or directory: 'nope.pkt'"),
        (["{script}", "--sysctl", "tcp_sack=0"], "--sysctl must be net.KEY=VALUE, got 'tcp_sack=0'"),
        (["{script}", "--netns", "x"], "--netns needs --link"),
        (["{script}", "--link", "eth9"], "--link needs --local-ip"),
        (["{script}", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["{script}", "--link", "lo", "--local-ip", "198.18.0.1", "--remote-ip", "198.18.0.2",
          "--remote-mac", "02:00:00:00:00:01", "--handler", "nomodule"], "--handler must be MODULE:NAME"),
    ],
)  # fmt: skip
def test_cli_rejects_bad_arguments_before_any_lab(argv, message, tmp_path, capsys):
    from tcpemu.packetdrill import cli

    script = tmp_path / "s.pkt"
    script.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
    args = _args(argv=[a.format(script=script) for a in argv])
    assert cli.cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_cli_collects_scripts_from_directories(tmp_path):
    from tcpemu.packetdrill import cli

    (tmp_path / "b").mkdir()
    for name in ("b/z.pkt", "a.pkt", "b/readme.txt"):
        (tmp_path / name).write_text("")
    assert cli.collect_scripts([str(tmp_path)]) == [str(tmp_path / "a.pkt"), str(tmp_path / "b" / "z.pkt")]
