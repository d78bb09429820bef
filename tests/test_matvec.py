"""The matrix-vector unit (hdlgen/soc/matvec.py) in the simulated SoC, driven by the host API
(hdlgen/host/matvec.py) over the bridge's byte streams, against the MAC array's golden model
(sim/golden/mac_array.py): random shapes (none a multiple of the array's), several bases,
back-to-back jobs, the device's range checks, an abort, and the busy counter (one weight
row per cycle)."""

import numpy as np
import pytest

from hdlgen.config import AcceleratorConfig
from hdlgen.errors import UserError
from hdlgen.host.device import Device, JobError
from hdlgen.host.matvec import MatVec, Matrix
from hdlgen.soc.matvec import MATVEC_BASE, MatVecDesign, MatVecError, MatVecUnit
from sim.golden.mac_array import mac_array_model, matvec_beats, reference_matvec

# small enough for a quick Verilator build: 4 lanes x 4 MACs, 64 weight rows
CFG = AcceleratorConfig(lanes=4, macs_per_lane=4, max_dot_length=256, scratch_bytes=4096)
ROWS = {"weight_rows": 64, "result_rows": 32}


def golden(W, x, lanes, k):
    """The unit's exact results: the MAC array's beats for W @ x, first W.shape[0] rows."""
    out = np.concatenate(mac_array_model(matvec_beats(W, x, lanes, k), lanes, k))
    return out[:W.shape[0]]


@pytest.fixture(scope="module")
def mv_link():
    from hdlgen.host import SimTransport
    design = MatVecDesign(CFG, **ROWS)
    with SimTransport(soc=design.soc(byte_port=True), regmap=design.register_map, seed=3) as t:
        yield t
    assert t.result is not None and t.result.passed, t.error or t.result


def test_products(mv_link):
    dev = Device(mv_link, regmap=mv_link.regmap, seed=1)
    mv = MatVec(dev)
    assert (mv.lanes, mv.k, mv.weight_rows, mv.vector_rows, mv.result_rows) == (4, 4, 64, 64, 32)
    rng = np.random.default_rng(5)
    base = 0
    shapes = [(9, 13), (4, 4), (1, 37), (16, 1), (11, 30)]
    mats = []
    for rows, cols in shapes:
        W = rng.integers(-128, 128, (rows, cols))
        W[0, :2] = [-128, 127][:cols]              # the extremes
        mats.append((W, mv.load(W, base=base)))
        base = mats[-1][1].end
    assert base <= 64
    for n, (W, A) in enumerate(mats):
        x = rng.integers(-128, 128, W.shape[1])
        y = mv.run(A, x, x_base=n, y_base=2 * n)
        assert np.array_equal(y, golden(W, x, 4, 4)), (W.shape, y)
        assert np.array_equal(y, reference_matvec(W, x))
        # one weight row per cycle: the unit fed the array for exactly out * in cycles
        assert dev.read_reg("BUSY_MAC_ARRAY") == A.out_blocks * A.in_blocks
        assert mv.last_cycles < A.out_blocks * A.in_blocks + 60
    # the results of earlier jobs are still where they were written
    W, A = mats[0]
    assert len(mv.read_results(A.rows, y_base=0)) == A.rows


def test_full_bank_and_last_result_row(mv_link):
    """A dot product of the vector buffer's full length (256 elements: 64 rows) over the
    whole weight bank, all extremes, written to the result buffer's last row."""
    dev = Device(mv_link, regmap=mv_link.regmap, seed=2)
    mv = MatVec(dev)
    W = np.full((4, 256), -128)
    W[1] = 127
    W[2, ::2] = 127
    x = np.full(256, -128)
    A = mv.load(W)
    assert A.end == 64
    y = mv.run(A, x, y_base=31)
    assert np.array_equal(y, golden(W, x, 4, 4))
    assert y[0] == 256 * 128 * 128


def _job(dev, w=0, x=0, y=0, out=1, inn=1):
    dev.write_reg("MV_W_BASE", ROW=w)
    dev.write_reg("MV_X_BASE", ROW=x)
    dev.write_reg("MV_Y_BASE", ROW=y)
    dev.write_reg("MV_BLOCKS", OUT_BLOCKS=out, IN_BLOCKS=inn)
    dev.start()


@pytest.mark.parametrize("job, code", [
    (dict(out=0, inn=3), MatVecError.SHAPE),
    (dict(out=3, inn=0), MatVecError.SHAPE),
    (dict(w=60, out=1, inn=5), MatVecError.WEIGHT_RANGE),
    (dict(out=9, inn=8), MatVecError.WEIGHT_RANGE),          # 72 rows from 0
    (dict(x=62, out=1, inn=3), MatVecError.VECTOR_RANGE),
    (dict(y=31, out=2, inn=1), MatVecError.RESULT_RANGE),
])
def test_device_refuses_out_of_range_jobs(mv_link, job, code):
    dev = Device(mv_link, regmap=mv_link.regmap, seed=3)
    mv = MatVec(dev)
    sentinel = mv.read_results(4, y_base=31)
    _job(dev, **job)
    with pytest.raises(JobError, match="MV_" + code.name) as e:
        mv.wait(5)
    assert e.value.code == 0x10 + code.value
    assert dev.read_reg("BUSY_MAC_ARRAY") == 0              # nothing was read
    assert np.array_equal(mv.read_results(4, y_base=31), sentinel)
    # the largest jobs that fit still run
    W = np.random.default_rng(code.value).integers(-128, 128, (4, 20))
    A = mv.load(W, base=59)
    x = np.arange(20) - 10
    assert np.array_equal(mv.run(A, x, x_base=59, y_base=31), reference_matvec(W, x))


def test_watchdog_abort_then_next_job(mv_link):
    """The watchdog stops a job mid-run; what was in flight drains, and the next job's
    results are exact (no stale accumulation, no result written to the wrong row)."""
    dev = Device(mv_link, regmap=mv_link.regmap, seed=4)
    mv = MatVec(dev)
    rng = np.random.default_rng(9)
    W = rng.integers(-128, 128, (16, 64))                   # 4 x 16 = 64 rows
    A = mv.load(W)
    x = rng.integers(-128, 128, 64)
    dev.write_reg("WATCHDOG", 25)
    with pytest.raises(JobError, match="WATCHDOG"):
        mv.run(A, x, y_base=8)
    dev.write_reg("WATCHDOG", 0)
    W2 = rng.integers(-128, 128, (5, 7))
    A2 = mv.load(W2, base=0)
    x2 = rng.integers(-128, 128, 7)
    assert np.array_equal(mv.run(A2, x2, y_base=0), reference_matvec(W2, x2))
    A = mv.load(W)
    assert np.array_equal(mv.run(A, x, y_base=8), reference_matvec(W, x))


def test_selftest_registers_on_a_unit_build(mv_link):
    """firmware/selftest.py's register checks on a build with the unit run a real product
    (``check_matvec``) instead of a watchdog job, and pass."""
    from hdlgen import selftest
    prog = selftest.load_program()
    dev = Device(mv_link, regmap=mv_link.regmap, seed=6)
    assert prog.check_matvec(dev, seed=3) == []
    assert prog.check_registers(dev) == []


# ---- without the simulator -------------------------------------------------------------------

class _FakeDev:
    """Enough of a Device for MatVec's host-side checks (records writes)."""

    def __init__(self, rm):
        self.regmap, self.writes = rm, []

    def _rm(self):
        return self.regmap

    def write_bytes(self, addr, data):
        self.writes.append((addr, len(data)))


def test_host_refuses_before_writing():
    mv = MatVec(dev := _FakeDev(MatVecDesign(CFG, **ROWS).register_map))
    with pytest.raises(UserError, match="4 x 17 = 68 weight rows"):
        mv.load(np.zeros((13, 65), dtype=int))
    with pytest.raises(UserError, match="outside int8"):
        mv.load(np.full((2, 2), 128))
    with pytest.raises(UserError, match="from row 60"):
        mv.load(np.zeros((4, 40), dtype=int), base=60)
    A = Matrix(0, 4, 8, 1, 2)
    with pytest.raises(UserError, match=r"shape \(7,\)"):
        mv.run(A, np.zeros(7, dtype=int))
    with pytest.raises(UserError, match="outside int8"):
        mv.run(A, np.full(8, -129))
    with pytest.raises(UserError, match="from row 63"):
        mv.run(A, np.zeros(8, dtype=int), x_base=63)
    with pytest.raises(UserError, match="from row 32"):
        mv.run(A, np.zeros(8, dtype=int), y_base=32)
    assert dev.writes == []
    with pytest.raises(UserError, match="no matrix-vector unit"):
        from hdlgen.soc.regmap import soc_register_map
        MatVec(_FakeDev(soc_register_map(CFG)))


def test_unit_checks_and_layout():
    with pytest.raises(UserError, match="macs_per_lane=6 must be a multiple of 4"):
        MatVecUnit(AcceleratorConfig(lanes=2, macs_per_lane=6))
    with pytest.raises(UserError, match="weight_rows=0"):
        MatVecUnit(CFG, weight_rows=0)
    d = MatVecDesign(AcceleratorConfig())
    rm = d.register_map
    assert rm.address("MV_W_BASE") == MATVEC_BASE
    assert rm.window("mv_weights") == (MATVEC_BASE + 0x10000, 512 * 128)
    assert rm.window("mv_result") == (MATVEC_BASE + 0x30000, 1024 * 64)
    assert rm.field("MV_ROWS", "VECTOR").reset == 4096 // 8
    # 85F: weights 32 + vector 2 + results 32 DP16KD, with the 64 KiB scratch (32) it fits
    from hdlgen.flow import ECP5_DEVICES
    assert d.ebr == 66
    d.check_fits(ECP5_DEVICES["85F"])
    big = MatVecDesign(AcceleratorConfig(lanes=4, macs_per_lane=4, scratch_bytes=64 * 1024),
                       weight_rows=4096)
    with pytest.raises(UserError, match="need .* DP16KD .* but the 25F has 56"):
        big.check_fits(ECP5_DEVICES["25F"])


def test_soc_covered_entries_are_checked():
    from hdlgen.soc.soc import SoC
    d = MatVecDesign(CFG, **ROWS)
    unit = MatVecUnit(CFG, **ROWS)
    unit._MustUse__silence = unit._csr._MustUse__silence = True     # refused below
    with pytest.raises(UserError, match="covered entry 'nope'"):
        SoC(CFG, subordinates={"mv": unit}, extra_layout=d.layout,
            covered=("mv_weights", "mv_vector", "mv_result", "nope"))


def test_default_shape_in_simulation():
    """The 85F's default unit (16 lanes x 8 MACs: the bitstream's design) on one product."""
    from hdlgen.host import SimTransport
    cfg = AcceleratorConfig()
    design = MatVecDesign(cfg)
    rng = np.random.default_rng(16)
    with SimTransport(soc=design.soc(byte_port=True), regmap=design.register_map, seed=4) as t:
        dev = Device(t, regmap=t.regmap, seed=5)
        mv = MatVec(dev)
        W = rng.integers(-128, 128, (37, 70))
        x = rng.integers(-128, 128, 70)
        A = mv.load(W, base=100)
        y = mv.run(A, x, x_base=7, y_base=1000)
        assert np.array_equal(y, golden(W, x, 16, 8))
        assert dev.read_reg("BUSY_MAC_ARRAY") == 3 * 9
    assert t.result is not None and t.result.passed, t.error or t.result


def test_bench_matvec(capsys):
    """``bench matvec`` on the 85F's unit (the same Verilog as above: one Verilator build):
    every product exact, the array fed one weight row per cycle, utilization from cycles."""
    import json
    from hdlgen.cli import main
    assert main(["bench", "matvec", "--shapes", "37x70,128x512", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["macs"] == 128 and out["fmax_mhz"] > 0
    for shape, rows in (("37x70", 3 * 9), ("128x512", 8 * 64)):
        r = out["shapes"][shape]
        assert r["mismatches"] == 0
        assert r["feed_cycles"] == r["weight_rows"] == rows
        assert rows < r["cycles"] < rows + 60
        R, C = (int(v) for v in shape.split("x"))
        assert r["mac_utilization"] == round(R * C / (r["cycles"] * 128), 4)
    assert main(["bench", "matvec", "--shapes", "64by64"]) == 2
    assert "ROWSxCOLS" in capsys.readouterr().err
