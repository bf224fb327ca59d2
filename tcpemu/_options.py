"""The options a core negotiates and honours: MSS, window scale, SACK, timestamps.

A mixin of :class:`~tcpemu.core.ConnectionCore` (its fields live in the
core's slots): what our SYN offers, what the peer's SYN agreed, the
timestamps on every segment, the SACK blocks of the out-of-order store.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, Final

from ._message import SegmentKind
from ._state import SEQ_MOD, seq_add, seq_diff
from .wire import ACK_BIT as _F_ACK
from .wire import OptionKind, TcpOption

if TYPE_CHECKING:
    from .core import ConnectionCore

_new_tuple: Final = tuple.__new__
_EXPECTED: Final = SegmentKind.EXPECTED

# option kinds as plain ints: looking up an enum member costs more than the compare
_K_MSS: Final = int(OptionKind.MSS)
_K_WSCALE: Final = int(OptionKind.WSCALE)
_K_SACK_PERMITTED: Final = int(OptionKind.SACK_PERMITTED)
_K_TIMESTAMP: Final = int(OptionKind.TIMESTAMP)
_NOP: Final = TcpOption(int(OptionKind.NOP))
_TS: Final = struct.Struct("!II")


@functools.lru_cache(maxsize=64)
def _mss_option(mss: int) -> TcpOption:
    """One option object per MSS value: every SYN-ACK of a listener carries the same."""
    return TcpOption.mss(mss)


class _OptionsMixin:
    __slots__ = ()

    @property
    def snd_wscale(self: ConnectionCore) -> int:
        """The shift applied to windows the peer sends (0 unless both SYNs had WS)."""
        if self.peer_wscale is None or self.wscale is None or not self._our_syn_offers_ws:
            return 0
        return min(self.peer_wscale, 14)

    @property
    def rcv_wscale(self: ConnectionCore) -> int:
        """The shift applied to windows we send (0 unless both SYNs had WS)."""
        if self.peer_wscale is None or self.wscale is None or not self._our_syn_offers_ws:
            return 0
        return self.wscale

    @property
    def sack_ok(self: ConnectionCore) -> bool:
        """Both SYNs carried SACK-permitted."""
        return self.sack and self.peer_sack_permitted and self.syn_sent

    @property
    def _our_syn_offers_ws(self: ConnectionCore) -> bool:
        return self.syn_sent

    def _take_syn_options(self: ConnectionCore, options: tuple[TcpOption, ...]) -> None:
        for opt in options:
            kind, data = opt.kind, opt.data
            if kind == _K_MSS and len(data) == 2:
                self.peer_mss = int.from_bytes(data, "big")
            elif kind == _K_WSCALE and len(data) == 1:
                self.peer_wscale = data[0]
            elif kind == _K_SACK_PERMITTED:
                self.peer_sack_permitted = True
            elif kind == _K_TIMESTAMP and len(data) == 8:
                self.peer_ts = True

    def _take_timestamps(self: ConnectionCore, options: tuple[TcpOption, ...], kind: SegmentKind) -> None:
        for opt_kind, data in options:  # unpacked: quicker than the NamedTuple's properties
            if opt_kind == _K_TIMESTAMP and len(data) == 8:
                tsval, tsecr = _TS.unpack(data)
                self.last_tsval_got, self.last_tsecr_got = tsval, tsecr
                # RFC 7323 4.3: TS.Recent follows segments that move the left edge
                if kind is _EXPECTED or self.ts_recent is None:
                    self.ts_recent = tsval
                return

    def _tsval(self: ConnectionCore, now: float) -> int:
        """ts_start + ms since the first timestamp, never lower than a TSval sent before:
        a clock read out of order (or a caller's older ``now``) must not make a
        PAWS-checking peer drop our segment (RFC 7323 5.3)."""
        if self._ts_t0 is None:
            self._ts_t0 = now
        tsval = (self.ts_start + int((now - self._ts_t0) * 1000)) % SEQ_MOD
        last = self.last_tsval_sent
        if last is not None and seq_diff(tsval, last) < 0:
            return last
        return tsval

    def _timestamp_option(self: ConnectionCore, now: float) -> TcpOption:
        tsval = self._tsval(now)
        tsecr = self.ts_recent or 0
        self.last_tsval_sent, self.last_tsecr_sent = tsval, tsecr
        return _new_tuple(TcpOption, (_K_TIMESTAMP, _TS.pack(tsval, tsecr)))

    def _syn_options(self: ConnectionCore, now: float) -> tuple[TcpOption, ...]:
        """MSS, SACK-permitted, timestamps, window scale, as Linux orders them."""
        opts: list[TcpOption] = []
        if self.mss is not None:
            opts.append(_mss_option(self.mss))
        answering = self.syn_got  # a SYN-ACK offers only what the peer offered
        if self.sack and (not answering or self.peer_sack_permitted):
            opts.append(TcpOption.sack_permitted())
        offer_ts = self.timestamps if self.timestamps is not None else answering and self.peer_ts
        if offer_ts and (not answering or self.peer_ts):
            opts.append(self._timestamp_option(now))
            self.ts_enabled = True
        if self.wscale is not None and (not answering or self.peer_wscale is not None):
            opts += [_NOP, TcpOption.wscale(self.wscale)]
        return tuple(opts)

    def _options(self: ConnectionCore, now: float, fi: int) -> tuple[TcpOption, ...]:
        if not (self.ts_enabled and self.peer_ts) and not self.sack_ok:
            return ()
        opts: list[TcpOption] = []
        if self.ts_enabled and self.peer_ts:
            opts += [_NOP, _NOP, self._timestamp_option(now)]
        if self.sack_ok and fi & _F_ACK and self._ooo.pieces:
            blocks = self.sack_blocks()[: 3 if self.ts_enabled else 4]
            opts += [_NOP, _NOP, TcpOption.sack(blocks)]
        return tuple(opts)

    def sack_blocks(self: ConnectionCore) -> list[tuple[int, int]]:
        """The out-of-order data held, as (left, right) edges, newest first (RFC 2018)."""
        if self.rcv_nxt is None:
            return []
        ranges = sorted(
            (seq_diff(seq, self.rcv_nxt), seq_diff(seq, self.rcv_nxt) + len(p) + fin)
            for seq, (p, fin) in self._ooo.pieces.items()
        )
        merged: list[list[int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        base = self.rcv_nxt
        return [(seq_add(base, a), seq_add(base, b)) for a, b in reversed(merged)]
