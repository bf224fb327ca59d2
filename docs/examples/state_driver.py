"""The state driver: one checked move at a time, in each tester mode."""

import trio

from tcpemu.states import DriverMode, open_state_driver


async def main() -> None:
    async with open_state_driver(DriverMode.EMULATED) as driver:
        await driver.walk("CLOSED -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> CLOSING -> TIME_WAIT -rst-> CLOSED")
        print([f"{a.name}->{b.name} ({how})" for a, b, how in driver.history])
    async with open_state_driver(DriverMode.KERNEL) as driver:  # a kernel tester behind a gateway
        await driver.walk("CLOSED -> LISTEN -> SYN_RECEIVED -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK")
        print("kernel tester:", driver.state.name, "after", driver.last_from.name)


if __name__ == "__main__":
    trio.run(main)
