"""Requantizer: golden model properties, then the RTL against the golden model under cocotb."""

import gc
import json
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hdlgen.blocks.requant import Requant
from sim.golden.requant import quantize_multiplier, requantize, requantize_float
from sim.amaranth_streams import run_stream_amaranth
from sim.benches.requant import edge_rows, expected_of, items_of, random_vectors
from sim.harness import run_cocotb

COUNT = "3000"


def _rejects(match, build, **kw):
    """``build(**kw)`` raises ValueError matching ``match``; the half-built component is
    collected with Amaranth's unused-elaboratable warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            build(**kw)
        gc.collect()


def test_golden_matches_exact_rational_rounding():
    rng = np.random.default_rng(7)
    acc = rng.integers(-2**31, 2**31, 4000)
    bias = rng.integers(-2**31, 2**31, 4000)
    mult = rng.integers(1, 65536, 4000)
    shift = rng.integers(1, 48, 4000)
    got = requantize(acc, mult, shift, bias, out_bits=16)
    for k in range(0, 4000, 7):
        x = int(acc[k]) + int(bias[k])
        num, den = x * int(mult[k]), 1 << int(shift[k])
        ref = (2 * num + den) // (2 * den)                  # floor(num/den + 1/2): half up
        assert got[k] == min(max(ref, -32768), 32767)


def test_golden_round_half_up_and_saturation():
    assert list(requantize([5, -5, 3, -3], 1, 1)) == [3, -2, 2, -1]     # 2.5 -> 3, -2.5 -> -2
    assert list(requantize([2**31 - 1, -2**31], 65535, 1)) == [127, -128]
    assert list(requantize([2**31 - 1, -2**31], 65535, 1, out_bits=16)) == [32767, -32768]
    assert list(requantize([100, 100], [1, 3], [2, 2], bias=[0, 4])) == [25, 78]


@pytest.mark.parametrize("bad", [dict(mult=0), dict(mult=65536), dict(shift=0), dict(shift=48)])
def test_golden_rejects_out_of_range_parameters(bad):
    args = dict(acc=[1], mult=1, shift=1) | bad
    with pytest.raises(ValueError, match="out of range"):
        requantize(**args)


def test_quantize_multiplier_is_most_precise():
    rng = np.random.default_rng(3)
    for scale in list(10.0 ** rng.uniform(-12, 4.2, 300)) + [1.0, 0.5, 2**-40, 32767.0]:
        mult, shift = quantize_multiplier(scale)
        assert 1 <= mult <= 65535 and 1 <= shift <= 47
        err = abs(mult / 2**shift - scale)
        assert err <= 2.0 ** -(shift + 1) * (1 + 1e-9)
        if shift < 47:                                   # a larger shift would overflow mult
            assert round(scale * 2 ** (shift + 1)) > 65535
    x = rng.integers(-2**31, 2**31, 2000)
    mult, shift = quantize_multiplier(3.1e-5)
    assert np.max(np.abs(requantize(x, mult, shift, out_bits=16)
                         - requantize_float(x, mult / 2**shift, out_bits=16))) == 0
    for bad in (0.0, -1.0, float("nan"), 1e6, 1e-20):
        with pytest.raises(ValueError, match="real_scale"):
            quantize_multiplier(bad)


def test_rejects_bad_out_bits():
    _rejects("out_bits=12", Requant, out_bits=12)


def test_rtl_matches_golden():
    """cocotb + Verilator: int8 output with bias (the bench configuration)."""
    params = {"out_bits": 8, "has_bias": True}
    run_cocotb(Requant(out_bits=8, has_bias=True), "sim.benches.requant", name="requant_8_1",
               env={"HDLGEN_PARAMS": json.dumps(params), "HDLGEN_COUNT": COUNT})


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_int16_without_bias_in_amaranth_sim(stall):
    """The other parameter set, in Amaranth's simulator (no second Verilator build)."""
    p = {"out_bits": 16, "has_bias": False}
    vec = random_vectors(p, random.Random(11), 3000)
    got = run_stream_amaranth(Requant(out_bits=16, has_bias=False), items_of(p, *vec), 3000,
                              stall_in=stall, stall_out=stall, seed=3)
    assert got == expected_of(p, *vec)


@pytest.mark.parametrize("p", [{"out_bits": 16, "has_bias": False, "acc_bits": 22},
                               {"out_bits": 8, "has_bias": True, "acc_bits": 12},
                               {"out_bits": 16, "has_bias": False, "acc_bits": 27}])
def test_lut_product_in_amaranth_sim(p):
    """The product in LUTs (the engine's second requantizer): random items and the edge rows
    (every field's extremes, ties, saturation) against the golden model, with stalls."""
    vec = random_vectors(p, random.Random(12), 2000)
    edge = edge_rows(p)
    vec = tuple(np.concatenate([a, b]) for a, b in zip(vec, edge))
    n = len(vec[0])
    blk = Requant(out_bits=p["out_bits"], has_bias=p["has_bias"], acc_bits=p["acc_bits"],
                  lut_mult=True)
    got = run_stream_amaranth(blk, items_of(p, *vec), n, stall_in=0.2, stall_out=0.2, seed=4)
    assert got == expected_of(p, *vec)


def test_lut_product_rtl_matches_golden():
    """cocotb + Verilator: the LUT product at the engine's width (rq2: 27-bit sums, int16 out,
    no bias), random items under stalls and the edge rows."""
    params = {"out_bits": 16, "has_bias": False, "acc_bits": 27}
    run_cocotb(Requant(out_bits=16, has_bias=False, acc_bits=27, lut_mult=True),
               "sim.benches.requant", name="requant_lut_16_27",
               env={"HDLGEN_PARAMS": json.dumps(params), "HDLGEN_COUNT": COUNT})


def test_lut_product_refuses_wide_accumulators():
    _rejects("acc_bits=27: the LUT product takes at most 27 bits", Requant, has_bias=True,
             acc_bits=27, lut_mult=True)
    _rejects("acc_bits=24: the DSP product takes 32-bit", Requant, acc_bits=24)


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_errors(corrupt):
    params = {"out_bits": 8, "has_bias": True, "corrupt": corrupt}
    res = run_cocotb(Requant(out_bits=8, has_bias=True), "sim.benches.requant", name="requant_8_1",
                     testcase="random_stall_0", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(params), "HDLGEN_COUNT": "300"})
    assert res.tests == 1 and res.failed == 1
