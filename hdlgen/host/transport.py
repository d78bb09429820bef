"""Byte transports for :class:`hdlgen.host.Device`: one two-method interface.

A transport has ``write(data: bytes)`` and ``read(n, timeout) -> bytes`` (up to ``n`` bytes;
waits at most ``timeout`` seconds for the first one; ``b""`` on timeout), plus two figures
the device uses to size its reply timeouts: ``latency_s`` (round trip of an empty frame)
and ``byte_time_s`` (seconds per byte on the link). ``close()`` releases it. A transport may
also have ``clock()``, the time in seconds its timeouts count (:func:`transport_clock`; the
wall clock when it has none): the simulator's is simulated time, so a simulator slowed by a
loaded machine slows its timeouts with it instead of looking like a dead link.

* :class:`SerialTransport` -- the board's USB-UART (pyserial).
* :class:`hdlgen.host.sim.SimTransport` -- the simulated SoC under Verilator.
* :class:`FaultyTransport` -- wraps either and corrupts, truncates or drops a fraction of the
  frames written, or of the replies read, with a seeded rng (link robustness tests).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Protocol

from hdlgen.errors import UserError

__all__ = ["Transport", "SerialTransport", "FaultyTransport", "FAULT_KINDS", "transport_clock"]


class Transport(Protocol):
    """What :class:`~hdlgen.host.Device` needs from a transport."""
    latency_s: float
    byte_time_s: float

    def write(self, data: bytes) -> None: ...

    def read(self, n: int, timeout: float) -> bytes: ...

    def close(self) -> None: ...


def transport_clock(transport):
    """The clock (a function returning seconds) that ``transport``'s ``read`` timeouts count:
    its ``clock`` method, or the wall clock (:func:`time.monotonic`)."""
    return getattr(transport, "clock", time.monotonic)


class _Closing:
    """Context-manager support for transports."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(_Closing):
    """The ULX3S FT231X USB-UART (8N1) through pyserial.

    Parameters
    ----------
    port : str
        Serial device, e.g. ``/dev/ttyUSB0``.
    baud : int
        Must match the build's ``uart_baud`` (default 3 Mbaud).
    """

    def __init__(self, port: str, baud: int = 3_000_000):
        try:
            import serial
        except ImportError as e:  # pragma: no cover  (pyserial is a dependency)
            raise UserError("pyserial is not installed: pip install pyserial") from e
        try:
            self._ser = serial.Serial(port, baudrate=baud, timeout=0)
        except (serial.SerialException, ValueError) as e:
            raise UserError(f"cannot open serial port {port!r} at {baud} baud: {e}; check the "
                            f"board is plugged in and the port name (ls /dev/ttyUSB*)") from e
        self.port, self.baud = port, baud
        self.byte_time_s = 10.0 / baud
        self.latency_s = 0.05          # USB frames and the FT231X latency timer
        self._ser.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self._ser.timeout = max(0.0, timeout)
        first = self._ser.read(1)
        if not first:
            return b""
        self._ser.timeout = 0
        return first + self._ser.read(max(0, n - 1))

    def close(self) -> None:
        self._ser.close()


#: Faults :class:`FaultyTransport` injects: on a written frame (``flip``: 1-3 bit flips,
#: ``truncate``: only a prefix is sent, ``drop``: nothing is sent, ``garbage``: random bytes
#: before the frame) or on the reply read next (``reply_flip``, ``reply_cut``: bytes lost).
FAULT_KINDS = ("flip", "truncate", "drop", "garbage", "reply_flip", "reply_cut")


@dataclass
class FaultLog:
    counts: dict = field(default_factory=lambda: {k: 0 for k in FAULT_KINDS})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class FaultyTransport(_Closing):
    """Wraps a transport; each frame written is faulted with probability ``rate``.

    ``write`` is called once per request frame by :class:`~hdlgen.host.Device`, so faults are
    per frame. Reply faults apply to the next bytes read after the faulted write.

    Parameters
    ----------
    inner : transport
    rate : float
        Probability (0..1) that a frame is faulted.
    seed : int
        Seed of the rng choosing which frames and how.
    kinds : sequence of str
        Subset of :data:`FAULT_KINDS`.
    """

    def __init__(self, inner, rate: float, seed: int = 0, kinds=FAULT_KINDS):
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"corrupt rate {rate!r} must be between 0 and 1")
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad:
            raise UserError(f"unknown fault kinds {bad}; choose from {', '.join(FAULT_KINDS)}")
        self.inner, self.rate, self.kinds = inner, rate, tuple(kinds)
        self.rng = random.Random(seed)
        self.log = FaultLog()
        self.enabled = True
        self._reply_fault = None
        self.latency_s, self.byte_time_s = inner.latency_s, inner.byte_time_s
        self.clock = transport_clock(inner)

    def write(self, data: bytes) -> None:
        rng = self.rng
        if not (self.enabled and self.rate and rng.random() < self.rate):
            self.inner.write(data)
            return
        kind = rng.choice(self.kinds)
        self.log.counts[kind] += 1
        if kind == "flip":
            f = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
            self.inner.write(bytes(f))
        elif kind == "truncate":
            self.inner.write(data[:rng.randrange(1, len(data))])
        elif kind == "drop":
            pass
        elif kind == "garbage":
            self.inner.write(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16))) + data)
        else:
            self._reply_fault = kind
            self.inner.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        data = self.inner.read(n, timeout)
        if data and self._reply_fault:
            kind, self._reply_fault = self._reply_fault, None
            rng = self.rng
            if kind == "reply_flip":
                f = bytearray(data)
                f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
                data = bytes(f)
            else:
                k = rng.randrange(len(data))
                data = data[:k] + data[k + rng.randrange(1, 12):]
        return data

    def close(self) -> None:
        self.inner.close()

