"""The link check's rules on given facts, and its argument errors: no network, no namespace."""

from __future__ import annotations

import argparse
import dataclasses
import io
import ipaddress
import warnings

import pytest

from tcpemu import UsageError
from tcpemu.linkcheck import (
    IFF_LOWER_UP,
    IFF_UP,
    Finding,
    LinkFacts,
    LinkWarning,
    check_link,
    cli_main,
    evaluate,
    register_cli,
    warn_link,
)

UP = IFF_UP | IFF_LOWER_UP
QUIET_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.tst0.forwarding": "0",
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv6.conf.tst0.forwarding": "0",
    "net.ipv4.conf.all.proxy_arp": "0",
    "net.ipv4.conf.tst0.proxy_arp": "0",
    "net.ipv6.conf.all.proxy_ndp": "0",
    "net.ipv6.conf.tst0.proxy_ndp": "0",
}
OFFLOADS_OFF = {"rx": False, "tx": False, "sg": False, "tso": False, "gso": False, "gro": False, "lro": False}


def clean(**changes: object) -> LinkFacts:
    """A veth as the lab makes it: up, offloads off, nothing forwarded."""
    facts = LinkFacts(
        ifname="tst0",
        netns="ns",
        arphrd=1,
        flags=UP,
        promiscuity=0,
        kind="veth",
        addresses={ipaddress.ip_address("198.18.0.2"): "tst0"},
        sysctls=QUIET_SYSCTLS,
        offloads=OFFLOADS_OFF,
    )
    return dataclasses.replace(facts, **changes)


def settings(findings: list[Finding]) -> dict[str, str]:
    return {f.setting: f.severity for f in findings}


def test_a_lab_like_link_has_no_findings():
    assert evaluate(clean()) == []
    assert evaluate(clean(), ["198.18.0.9", "2001:db8::9"]) == []


def test_finding_is_frozen_and_reads_as_one_line():
    f = Finding("net.ipv4.ip_forward", "1", "it forwards", "error")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.value = "0"  # type: ignore[misc]
    assert str(f) == "error: net.ipv4.ip_forward = 1: it forwards"


@pytest.mark.parametrize(
    ("key", "severity"),
    [
        ("net.ipv4.ip_forward", "error"),
        ("net.ipv4.conf.tst0.forwarding", "error"),
        ("net.ipv6.conf.all.forwarding", "error"),
        ("net.ipv6.conf.tst0.forwarding", "error"),
        ("net.ipv4.conf.all.proxy_arp", "error"),
        ("net.ipv4.conf.tst0.proxy_arp", "error"),
        ("net.ipv6.conf.all.proxy_ndp", "warning"),
    ],
)
def test_each_sysctl_is_named_with_its_value(key, severity):
    findings = evaluate(clean(sysctls={**QUIET_SYSCTLS, key: "1"}))
    assert [(f.setting, f.value, f.severity) for f in findings] == [(key, "1", severity)]
    assert key in findings[0].why  # the text says what to set


def test_forwarding_on_everywhere_is_one_finding_per_family():
    on = {k: "1" if "forwarding" in k else v for k, v in QUIET_SYSCTLS.items()}
    on["net.ipv4.ip_forward"] = "1"
    assert settings(evaluate(clean(sysctls=on))) == {
        "net.ipv4.ip_forward": "error",
        "net.ipv6.conf.all.forwarding": "error",
    }


def test_missing_sysctls_are_skipped_not_guessed():
    assert evaluate(clean(sysctls={})) == []


def test_an_owned_emulated_address_is_named_with_its_interface():
    findings = evaluate(clean(), ["198.18.0.2", "198.18.0.9"])
    assert [(f.setting, f.value, f.severity) for f in findings] == [
        ("address 198.18.0.2", "configured on tst0", "warning")
    ]
    v6 = evaluate(clean(addresses={ipaddress.ip_address("2001:db8::2"): "lo"}), ["2001:db8::2"])
    assert [(f.setting, f.value) for f in v6] == [("address 2001:db8::2", "configured on lo")]


@pytest.mark.parametrize(
    ("offload", "setting", "severity"),
    [
        ("lro", "ethtool lro", "error"),
        ("gro", "ethtool gro", "warning"),
        ("rx", "ethtool rx", "warning"),
        ("tx", "ethtool tx", "warning"),
        ("tso", "ethtool tso", "warning"),
        ("gso", "ethtool gso", "warning"),
    ],
)
def test_each_offload(offload, setting, severity):
    findings = evaluate(clean(offloads={**OFFLOADS_OFF, offload: True}))
    assert settings(findings) == {setting: severity}
    assert f"ethtool -K tst0 {offload} off" in findings[0].why


def test_sending_offloads_are_one_finding():
    findings = evaluate(clean(offloads={**OFFLOADS_OFF, "tx": True, "tso": True, "gso": True}))
    assert settings(findings) == {"ethtool tx/tso/gso": "warning"}


def test_unknown_offloads_are_no_finding():
    assert evaluate(clean(offloads={})) == []


def test_link_down_and_no_carrier():
    assert settings(evaluate(clean(flags=0))) == {"link state": "error"}
    no_carrier = evaluate(clean(flags=IFF_UP))
    assert settings(no_carrier) == {"link carrier": "error"}
    assert "TAP" in no_carrier[0].why


def test_links_without_ethernet_are_fine_but_loopback_is_not():
    assert settings(evaluate(clean(arphrd=65534, kind="tun"))) == {}  # a TUN: IP packets, read as such
    assert settings(evaluate(clean(arphrd=768, kind=None))) == {}  # an IPIP tunnel
    loopback = evaluate(clean(arphrd=772, kind=None))
    assert settings(loopback) == {"link type": "error"}
    assert "loopback" in loopback[0].why


def test_promiscuity_by_link_kind():
    assert settings(evaluate(clean(kind="bridge"))) == {"promiscuity": "error"}
    assert evaluate(clean(kind="bridge", promiscuity=1)) == []
    assert settings(evaluate(clean(kind=None))) == {"promiscuity": "warning"}  # a NIC
    assert settings(evaluate(clean(kind="macvlan"))) == {"promiscuity": "warning"}
    assert evaluate(clean(kind=None, promiscuity=1)) == []
    assert evaluate(clean(kind="tun")) == []  # a TAP takes every frame its owner writes


def test_a_bridge_port_is_named_with_its_bridge():
    findings = evaluate(clean(master_kind="bridge", master="br0"))
    assert [(f.setting, f.value, f.severity) for f in findings] == [("bridge port", "of br0", "warning")]


@pytest.mark.parametrize("ifname", ["", "x" * 16, "a/b", "a b", None, 3])
def test_a_bad_ifname_is_a_usage_error(ifname):
    with pytest.raises(UsageError, match="ifname"):
        check_link(ifname)  # type: ignore[arg-type]


def test_a_missing_namespace_is_a_usage_error():
    with pytest.raises(UsageError, match=r"netns 'tcpemu-no-such-namespace'"):
        check_link("eth0", "tcpemu-no-such-namespace")
    with pytest.raises(UsageError, match="netns"):
        check_link("eth0", "../etc")


@pytest.mark.parametrize("bad", [["198.18.0.999"], ["not-an-address"], "198.18.0.2", [42]])
def test_a_bad_emulated_address_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="emulated"):
        check_link("eth0", None, bad)


def test_warn_link_never_raises():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would raise here
        assert warn_link("eth0", "tcpemu-no-such-namespace") == []
        assert warn_link("a/b") == []


def test_the_cli_parses_and_returns_2_on_bad_input():
    parser = argparse.ArgumentParser(prog="tcpemu")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["check-link", "tst0", "--netns", "ns", "--address", "1.2.3.4", "--address", "::1"]
    )
    assert (args.command, args.ifname, args.netns, args.address) == (
        "check-link",
        "tst0",
        "ns",
        ["1.2.3.4", "::1"],
    )
    out = io.StringIO()
    bad = parser.parse_args(["check-link", "tst0", "--address", "nonsense"])
    assert cli_main(bad, out) == 2
    assert "'nonsense' is not an IPv4 or IPv6 address" in out.getvalue()
    out = io.StringIO()
    assert (
        cli_main(parser.parse_args(["check-link", "tst0", "--netns", "tcpemu-no-such-namespace"]), out) == 2
    )
    assert "no such network namespace" in out.getvalue()


def test_link_warning_is_a_user_warning():
    assert issubclass(LinkWarning, UserWarning)
