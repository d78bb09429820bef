"""Argmax: golden model, then the RTL against the golden model under cocotb."""

import gc
import json
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hdlgen.blocks.argmax import Argmax
from sim.golden.argmax import argmax_packets
from sim.amaranth_streams import run_stream_amaranth
from sim.benches.argmax import case as case_items
from sim.benches.argmax import random_packets
from sim.harness import run_cocotb

COUNT = "3000"


def _rejects(match, build, **kw):
    """``build(**kw)`` raises ValueError matching ``match`` (unused-elaboratable silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            build(**kw)
        gc.collect()


def test_golden_first_index_on_ties():
    assert argmax_packets([[1, 3, 3, 2], [7], [-5, -5], [-32768, 32767, 32767]]) == \
        [(1, 3), (0, 7), (0, -5), (1, 32767)]
    with pytest.raises(ValueError, match="empty"):
        argmax_packets([[]])
    with pytest.raises(ValueError, match="int16"):
        argmax_packets([[40000]])


def test_golden_agrees_with_a_scan():
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = rng.integers(-3, 4, int(rng.integers(1, 30)))
        best = 0
        for k in range(1, len(p)):
            if p[k] > p[best]:
                best = k
        assert argmax_packets([p]) == [(best, int(p[best]))]


@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=33), dict(max_length=0)])
def test_rejects_bad_parameters(kw):
    _rejects(next(iter(kw)), Argmax, **kw)


CASES = {"logit16_vocab512": dict(bits=16, max_length=512)}   # cocotb + Verilator


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_wide_logits_in_amaranth_sim(stall):
    p = dict(bits=24, max_length=50257)
    g = np.random.default_rng(9)
    packets = random_packets(p, g, 3000) + [[-(1 << 23)], [(1 << 23) - 1] * 3, [0, 0]]
    items, expected = case_items(p, packets)
    got = run_stream_amaranth(Argmax(**p), items, len(expected), stall_in=stall, stall_out=stall)
    assert got == expected


@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_golden(case):
    p = CASES[case]
    run_cocotb(Argmax(**p), "sim.benches.argmax", name=f"argmax_{case}",
               env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": COUNT})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_errors(corrupt):
    p = CASES["logit16_vocab512"]
    res = run_cocotb(Argmax(**p), "sim.benches.argmax", name="argmax_logit16_vocab512",
                     testcase="random_stall_0", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(p | {"corrupt": corrupt}), "HDLGEN_COUNT": "300"})
    assert res.tests == 1 and res.failed == 1
