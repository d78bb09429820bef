"""cocotb bench for :class:`hdlgen.blocks.softmax.Softmax`: rows of logits in, probabilities
out, checked bit for bit against :func:`sim.golden.softmax.softmax_golden` (values and
``last`` framing), with random valid/ready stalls on both streams.

``HDLGEN_PARAMS`` (JSON): ``max_len``, ``in_width``, ``in_frac``, ``out_bits`` (the block's
parameters), ``stall_in``, ``stall_out`` (stall probabilities), ``corrupt`` (``"value"`` or
``"missing"``: the scoreboard expects one wrong / one extra item, which must fail).
``HDLGEN_COUNT``: number of random rows in ``random_rows`` (default 3000).
"""

import cocotb
from cocotb.triggers import ClockCycles

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, pack, start)
from sim.golden.softmax import softmax_golden


def _cfg():
    p = bench_params()
    block = {k: p[k] for k in ("max_len", "in_width", "in_frac", "out_bits")}
    return p, block


async def _check_rows(dut, rows, rng):
    p, block = _cfg()
    W, OB = block["in_width"], block["out_bits"]
    await start(dut)
    drv = StreamDriver(dut, "i", rng, p.get("stall_in", 0.0))
    mon = StreamMonitor(dut, "o", rng, p.get("stall_out", 0.0))
    items, expected = [], []
    for row in rows:
        items += [pack([v, j == len(row) - 1], [W, 1]) for j, v in enumerate(row)]
        gold = softmax_golden(row, **block)
        expected += [pack([int(v), k == len(gold) - 1], [OB, 1]) for k, v in enumerate(gold)]
    await drv.send(items)
    slack = 1 + 4 * max(p.get("stall_in", 0.0), p.get("stall_out", 0.0)) / (1 - p.get("stall_out", 0.0))
    got = await mon.wait_for(len(expected), timeout_cycles=int(slack * (3 * block["max_len"] + 100)))
    await ClockCycles(dut.clk, 40)           # anything extra would arrive by now
    got = list(mon.items)
    mon.stop()
    if p.get("corrupt") == "value":
        expected[len(expected) // 2] ^= 1
    elif p.get("corrupt") == "missing":
        expected.append(expected[-1])

    def fmt(word):
        return f"(p={word & ((1 << OB) - 1)}, last={word >> OB})"
    assert_streams_equal(expected, got, "probabilities", fmt=fmt)
    cocotb.log.info("checked %d rows, %d probabilities", len(rows), len(expected))


def _limits():
    _, block = _cfg()
    W = block["in_width"]
    return -(1 << (W - 1)), (1 << (W - 1)) - 1, block["max_len"]


def _random_row(rng, n):
    lo, hi, _ = _limits()
    kind = rng.randrange(5)
    if kind == 0:                                  # anywhere in the full range
        return [rng.randint(lo, hi) for _ in range(n)]
    centre = rng.randint(lo, hi)
    width = 1 << rng.randrange(1, (hi - lo).bit_length())
    if kind == 1:                                  # a window of random width
        return [min(hi, max(lo, centre + rng.randint(-width, width))) for _ in range(n)]
    if kind == 2:                                  # ties: two levels
        other = min(hi, max(lo, centre - width))
        return [rng.choice((centre, other)) for _ in range(n)]
    if kind == 3:                                  # one peak
        row = [centre] * n
        row[rng.randrange(n)] = min(hi, centre + width)
        return row
    return [rng.choice((lo, hi)) for _ in range(n)]  # extremes only


@cocotb.test()
async def random_rows(dut):
    """HDLGEN_COUNT random rows, lengths 1..max_len, mixed logit distributions."""
    rng = bench_rng("softmax-random")
    _, _, max_len = _limits()
    rows = []
    for _ in range(bench_count(3000)):
        n = rng.choice((1, 2, max_len, rng.randint(1, max_len), rng.randint(1, max_len)))
        rows.append(_random_row(rng, n))
    await _check_rows(dut, rows, rng)


@cocotb.test()
async def all_equal(dut):
    """Rows of one repeated value (every element gets 1/n), at several values and lengths."""
    rng = bench_rng("softmax-equal")
    lo, hi, max_len = _limits()
    rows = [[v] * n for v in (lo, -1, 0, 1, hi) for n in sorted({1, 2, 3, max_len // 2 or 1, max_len})]
    await _check_rows(dut, rows, rng)


@cocotb.test()
async def extremes(dut):
    """Most negative and most positive logits together (largest differences), saturation of a
    single dominant element (p clipped to 2**out_bits - 1) and full-length rows."""
    rng = bench_rng("softmax-extremes")
    lo, hi, max_len = _limits()
    rows = [[lo, hi], [hi, lo], [hi] + [lo] * (max_len - 1), [lo] * (max_len - 1) + [hi],
            [hi, hi, lo, lo], [lo + 1, lo], [hi, hi - 1]]
    rows += [[rng.choice((lo, hi)) for _ in range(max_len)] for _ in range(4)]
    await _check_rows(dut, rows, rng)


@cocotb.test()
async def length_one(dut):
    """Rows of a single element (p saturates to 2**out_bits - 1), back to back."""
    rng = bench_rng("softmax-one")
    lo, hi, _ = _limits()
    rows = [[v] for v in (lo, hi, 0, -1, 1)] + [[rng.randint(lo, hi)] for _ in range(60)]
    await _check_rows(dut, rows, rng)


@cocotb.test()
async def overlong(dut):
    """Packets longer than max_len: the tail is consumed and dropped, the row is clipped."""
    rng = bench_rng("softmax-overlong")
    lo, hi, max_len = _limits()
    rows = [[rng.randint(lo, hi) for _ in range(max_len + extra)] for extra in (1, 2, 7)]
    rows.append([rng.randint(lo, hi) for _ in range(3)])   # the next row is unaffected
    await _check_rows(dut, rows, rng)


@cocotb.test()
async def saturation(dut):
    """One dominant logit per row: its probability saturates to 2**out_bits - 1 and the
    others underflow to 0 (exp of the largest differences is below the table's range)."""
    rng = bench_rng("softmax-saturation")
    lo, hi, max_len = _limits()
    rows = []
    for n in sorted({1, 2, 5, max_len}):
        row = [lo] * n
        row[rng.randrange(n)] = hi
        rows.append(row)
    await _check_rows(dut, rows, rng)
