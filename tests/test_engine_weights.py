"""The engine's weight bank through the host port and ``EMBED``
(:mod:`sim.benches.engine_weights`, generated Verilog on Verilator + cocotb) for weight-bank
rows of different shapes: ``macs_per_lane`` 16 (four 32-bit words per lane's slice) and 4 (one
word per slice), where the host's weight reads take port ``b`` and ``EMBED``'s two-level lane
select, and 2 (two lanes per word), where they take port ``a``. Every weight word is read
back after the load, byte-enabled writes merge, and ``EMBED`` of an int8 and of a two-plane
16-bit table (accumulated) followed by a 16-bit ``MATVEC`` equal the golden model over the
whole scratchpad for the first, the last and a middle table row. The checkers fail on a
corrupted weight word, a corrupted and a missing scratchpad element."""

from pathlib import Path

import pytest

from sim.benches.engine import run_scenarios

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("lanes,K", [(4, 16), (4, 4), (4, 2)], ids=["K=16", "K=4", "K=2"])
def test_host_weights_and_embed(lanes, K, tmp_path):
    from sim.benches.engine_weights import build
    p = {"lanes": lanes, "macs_per_lane": K, "seed": K}
    _, case = build(p)
    rows = case.layout["table_rows"]
    scen = [{"readback": True, "sel_writes": 12, "tokens": [0, rows - 1, rows // 2]},
            {"readback": True, "corrupt": "readback", "expect_fail": True},
            {"tokens": [3], "corrupt": "value", "expect_fail": True},
            {"tokens": [3], "corrupt": "missing", "expect_fail": True},
            {"readback": True, "tokens": [1]}]          # the restored words, a clean run
    out = run_scenarios("sim.benches.engine_weights", {**p, "scenarios": scen}, tmp_path, REPO)
    words = case.image.weights.shape[0] * lanes * K // 4
    assert out[0]["words_read"] == out[4]["words_read"] == words
    assert all(n > 0 for n in out[0]["changed"])
    assert "weight readback differs" in out[1]["message"]
    assert "scratchpad differs" in out[2]["message"] and "scratchpad differs" in out[3]["message"]
