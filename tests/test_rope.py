"""RoPE: golden model accuracy against float, then the RTL against the golden model."""

import gc
import json
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hdlgen.blocks.rope import Rope, bench_configs
from sim.golden.rope import max_lsb_error, rope, rope_float, rope_tables
from sim.amaranth_streams import run_stream_amaranth
from sim.benches.rope import case as case_items
from sim.benches.rope import random_vectors
from sim.harness import run_cocotb

COUNT = "3000"


def _rejects(match, build, **kw):
    """``build(**kw)`` raises ValueError matching ``match`` (unused-elaboratable silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            build(**kw)
        gc.collect()


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("head_size,positions", [(8, 512), (64, 256), (2, 64)])
def test_error_at_most_one_lsb(bits, head_size, positions):
    assert max_lsb_error(positions, head_size, 10000.0, bits, samples=32) <= 1.0


def test_matches_llama_pairing():
    # pair i of each head rotates by pos * theta**(-2i/hs); heads are independent
    x = np.arange(-8, 8) * 9                                  # two heads of 8
    y = rope_float(x, 3, 8, 10000.0)
    for h in range(2):
        for i in range(4):
            a = 3 * 10000.0 ** (-2 * i / 8)
            x0, x1 = x[8 * h + 2 * i], x[8 * h + 2 * i + 1]
            assert np.isclose(y[8 * h + 2 * i], x0 * np.cos(a) - x1 * np.sin(a))
            assert np.isclose(y[8 * h + 2 * i + 1], x0 * np.sin(a) + x1 * np.cos(a))
    assert np.array_equal(rope(x, 0, 8, 10000.0, 8), x)       # position 0 is the identity
    c, s = rope_tables(4, 8, 10000.0)
    assert c[0, 0] == 65536 and s[0, 0] == 0 and c.max() <= 65536


def test_saturates():
    assert list(rope(np.array([127, 127]), 1, 2, 10000.0, 8)) != [127, 127]
    y = rope(np.full(8, 127), 7, 8, 1.0001, 8)                # ~45 degrees on pair 0 ... 3
    assert y.max() == 127 and y.min() >= -128


def test_bench_configs_meet_the_bound():
    for b in bench_configs():
        e = b.error()
        assert e["metric"] == "max_abs" and e["value"] <= e["bound"] == 1.0


@pytest.mark.parametrize("kw", [dict(head_size=6), dict(theta=1.0), dict(bits=12),
                                dict(max_positions=0)])
def test_rejects_bad_parameters(kw):
    _rejects(next(iter(kw)), Rope, **kw)


CASES = {   # cocotb + Verilator
    "stories8": dict(head_size=8, theta=10000.0, bits=8, max_positions=512, dim=64),
}
SIM_CASES = {   # Amaranth's simulator
    "wide16": dict(head_size=16, theta=500000.0, bits=16, max_positions=100, dim=32),
    "pairs_only": dict(head_size=2, theta=10000.0, bits=8, max_positions=16, dim=6),
}


@pytest.mark.parametrize("case", list(SIM_CASES))
def test_other_shapes_in_amaranth_sim(case):
    p = SIM_CASES[case]
    g = np.random.default_rng(8)
    vecs, pos = random_vectors(p, g, 3000)
    lo, hi = -(1 << (p["bits"] - 1)), (1 << (p["bits"] - 1)) - 1
    vecs = np.concatenate([np.full((2, p["dim"]), hi), np.full((1, p["dim"]), lo), vecs])
    pos = np.concatenate([[p["max_positions"] - 1, 1, 0], pos])
    items, expected = case_items(p, vecs, pos)
    got = run_stream_amaranth(_build(p), items, len(expected), stall_in=0.2, stall_out=0.2)
    assert got == expected


def _build(p):
    return Rope(**{k: v for k, v in p.items() if k != "dim"})


@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_golden(case):
    p = CASES[case]
    run_cocotb(_build(p), "sim.benches.rope", name=f"rope_{case}",
               env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": COUNT})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_errors(corrupt):
    p = CASES["stories8"]
    res = run_cocotb(_build(p), "sim.benches.rope", name="rope_stories8",
                     testcase="random_stall_0", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(p | {"corrupt": corrupt}), "HDLGEN_COUNT": "300"})
    assert res.tests == 1 and res.failed == 1
