"""cocotb bench for :class:`hdlgen.engine.memories.WideFIFO`: random words written under the
FIFO's contract (a writer that counts credits, never writing into a full FIFO) and read under
random stalls must come out unchanged, in order, none lost or duplicated; ``level`` and
``r_rdy`` must follow a Python model every cycle.

The writer and the reader switch at random between phases of different stall rates (fast
writer and slow reader, the reverse, both busy, both idle), so the FIFO fills to ``depth`` and
drains to empty many times; the bench counts the cycles spent full and empty (with the writer
willing but out of credits, or the reader willing with nothing to read) and fails if the run
did not reach both edges. ``w_data`` carries random bits in cycles without a write (a write
enable that leaked would show). Every column group's write enable is driven (the engine gives
each group its own registered copy, all equal).

``HDLGEN_PARAMS``: ``{"width": W, "depth": D, "corrupt": "value" | "missing"}``; ``corrupt``
makes the scoreboard expect one wrong item or one item more, which must fail (negative tests
of the checker). ``HDLGEN_COUNT``: words to pass (default 2000).
"""

from collections import deque

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from sim.cocotb_kit import assert_streams_equal, bench_count, bench_params, bench_rng, start

# (write probability, read probability) of a phase
_PHASES = ((0.9, 0.15), (0.15, 0.9), (0.7, 0.7), (1.0, 1.0), (0.05, 0.05), (1.0, 0.0),
           (0.0, 1.0))


@cocotb.test()
async def random_traffic(dut):
    p = bench_params()
    width, depth = p["width"], p["depth"]
    rng = bench_rng(f"wide_fifo:{width}x{depth}")
    n = bench_count(2000)
    groups = len(dut.w_en)
    all_groups = (1 << groups) - 1
    dut.w_en.value = 0
    dut.r_en.value = 0
    dut.w_data.value = 0
    await start(dut)
    words = [rng.getrandbits(width) for _ in range(n)]
    model = deque()
    got, errors = [], []
    sent = cycle = 0
    full = empty = 0                     # cycles at the edges with the other side willing
    phase_left, pw, pr = 0, 0.5, 0.5
    while len(got) < n and cycle < 40 * n + 1000:
        await FallingEdge(dut.clk)
        if phase_left == 0:
            pw, pr = rng.choice(_PHASES)
            phase_left = rng.randrange(5, 4 * depth + 20)
        phase_left -= 1
        want_w = sent < n and rng.random() < pw
        write = want_w and len(model) < depth          # the writer's credits
        read = rng.random() < pr
        full += want_w and not write
        empty += read and not model
        dut.w_en.value = all_groups if write else 0
        dut.w_data.value = words[sent] if write else rng.getrandbits(width)
        dut.r_en.value = int(read)
        await ReadOnly()
        level, rdy = int(dut.level.value), int(dut.r_rdy.value)
        if level != len(model) or rdy != (len(model) > 0):
            errors.append(f"cycle {cycle}: level {level} r_rdy {rdy}, model holds "
                          f"{len(model)}")
        if read and rdy:
            got.append(int(dut.r_data.value))
            if model:
                model.popleft()
        if write:
            model.append(words[sent])
            sent += 1
        cycle += 1
    dut._log.info(f"{width}x{depth}: {len(got)} of {n} words in {cycle} cycles; {full} cycles "
                  f"full with a write waiting, {empty} empty with a read waiting")
    assert not errors, f"{len(errors)} cycles disagree with the model; first: {errors[0]}"
    expected = list(words)
    if p.get("corrupt") == "value":
        expected[n // 2] ^= 1 << (width - 1)
    elif p.get("corrupt") == "missing":
        expected.append(0)
    assert_streams_equal(expected, got, "r_data", fmt=hex)
    assert full >= 10 and empty >= 10, \
        f"the run did not exercise the edges ({full} cycles full, {empty} empty): raise HDLGEN_COUNT"
