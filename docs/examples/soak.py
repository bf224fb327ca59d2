"""A short soak: connections churned against the kernel, every byte checked, faults on."""

import trio

from tcpemu.faults import Faults
from tcpemu.soak import SoakStats, run_soak


async def main() -> None:
    stats = SoakStats()  # live counters, for a progress display
    faults = Faults(drop=0.01, duplicate=0.01, reorder=0.01, delay=0.01)
    result = await run_soak(connections=10, duration=3, seed=1, faults_out=faults, faults_in=faults, stats=stats)
    print(f"{result.opened} connections, {result.bytes_to_iut + result.bytes_to_emulator} bytes checked, "
          f"faults {result.faults}, retransmits sent {result.retransmits_sent}, RSS growth {result.rss_growth:+.1%}")
    assert result.passed, result.errors


if __name__ == "__main__":
    trio.run(main)
