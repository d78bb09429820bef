"""The accelerator end to end: the SoC with the transformer engine on its bus, generated for a
compiled model, under Verilator, driven over the host protocol's bytes
(:class:`hdlgen.host.sim.SimTransport`) exactly as a board over its UART.

One simulator session (module fixture) runs: decode steps equal to the integer golden model
(next token, largest logit, every logit); a golden model of another model is caught (the
comparison can fail); a position beyond the context ends the job with the engine's
``POS_RANGE`` and the device still works afterwards; the run-time load path restores wiped
weights, and a model the gateware was not generated for is refused. The CLI paths
(``run --target sim --check``, ``bench model``) are run as the issue states them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boards import get_board
from hdlgen.build import MODEL_SCRATCH_BYTES
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.host.device import JobError
from hdlgen.model import load_model
from sim.golden.engine import Engine as Golden

REPO = Path(__file__).resolve().parent.parent
# The ULX3S-85F default configuration, as the CLI uses it (so the CLI tests reuse the fixture's
# Verilator build).
CONFIG = get_board("ulx3s").device("85F").config.replace(scratch_bytes=MODEL_SCRATCH_BYTES)


def _compiled(seed, spec="random:llama"):
    return compile_model(load_model(spec, seed=seed), CONFIG, CompileOptions())


@pytest.fixture(scope="module")
def session():
    pytest.importorskip("cocotb_tools")
    from hdlgen.host.accelerator import open_accelerator
    comp = _compiled(7)
    with open_accelerator("sim", CONFIG, comp) as acc:
        yield acc, comp


def _golden(comp):
    g = Golden(comp.image, comp.words, acc_width=CONFIG.acc_width, mac="reference")
    g.reset()
    return g


def _check_steps(acc, comp, steps, golden=None):
    """Run ``steps`` ([token, pos]) on the device; return how many differ from the golden
    model (token, largest logit or any logit)."""
    g = golden or _golden(comp)
    acc.clear_scratch()
    bad = 0
    for token, pos in steps:
        st = acc.step(token, pos)
        r = g.step(token, pos)
        assert st.cycles > 0 and st.units["mac_array"] > 0
        bad += (st.token, st.value) != (r.token, r.value) or \
            not np.array_equal(acc.logits(), np.asarray(r.logits))
    return bad


def test_steps_equal_golden_and_errors(session):
    acc, comp = session
    steps = [[1, 0], [5, 1], [9, 2], [33, 3]]
    assert _check_steps(acc, comp, steps) == 0
    # the comparison can fail: the golden model of another model differs
    assert _check_steps(acc, comp, steps[:2], golden=_golden(_compiled(8))) > 0
    # a position beyond the KV cache is refused with the engine's code, nothing wraps
    ctx = comp.image.context
    with pytest.raises(JobError, match="ENGINE_POS_RANGE"):
        acc.step(1, ctx)
    assert _check_steps(acc, comp, steps[:2]) == 0        # and the device still works


def test_runtime_load(session):
    """The run-time load path (program, weights, parameters over the link, verified by reading
    back): weights wiped over the bus make the device differ from the golden model, loading
    the compiled model again restores it; a model whose constants the gateware does not have
    (another random model: other norm epsilons and SwiGLU scales) is refused before anything
    is written."""
    from hdlgen.errors import UserError
    acc, comp = session
    mp = acc.map
    rows = comp.image.weights.shape[0]
    acc.dev.write(acc.base + mp.base("weights"), [0] * (rows * mp.row_stride_words))
    assert _check_steps(acc, comp, [[1, 0], [7, 1]]) > 0
    n = acc.load(comp)
    assert n >= rows * mp.row_words + len(comp.program) * 4
    assert _check_steps(acc, comp, [[1, 0], [7, 1], [2, 2]]) == 0
    with pytest.raises(UserError, match="cannot be loaded onto this build"):
        acc.load(_compiled(11))
    assert _check_steps(acc, comp, [[1, 0]]) == 0


def _cli(*args, timeout=1800):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "hdlgen", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("spec", ["random:llama", "random:gpt2"])
def test_run_sim_check_cli(spec):
    """The issue's command: 8 tokens, zero golden mismatches, cycles per token reported."""
    pytest.importorskip("cocotb_tools")
    res = _cli("run", "--model", spec, "--seed", "7", "--steps", "8", "--target", "sim",
               "--check", "--json")
    assert len(res["tokens"]) == 8 and res["golden_mismatches"] == 0
    assert len(res["cycles_per_token"]) == 8 and all(c > 0 for c in res["cycles_per_token"])
    # the golden target gives the same tokens (the RTL equals the integer golden model)
    gold = _cli("run", "--model", spec, "--seed", "7", "--steps", "8", "--json")
    assert (gold["tokens"], gold["predictions"]) == (res["tokens"], res["predictions"])


def test_bench_model_cli():
    pytest.importorskip("cocotb_tools")
    res = _cli("bench", "model", "--model", "random:llama", "--seed", "7", "--positions",
               "1,40,500", "--json")
    pos = res["positions"]
    assert list(pos) == ["1", "40", "63"]               # capped at the context's last position
    for p in pos.values():
        assert p["cycles"] > 0 and 0 < p["mac_utilization"] < 1
        assert set(p["units"]) >= {"mac_array", "softmax", "norm"}
    assert pos["63"]["cycles"] > pos["1"]["cycles"]    # attention grows with the position
    assert pos["63"]["useful_macs"] > pos["1"]["useful_macs"]


def test_stories260k_32_token_decode_equals_golden():
    """The real model on the default 85F accelerator (16 x 8 MACs, context 256, weights in
    block RAM): every step of a 32-token greedy decode from BOS equals the integer golden model
    (token, largest logit, all 512 logits)."""
    pytest.importorskip("cocotb_tools")
    res = _cli("run", "--model", "stories260K", "--target", "sim", "--steps", "32", "--check",
               "--json")
    assert len(res["tokens"]) == 32 and res["golden_mismatches"] == 0
    assert len(res["cycles_per_token"]) == 32
