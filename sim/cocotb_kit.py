"""Reusable cocotb parts for stream benches: clock/reset, seeded randomness, a stream driver
and monitor with random valid/ready stalls, payload packing, and a scoreboard.

Stream ports of an Amaranth component appear in Verilog as ``<name>__valid``,
``<name>__ready`` and ``<name>__payload`` (a flat vector; ``data.Struct`` fields are packed
LSB-first in declaration order). All drivers act at the falling clock edge and sample the
handshake in the read-only phase, so results do not depend on the simulator's ordering of
events at the rising edge.

Environment (set by :func:`sim.harness.run_cocotb`):
``HDLGEN_SEED`` random seed (printed at the start of every test), ``HDLGEN_COUNT`` number of
random transactions, ``HDLGEN_PARAMS`` JSON with the bench's parameters.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["bench_rng", "bench_count", "bench_params", "start", "StreamDriver", "StreamMonitor",
           "pack", "unpack", "to_signed", "assert_streams_equal", "wishbone_access"]


def bench_rng(salt: str = "") -> random.Random:
    """A ``random.Random`` seeded from ``HDLGEN_SEED`` (logged so failures can be replayed)."""
    seed = int(os.environ.get("HDLGEN_SEED", "1"))
    cocotb.log.info("HDLGEN_SEED=%d%s", seed, f" ({salt})" if salt else "")
    return random.Random(f"{seed}:{salt}")


def bench_count(default: int) -> int:
    """Number of random transactions: ``HDLGEN_COUNT`` or ``default``."""
    return int(os.environ.get("HDLGEN_COUNT", default))


def bench_params() -> dict:
    """The bench's parameters, passed by the pytest side as JSON in ``HDLGEN_PARAMS``."""
    return json.loads(os.environ.get("HDLGEN_PARAMS", "{}"))


async def start(dut, period_ns: int = 10, reset_cycles: int = 2):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``reset_cycles`` cycles."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def to_signed(value: int, width: int) -> int:
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def pack(values, widths) -> int:
    """Pack ``values`` LSB-first into one integer; each takes its width (two's complement)."""
    out, shift = 0, 0
    for v, w in zip(values, widths, strict=True):
        out |= (int(v) & ((1 << w) - 1)) << shift
        shift += w
    return out


def unpack(word: int, widths, signed=True) -> list[int]:
    """Inverse of :func:`pack`; ``signed`` is a bool or one bool per field."""
    out, shift = [], 0
    signs = signed if isinstance(signed, (list, tuple)) else [signed] * len(widths)
    for w, s in zip(widths, signs):
        v = (word >> shift) & ((1 << w) - 1)
        out.append(to_signed(v, w) if s else v)
        shift += w
    return out


class StreamDriver:
    """Drives ``<prefix>__valid``/``__payload`` (and reads ``__ready``) of ``dut``.

    Before presenting each item it idles for a random number of cycles: with probability
    ``stall`` per cycle. Once valid is asserted it is held until the transfer (stream rules).
    """

    def __init__(self, dut, prefix: str, rng: random.Random, stall: float = 0.0):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.payload = getattr(dut, f"{prefix}__payload", None)
        self.rng, self.stall = rng, stall
        self.sent = 0
        self.valid.value = 0

    async def send(self, items) -> None:
        """Transfer every item (an int payload) in order; returns at the falling edge after
        the last transfer. It first waits for a falling edge, so it may be called anywhere."""
        await FallingEdge(self.clk)
        for item in items:
            while self.stall and self.rng.random() < self.stall:
                self.valid.value = 0
                await FallingEdge(self.clk)
            self.valid.value = 1
            if self.payload is not None:
                self.payload.value = int(item)
            while True:
                await ReadOnly()
                accepted = self.ready is None or int(self.ready.value) == 1
                await FallingEdge(self.clk)
                if accepted:
                    break
            self.sent += 1
        self.valid.value = 0


class StreamMonitor:
    """Collects payloads from ``<prefix>__valid``/``__payload``, driving ``__ready`` low with
    probability ``stall`` per cycle. Runs in the background from construction."""

    def __init__(self, dut, prefix: str, rng: random.Random, stall: float = 0.0):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.payload = getattr(dut, f"{prefix}__payload", None)
        self.rng, self.stall = rng, stall
        self.items: list[int] = []
        if self.ready is not None:
            self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            ready = not (self.stall and self.rng.random() < self.stall)
            if self.ready is not None:
                self.ready.value = int(ready)
            await ReadOnly()
            if ready and int(self.valid.value) == 1:
                self.items.append(int(self.payload.value) if self.payload is not None else 1)

    async def wait_for(self, n: int, timeout_cycles: int) -> list[int]:
        """Wait until ``n`` items arrived (or the timeout passed); returns the items so far."""
        for _ in range(timeout_cycles):
            if len(self.items) >= n:
                break
            await RisingEdge(self.clk)
        return self.items

    def stop(self):
        self._task.cancel()


def assert_streams_equal(expected, got, what: str = "output", fmt=lambda x: repr(x)) -> None:
    """Scoreboard: same count and same items in order; the message names the first mismatch."""
    expected, got = list(expected), list(got)
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            raise AssertionError(f"{what}[{i}]: expected {fmt(e)}, got {fmt(g)}")
    if len(expected) != len(got):
        raise AssertionError(f"{what}: expected {len(expected)} items, got {len(got)}")


async def wishbone_access(dut, adr_bytes: int, data=None, sel=0xF, timeout=200, prefix="bus"):
    """One Wishbone classic access on ``<prefix>__*`` (a write when ``data`` is given), started
    at a falling edge; returns ``(dat_r, "ack" | "err")``. Fails after ``timeout`` cycles."""
    sig = lambda name: getattr(dut, f"{prefix}__{name}")
    sig("adr").value = adr_bytes >> 2
    sig("we").value = int(data is not None)
    sig("dat_w").value = data or 0
    sig("sel").value = sel
    sig("cyc").value = 1
    sig("stb").value = 1
    for _ in range(timeout):
        await FallingEdge(dut.clk)
        await ReadOnly()
        ack, err = int(sig("ack").value), int(sig("err").value)
        if ack or err:
            dat = int(sig("dat_r").value)
            await FallingEdge(dut.clk)
            sig("cyc").value = 0
            sig("stb").value = 0
            return dat, ("ack" if ack else "err")
    raise AssertionError(f"no ack/err at {adr_bytes:#x} within {timeout} cycles")
