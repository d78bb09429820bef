"""The accelerator's CLI paths as the issue states them, on the simulated SoC:
``run --target sim --check`` for both architectures, ``bench model``, and the real model's
32-token decode (each ``run`` builds or reuses the Verilator build of
``tests/test_accelerator.py``'s configuration, which is the CLI's)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
