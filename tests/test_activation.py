"""Activations: accuracy of the golden model against float, then the RTL against the golden
model under cocotb (one Verilator build per parameter set)."""

import gc
import json
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hdlgen.blocks.activation import Activation, bench_configs
from sim.golden.activation import activation, max_abs_error, reference, table16
from sim.amaranth_streams import run_stream_amaranth
from sim.benches.activation import case as case_items
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
BOUND = 0.02


@pytest.mark.parametrize("function", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("in_bits,in_scale,out_scale", [(8, 1 / 16, 1 / 2048),
                                                       (16, 1 / 4096, 1 / 4096),
                                                       (16, 1 / 2048, 1 / 2048)])
def test_accuracy_bound_over_whole_input_range(function, in_bits, in_scale, out_scale):
    err = max_abs_error(function, in_bits, 16, in_scale, out_scale, x_range=8.0)
    assert err <= BOUND, f"{function} int{in_bits}: max abs error {err} > {BOUND}"


def test_int8_output_error_is_what_the_docs_say():
    # half an output LSB at 1/16: int8 outputs cannot meet the bound over [-8, 8]
    assert 0.02 < max_abs_error("silu", 8, 8, 1 / 16, 1 / 16) <= 1 / 32 + 1e-3


def test_relu_is_exact_when_scales_match():
    x = np.arange(-32768, 32768)
    assert np.array_equal(activation(x, "relu", 16, 16, 1 / 4096, 1 / 4096), np.maximum(x, 0))
    x = np.arange(-128, 128)
    assert np.array_equal(activation(x, "relu", 8, 8, 0.1, 0.1), np.maximum(x, 0))


def test_interpolation_stays_between_knots():
    base, delta = table16("gelu", 8, 1 / 4096, 1 / 16)
    assert np.all(np.abs(delta) < 1 << 17)
    x = np.arange(-32768, 32768)
    y = activation(x, "gelu", 16, 8, 1 / 4096, 1 / 16)
    assert y.min() >= -128 and y.max() <= 127
    # near 0 the error against float stays below one output LSB
    assert np.max(np.abs(y * (1 / 16) - reference("gelu", x / 4096))) <= 1 / 16


def test_bench_configs_meet_the_bound():
    for b in bench_configs():
        e = b.error()
        assert e["metric"] == "max_abs" and e["value"] <= e["bound"] == BOUND, (b.params, e)


@pytest.mark.parametrize("kw", [dict(function="tanh"), dict(in_bits=12), dict(out_bits=32),
                                dict(in_scale=0), dict(out_scale=-1.0)])
def test_rejects_bad_parameters(kw):
    _rejects(next(iter(kw)), Activation, **kw)


CASES = {   # cocotb + Verilator, one build each
    "silu8": dict(function="silu", in_bits=8, out_bits=16, in_scale=1 / 16, out_scale=1 / 2048),
    "gelu16": dict(function="gelu", in_bits=16, out_bits=16, in_scale=1 / 4096, out_scale=1 / 4096),
}
SIM_CASES = {   # Amaranth's simulator: same datapaths, other tables
    "relu8": dict(function="relu", in_bits=8, out_bits=8, in_scale=1 / 16, out_scale=1 / 16),
    "gelu8": dict(function="gelu", in_bits=8, out_bits=16, in_scale=1 / 16, out_scale=1 / 2048),
    "silu16": dict(function="silu", in_bits=16, out_bits=16, in_scale=1 / 4096, out_scale=1 / 4096),
    "gelu_tanh16to8": dict(function="gelu_tanh", in_bits=16, out_bits=8, in_scale=1 / 2048,
                           out_scale=1 / 16),
}


@pytest.mark.parametrize("case", list(SIM_CASES))
def test_other_tables_in_amaranth_sim(case):
    p = SIM_CASES[case]
    g = np.random.default_rng(4)
    lo, hi = -(1 << (p["in_bits"] - 1)), (1 << (p["in_bits"] - 1)) - 1
    x = np.concatenate([[lo, hi, 0, -1, 1], g.integers(lo, hi + 1, 3000)])
    items, expected = case_items(p, x, x & 1)
    got = run_stream_amaranth(Activation(**p), items, len(expected), stall_in=0.2, stall_out=0.2)
    assert got == expected


@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_golden(case):
    p = CASES[case]
    run_cocotb(Activation(**p), "sim.benches.activation", name=f"act_{case}",
               env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": COUNT})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_errors(corrupt):
    p = CASES["silu8"] | {"corrupt": corrupt}
    res = run_cocotb(Activation(**CASES["silu8"]), "sim.benches.activation", name="act_silu8",
                     testcase="random_stall_0", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": "300"})
    assert res.tests == 1 and res.failed == 1
