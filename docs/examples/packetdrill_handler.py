"""A packetdrill script over a link, its system calls made by a handler of our own.

The runner sends and checks the packet lines over any interface; the
system call lines go to the handler, one method per call.  Here the stack
is the kernel in a lab's IUT namespace and the handler makes its calls on
sockets there; for a stack elsewhere (a device, a VM, a user-space stack)
the methods would ask its agent instead.
"""

import socket

import trio

from tcpemu.lab import Host, open_lab
from tcpemu.packetdrill.runner import LinkTarget, run_script

SCRIPT = """
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 7>
+.01  < . 1:1(0) ack 1 win 257
+0    accept(3, ..., ...) = 4
+0    write(4, ..., 100) = 100
+0    > P. 1:101(100) ack 1
+.01  < . 1:1(0) ack 101 win 257
+0    close(4) = 0
+0    > F. 101:101(0) ack 1
"""


class NamespaceSockets:
    """System calls on sockets in one host's namespace.

    Each method is named as the call and takes the script's arguments,
    evaluated: numbers, ``...`` as Ellipsis, ``[1]`` as a list, ``{a=1}`` as
    a dict, addresses already mapped onto the run's.  It returns the call's
    result, or raises OSError(errno) for ``= -1 ERRNO``.  socket() and
    accept() also get ``expected_fd``, the number the script gives the new
    socket.  The runner calls the methods on a worker thread (they may
    block, as the real calls do).
    """

    def __init__(self, host: Host, port: int = 8080) -> None:
        self.host = host
        self.address = (str(host.ip), port)
        self.fds: dict[int, socket.socket] = {}

    def socket(self, domain, type_, proto, *, expected_fd):
        # a socket made in the host's namespace: Host.socket is trio code, so ask the trio thread
        sock = trio.from_thread.run(self.host.socket)
        self.fds[expected_fd] = socket.socket(fileno=sock.detach())
        return expected_fd

    def setsockopt(self, fd, level, name, value, length):
        self.fds[fd].setsockopt(level, name, value[0])
        return 0

    def bind(self, fd, address, length):
        self.fds[fd].bind(self.address if address is ... else address)
        return 0

    def listen(self, fd, backlog):
        self.fds[fd].listen(backlog)
        return 0

    def accept(self, fd, address, length, *, expected_fd):
        self.fds[expected_fd], _ = self.fds[fd].accept()
        return expected_fd

    def write(self, fd, buffer, count):
        return self.fds[fd].send(bytes(count))

    def read(self, fd, buffer, count):
        return len(self.fds[fd].recv(count))

    def close(self, fd):
        self.fds.pop(fd).close()
        return 0


async def main() -> None:
    async with open_lab() as lab:
        handler = NamespaceSockets(lab.iut)
        target = LinkTarget(
            ifname=lab.tst.ifname,
            netns=lab.tst.netns,
            local_ip=str(lab.iut.ip),  # the stack under test
            remote_ip=str(lab.tst.ip),  # the tester
            tester_mac=lab.alien_mac,  # the lab points the IUT's route to the tester at it
            local_mac=lab.iut.mac,  # or None: asked with ARP
            handler=handler,
        )
        result = await run_script("over_a_link.pkt", text=SCRIPT, target=target)
        for sock in handler.fds.values():
            sock.close()
        print(result.line_text())
        assert result.verdict == "PASS", result.line_text()


if __name__ == "__main__":
    trio.run(main)
