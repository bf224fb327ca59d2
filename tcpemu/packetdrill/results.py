"""A script's verdict, and the summary line of a run."""

from __future__ import annotations

import pathlib
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .._errors import MalformedFrameError
from ..capture import INBOUND, PcapngWriter
from ..core import Message
from ..wire import classify_untrusted

__all__ = ["Result", "summary"]


@dataclass(slots=True)
class Result:
    """The verdict on one script.

    ``verdict`` is "PASS", "FAIL" or "SKIP"; for FAIL, ``line`` is the first
    departing script line, ``reason`` what departed, ``expected``/``actual``
    the two sides in packetdrill notation (or the call and its result),
    ``time_error`` how late (> 0) or early (< 0) in seconds for a timing
    departure; for SKIP, ``reason`` is ``unsupported: <construct>``.
    ``trace`` holds the connection's trace and ``capture`` the pcapng file,
    kept for failures when an artifacts directory was given.
    """

    path: str
    verdict: str
    reason: str = ""
    line: int | None = None
    expected: str | None = None
    actual: str | None = None
    time_error: float | None = None
    duration: float = 0.0
    trace: list[str] = field(default_factory=list)
    capture: str | None = None

    def line_text(self) -> str:
        """The one-line report: ``PASS path``, ``FAIL path:LINE: ...``, ``SKIP path: unsupported: ...``."""
        if self.verdict == "PASS":
            return f"PASS {self.path} ({self.duration:.2f} s)"
        if self.verdict == "SKIP":
            return f"SKIP {self.path}: {self.reason}"
        where = f"{self.path}:{self.line}" if self.line else self.path
        text = f"FAIL {where}: {self.reason}"
        if self.expected is not None:
            text += f"\n    expected: {self.expected}"
        if self.actual is not None:
            text += f"\n    actual:   {self.actual}"
        if self.capture:
            text += f"\n    capture:  {self.capture}"
        return text


def summary(results: Sequence[Result]) -> str:
    """``N passed, N failed, N skipped``."""
    count = {v: sum(1 for r in results if r.verdict == v) for v in ("PASS", "FAIL", "SKIP")}
    return f"{count['PASS']} passed, {count['FAIL']} failed, {count['SKIP']} skipped"


_ECN_BITS: Final = {"noecn": (0,), "ect1": (1,), "ect0": (2,), "ce": (3,), "ect01": (1, 2)}
_ECN_NAMES: Final = {0: "noecn", 1: "ect1", 2: "ect0", 3: "ce"}


class _EcnTap(PcapngWriter):
    """The run's capture, which also notes the ECN bits of the IP header of every TCP
    frame the stack sends (a Message carries TCP fields only)."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path, ifname="tester")
        self.marks: deque[tuple[int, int, int, int]] = deque(maxlen=4096)  # (seq, ack, flags, ecn)

    def write_batch(self, frames: list[bytes], direction: int) -> None:
        super().write_batch(frames, direction)
        if direction != INBOUND:
            return
        for frame in frames:
            try:
                _, _, start, _ = classify_untrusted(frame)
            except MalformedFrameError:
                continue
            tos = frame[15] if frame[12:14] == b"\x08\x00" else ((frame[14] & 0x0F) << 4) | (frame[15] >> 4)
            seq, ack, off_flags = struct.unpack_from("!IIH", frame, start + 4)
            self.marks.append((seq, ack, off_flags & 0x1FF, tos & 3))

    def ecn_of(self, msg: Message) -> int | None:
        """The ECN bits of the frame that carried ``msg`` (the oldest one noted with its numbers)."""
        key = (msg.seq, msg.ack, int(msg.flags))
        while self.marks:
            seq, ack, flags, ecn = self.marks.popleft()
            if (seq, ack, flags) == key:
                return ecn
        return None


class _Failure(Exception):
    """A departure from the script (ends the run with FAIL)."""

    def __init__(
        self,
        line: int,
        reason: str,
        expected: str | None = None,
        actual: str | None = None,
        time_error: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.line, self.reason, self.expected, self.actual, self.time_error = (
            line,
            reason,
            expected,
            actual,
            time_error,
        )
