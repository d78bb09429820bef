"""Run packed stream items through a component with Amaranth's own simulator.

For the parameter sets of the element-wise blocks that do not get their own Verilator build
(each build costs 10-60 s): the same items and expected outputs as the cocotb benches, random
valid/ready stalls, in-order comparison, and a cycle budget.
"""

import random

from amaranth.hdl import Value
from amaranth.sim import Simulator

__all__ = ["run_stream_amaranth"]


def run_stream_amaranth(dut, items, n_out, *, stall_in=0.0, stall_out=0.0, seed=0,
                        extra=None, max_cycles=None):
    """Send ``items`` (payloads as ints) on ``dut.i`` and return the first ``n_out`` payloads
    (ints) seen on ``dut.o``, plus anything extra that arrives within 20 more cycles.

    ``extra``: ``[(signal, value), ...]`` to set before the first cycle (configuration ports).
    """
    rng = random.Random(seed)
    i_payload, o_payload = Value.cast(dut.i.payload), Value.cast(dut.o.payload)
    got = []
    limit = max_cycles or 100 + 4 * len(items) * (1 + int(4 * max(stall_in, stall_out)))

    async def bench(ctx):
        for sig, v in extra or ():
            ctx.set(sig, v)
        k, cycles, tail = 0, 0, 0
        while cycles < limit and tail < 20:
            want = k < len(items) and not (stall_in and rng.random() < stall_in)
            ctx.set(dut.i.valid, int(want))
            if want:
                ctx.set(i_payload, items[k])
            ctx.set(dut.o.ready, int(not (stall_out and rng.random() < stall_out)))
            _, _, iv, ir, ov, orr, op = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, o_payload)
            if iv and ir:
                k += 1
            if ov and orr:
                got.append(int(op))
            cycles += 1
            if len(got) >= n_out:
                tail += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got
