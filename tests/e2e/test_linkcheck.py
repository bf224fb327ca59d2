"""The link check against real links in namespaces the tests make: each setting turned
on in the tester's namespace shows up as a finding naming it, and a lab link is clean."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import warnings

import pytest
import trio
from pyroute2 import IPRoute

from tcpemu import net
from tcpemu._netns import run_in_netns
from tcpemu.lab import Lab
from tcpemu.linkcheck import (
    Finding,
    LinkWarning,
    check_link,
    check_link_quietly,
    cli_main,
    register_cli,
    warn_findings,
    warn_link,
)

pytestmark = pytest.mark.e2e

IFF_PROMISC = 0x100
EMULATED = "198.18.0.77"  # an address of the lab's subnet that nobody owns


async def check(lab: Lab, *emulated: str, ifname: str | None = None) -> list[Finding]:
    return await trio.to_thread.run_sync(check_link, ifname or lab.tst.ifname, lab.tst.netns, emulated)


def by_setting(findings: list[Finding]) -> dict[str, Finding]:
    return {f.setting: f for f in findings}


def iproute(netns: str, work) -> object:
    def run() -> object:
        with IPRoute() as ipr:
            return work(ipr)

    return run_in_netns(netns, run)


async def test_a_lab_link_is_clean(tcpemu_lab):
    assert await check(tcpemu_lab, EMULATED, "2001:db8::77") == []


async def test_the_lab_address_is_a_warning_and_says_why_the_lab_gets_away_with_it(tcpemu_lab):
    findings = await check(tcpemu_lab, str(tcpemu_lab.tst.ip), EMULATED)
    assert [(f.setting, f.value, f.severity) for f in findings] == [
        (f"address {tcpemu_lab.tst.ip}", "configured on tst0", "warning")
    ]
    assert "neighbour entry" in findings[0].why


async def test_an_emulated_address_put_on_the_interface_is_found(tcpemu_lab):
    lab = tcpemu_lab
    addr = net.parse_ip(EMULATED)
    await trio.to_thread.run_sync(net.add_address, lab.tst.netns, lab.tst.ifname, addr, 24)
    found = by_setting(await check(lab, EMULATED))
    assert found[f"address {EMULATED}"].value == f"configured on {lab.tst.ifname}"


@pytest.mark.parametrize(
    "key",
    [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv4.conf.tst0.proxy_arp",
        "net.ipv6.conf.tst0.proxy_ndp",
    ],
)
async def test_a_sysctl_turned_on_is_found_by_name(tcpemu_lab, key):
    await tcpemu_lab.tst.sysctl(key, "1")
    found = by_setting(await check(tcpemu_lab, EMULATED))
    assert key in found, found
    assert found[key].value == "1"
    await tcpemu_lab.tst.sysctl(key, "0")
    assert key not in by_setting(await check(tcpemu_lab, EMULATED))


async def test_offloads_turned_on_are_found(tcpemu_lab):
    lab = tcpemu_lab
    state = await trio.to_thread.run_sync(lambda: net.set_offloads(lab.tst.netns, lab.tst.ifname, on=True))
    found = by_setting(await check(lab))
    assert state["gro"] and "ethtool gro" in found
    assert state["rx"] and "ethtool rx" in found
    assert "ethtool tx/tso/gso" in found  # veth turns all three on
    await trio.to_thread.run_sync(lambda: net.set_offloads(lab.tst.netns, lab.tst.ifname, on=False))
    assert await check(lab) == []


async def test_a_link_down_is_an_error(tcpemu_lab):
    lab = tcpemu_lab
    iproute(lab.tst.netns, lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname="tst0")[0], state="down"))
    found = by_setting(await check(lab))
    assert found["link state"].severity == "error"


async def test_a_bridge_without_promiscuity_and_a_bridge_port(tcpemu_lab):
    lab = tcpemu_lab

    def make_bridge(ipr: IPRoute) -> None:
        ipr.link("add", ifname="br0", kind="bridge")
        br = ipr.link_lookup(ifname="br0")[0]
        ipr.link("set", index=ipr.link_lookup(ifname="tst0")[0], master=br)
        ipr.link("set", index=br, state="up")

    iproute(lab.tst.netns, make_bridge)
    bridge = by_setting(await check(lab, ifname="br0"))
    assert bridge["promiscuity"].severity == "error" and "bridge" in bridge["promiscuity"].value
    port = by_setting(await check(lab))
    assert port["bridge port"].value == "of br0"
    iproute(
        lab.tst.netns,
        lambda ipr: ipr.link(
            "set", index=ipr.link_lookup(ifname="br0")[0], flags=IFF_PROMISC, change=IFF_PROMISC
        ),
    )
    assert "promiscuity" not in by_setting(await check(lab, ifname="br0"))


async def test_a_missing_interface_is_a_usage_error(tcpemu_lab):
    from tcpemu import UsageError

    with pytest.raises(UsageError, match=r"ifname 'nosuch0': no such interface in namespace"):
        await check(tcpemu_lab, ifname="nosuch0")


async def test_warn_link_names_the_setting(tcpemu_lab):
    await tcpemu_lab.tst.sysctl("net.ipv4.ip_forward", "1")
    with pytest.warns(LinkWarning, match=r"tst0 in .*: error: net\.ipv4\.ip_forward = 1"):
        findings = await trio.to_thread.run_sync(warn_link, "tst0", tcpemu_lab.tst.netns)
    assert [f.setting for f in findings] == ["net.ipv4.ip_forward"]


async def test_warnings_from_a_context_manager_point_at_the_users_async_with(tcpemu_lab):
    """What open_engine does: check in a thread, warn in the task, blame the user's line."""
    lab = tcpemu_lab

    @contextlib.asynccontextmanager
    async def engine_like():
        findings = await trio.to_thread.run_sync(check_link_quietly, lab.tst.ifname, lab.tst.netns)
        warn_findings(findings, lab.tst.ifname, lab.tst.netns, stacklevel=3)
        yield

    await lab.tst.sysctl("net.ipv6.conf.all.forwarding", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with engine_like():
            line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    assert [(w.category, w.filename, w.lineno) for w in caught] == [(LinkWarning, __file__, line)]
    assert "net.ipv6.conf.all.forwarding = 1" in str(caught[0].message)


async def test_the_cli_exit_status_and_output(tcpemu_lab):
    parser = argparse.ArgumentParser(prog="tcpemu")
    register_cli(parser.add_subparsers(dest="command"))
    ns = tcpemu_lab.tst.netns

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return cli_main(parser.parse_args(["check-link", *argv]), out), out.getvalue()

    status, text = await trio.to_thread.run_sync(run, "tst0", "--netns", ns, "--address", EMULATED)
    assert (status, text) == (0, f"tst0 in namespace {ns}: nothing found\n")
    await tcpemu_lab.tst.sysctl("net.ipv4.ip_forward", "1")
    status, text = await trio.to_thread.run_sync(
        run, "tst0", "--netns", ns, "--address", str(tcpemu_lab.tst.ip)
    )
    assert status == 1
    assert "error   net.ipv4.ip_forward = 1" in text
    assert f"warning address {tcpemu_lab.tst.ip} = configured on tst0" in text
    assert text.endswith(f"tst0 in namespace {ns}: 1 error, 1 warning\n")
    status, text = await trio.to_thread.run_sync(run, "nosuch0", "--netns", ns)
    assert status == 2 and "no such interface" in text
