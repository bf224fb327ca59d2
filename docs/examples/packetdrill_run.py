"""Run packetdrill scripts against the kernel in a throwaway lab, from Python."""

import pathlib
import tempfile

import trio

from tcpemu.packetdrill.runner import run_scripts, summary

GOOD = """
// a passive open; the kernel answers the SYN with its own options
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    < S 0:0(0) win 32792 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 500 ecr 100,nop,wscale 7>
+.01  < . 1:1(0) ack 1 win 257 <nop,nop,TS val 110 ecr 500>
+0    accept(3, ..., ...) = 4
+0    %{ assert tcpi_snd_mss == 988, tcpi_snd_mss }%
"""
BAD = GOOD.replace("ack 1 <mss 1460", "ack 2 <mss 1460")  # a wrong ack: line 8 must fail


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, text in (("good.pkt", GOOD), ("bad.pkt", BAD)):
            path = pathlib.Path(tmp, name)
            path.write_text(text)
            paths.append(path)
        results = await run_scripts(paths, artifacts=pathlib.Path(tmp, "artifacts"))
        for result in results:
            print(result.line_text())
        print(summary(results))
        good, bad = results
        assert good.verdict == "PASS" and bad.verdict == "FAIL" and bad.line == 8, bad.line_text()
        assert pathlib.Path(bad.capture).exists()  # the capture of the failing run is kept


if __name__ == "__main__":
    trio.run(main)
