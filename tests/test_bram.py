"""BlockRAM and MemoryBank: tiling, parameter checks, cocotb random dual-port traffic on the
behavioural model and on the ECP5 DP16KD netlist (with a DP16KD model), negative tests,
Wishbone host traffic on memory banks, weight row layout."""

import json
import random

import numpy as np
import pytest

from hdlgen.blocks.bram import BlockRAM, ecp5_tiling
from hdlgen.blocks.membank import MemoryBank, bus_bytes, weight_bank, weight_rows
from hdlgen.config import AcceleratorConfig
from sim import harness
from sim.harness import run_cocotb


class _ECP5:
    family = "ecp5"


class ECP5BlockRAM(BlockRAM):
    """BlockRAM elaborated as for an ECP5 platform (DP16KD instances)."""

    def elaborate(self, platform):
        return super().elaborate(_ECP5())


def _params(ram, init=(), **extra):
    p = {"width": ram.width, "depth": ram.depth, "lanes": ram.lanes,
         "ports": list(ram._ports), "init": list(init), "latency": ram.latency}
    p.update(extra)
    return {"HDLGEN_PARAMS": json.dumps(p)}


def test_tiling_choices():
    t = ecp5_tiling(1024, 512, granularity=8, ports=("w", "r"))
    assert (t.mode, t.columns, t.rows, t.primitives) == (36, 32, 1, 32)
    t = ecp5_tiling(1024, 512, granularity=8)               # no x36 with a read/write port A
    assert (t.mode, t.primitives) == (18, 64)
    t = ecp5_tiling(32, 16384, granularity=8)
    assert t.primitives == 32 and t.rows == 1
    t = ecp5_tiling(32, 4096, granularity=8, init=True)     # init: x9/x18/x36 only
    assert t.mode >= 9 and t.primitives == 8
    # a 64 KiB scratch RAM fits in 32 EBR, the minimum
    assert ecp5_tiling(32, 16384, granularity=8).primitives * 2048 == 64 * 1024


def test_parameter_errors():
    with pytest.raises(ValueError, match="multiple of granularity"):
        BlockRAM(width=12, depth=4, granularity=8)
    with pytest.raises(ValueError, match="ports"):
        BlockRAM(width=8, depth=4, ports=("r", "r"))
    with pytest.raises(ValueError, match="does not fit"):
        BlockRAM(width=8, depth=4, init=[256])
    with pytest.raises(TypeError, match="depth"):
        BlockRAM(width=8, depth=0)
    with pytest.raises(ValueError, match="multiple of 32"):
        MemoryBank(width=48, depth=4)
    with pytest.raises(ValueError, match="latency=5"):
        BlockRAM(width=8, depth=4, latency=5)
    for kwargs, latency in (({}, 2), ({"latency": 3}, 3), ({"latency": 4}, 4)):
        ram = BlockRAM(width=8, depth=4, **kwargs)
        ram._MustUse__silence = True           # built only to read its latency
        assert ram.latency == latency


# (initial contents of the behavioural model are covered by the weight-bank test below)
BEHAVIOURAL = [
    dict(width=16, depth=64, granularity=8, ports=("rw", "rw")),
    dict(width=16, depth=64, granularity=8, ports=("rw", "rw"), latency=3),
    dict(width=16, depth=64, granularity=8, ports=("rw", "rw"), latency=4),
]


@pytest.mark.parametrize("shape", BEHAVIOURAL, ids=["tdp16x64", "tdp16x64_lat3", "tdp16x64_lat4"])
def test_bram_random_ports(shape):
    shape = dict(shape)
    rng = random.Random(1)
    init = [rng.getrandbits(shape["width"]) for _ in range(shape["depth"] // 2)] if shape.pop("init", False) else []
    ram = BlockRAM(**shape, init=init)
    run_cocotb(ram, "sim.benches.bram", name="bram", testcase="random_ports",
               env={**_params(ram, init, addr_span=8), "HDLGEN_COUNT": "4000"})


ECP5_SHAPES = [
    # (shape, expected mode): x9 cascade of 2 rows with init, x36 pseudo dual port,
    # narrow x4 true dual port, x18 with byte enables
    (dict(width=32, depth=4096, granularity=8, init=True), 9),
    (dict(width=72, depth=512, granularity=8, ports=("w", "r"), init=True), 36),
    (dict(width=8, depth=3000, ports=("rw", "rw")), 4),
    (dict(width=16, depth=1024, granularity=8, ports=("rw", "rw"), init=True), 18),
    # latency 3 (input registers per group of four primitives): 5 rows x 3 columns of x9
    # (groups straddle rows), and x36 (byte enables on AD from the group copies)
    (dict(width=24, depth=9000, granularity=8, latency=3), 9),
    (dict(width=288, depth=256, granularity=8, ports=("w", "r"), init=True, latency=3), 36),
    # latency 4 (a copy per two groups first): 20 x36 primitives in five groups (three
    # first-stage copies, the last for one group), and 15 x9 primitives over 5 rows
    (dict(width=640, depth=256, granularity=8, ports=("w", "r"), init=True, latency=4), 36),
    (dict(width=24, depth=9000, granularity=8, latency=4), 9),
    # the engine's weight bank form: x18 with byte enables, 8 columns in two groups (one
    # first-stage copy), the write data held per group
    (dict(width=128, depth=1024, granularity=8, latency=4, wdata_per_group=True), 18),
]


@pytest.mark.parametrize("shape,mode", ECP5_SHAPES,
                         ids=["x9_rows", "x36", "x4_tdp", "x18_be", "x9_rows_lat3", "x36_lat3",
                              "x36_lat4", "x9_rows_lat4", "x18_lat4"])
def test_bram_ecp5_netlist(shape, mode, monkeypatch):
    """The DP16KD tiling, byte enables, row cascade and INITVAL layout, simulated."""
    from sim.benches.bram import DP16KD_MODEL
    shape = dict(shape)
    rng = random.Random(2)
    init = [rng.getrandbits(shape["width"]) for _ in range(shape["depth"])] if shape.pop("init", False) else []
    ram = ECP5BlockRAM(**shape, init=init)
    assert ram.tiling().mode == mode
    orig = harness.verilog_of
    monkeypatch.setattr(harness, "verilog_of", lambda c, n: orig(c, n) + DP16KD_MODEL)
    run_cocotb(ram, "sim.benches.bram", name="bram_ecp5", testcase="random_ports",
               env={**_params(ram, init, addr_span=16), "HDLGEN_COUNT": "3000"})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_bram_checker_catches_errors(corrupt):
    ram = BlockRAM(width=16, depth=64, granularity=8, ports=("rw", "rw"))
    res = run_cocotb(ram, "sim.benches.bram", name="bram", testcase="random_ports",
                     env={**_params(ram, corrupt=corrupt), "HDLGEN_COUNT": "300"}, check=False)
    assert res.tests == 1 and res.failed == 1


def _bank_env(bank, init=(), **extra):
    p = {"width": bank.width, "depth": bank.depth, "compute": "rw" if "we" in
         bank.port.signature.members else "r", "bus_bytes": bus_bytes(bank.width, bank.depth),
         "init": list(init), "latency": bank.latency}
    p.update(extra)
    return {"HDLGEN_PARAMS": json.dumps(p)}


def test_weight_bank_host_and_compute_traffic():
    cfg = AcceleratorConfig(lanes=4, macs_per_lane=4)      # 128-bit rows
    rng = random.Random(3)
    init = [rng.getrandbits(128) for _ in range(48)]
    bank = weight_bank(cfg, rows=48, init=init)            # 768 bytes in a 1 KiB window
    run_cocotb(bank, "sim.benches.bram", name="weight_bank", testcase="bank_traffic",
               env={**_bank_env(bank, init), "HDLGEN_COUNT": "600"})


def test_wide_weight_bank_host_and_compute_traffic():
    """Rows of 32 words (the 85F's 16 x 8 weight bank): host writes go through the copies per
    four groups before the groups' own (the extra write stage)."""
    cfg = AcceleratorConfig(lanes=16, macs_per_lane=8)     # 1024-bit rows, 8 groups
    rng = random.Random(4)
    init = [rng.getrandbits(1024) for _ in range(16)]
    bank = weight_bank(cfg, rows=16, init=init)
    run_cocotb(bank, "sim.benches.bram", name="wide_weight_bank", testcase="bank_traffic",
               env={**_bank_env(bank, init), "HDLGEN_COUNT": "400"})


def test_activation_bank_host_and_compute_traffic():
    bank = MemoryBank(width=64, depth=64, compute="rw")
    run_cocotb(bank, "sim.benches.bram", name="act_bank", testcase="bank_traffic",
               env={**_bank_env(bank), "HDLGEN_COUNT": "600"})


def test_staged_activation_bank_host_and_compute_traffic():
    """A scratchpad with input register stages (the matrix-vector unit's result buffer):
    512-bit rows, 32 x18 primitives, latency 4 on both ports."""
    bank = MemoryBank(width=512, depth=64, compute="rw", staged=True)
    assert bank.latency == 4
    run_cocotb(bank, "sim.benches.bram", name="staged_act_bank", testcase="bank_traffic",
               env={**_bank_env(bank), "HDLGEN_COUNT": "400"})


def test_bank_checker_catches_errors():
    bank = MemoryBank(width=64, depth=64, compute="rw")
    res = run_cocotb(bank, "sim.benches.bram", name="act_bank", testcase="bank_traffic",
                     env={**_bank_env(bank, corrupt="value"), "HDLGEN_COUNT": "300"}, check=False)
    assert res.tests == 1 and res.failed == 1


def test_weight_rows_layout():
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(6, 10))
    rows = weight_rows(w, lanes=4, macs_per_lane=4)
    assert len(rows) == 2 * 3
    # row (ob=1, ib=2): byte l*4+k = W[4+l, 8+k], zero padded
    raw = rows[1 * 3 + 2].to_bytes(16, "little")
    for lane in range(4):
        for k in range(4):
            want = w[4 + lane, 8 + k] if 4 + lane < 6 and 8 + k < 10 else 0
            assert np.int8(np.uint8(raw[lane * 4 + k])) == want
    with pytest.raises(ValueError, match="int8"):
        weight_rows(np.full((2, 2), 200), 2, 2)
