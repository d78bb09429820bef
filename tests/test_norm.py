"""RMSNorm and LayerNorm: golden-model accuracy against float, Amaranth-simulator runs of the
model sizes (stories260K dim 64 int8, GPT-2 dim 768 int16), cocotb on the generated Verilog
(random vectors under stalls, named edge cases, negative tests)."""

import json

import numpy as np
import pytest
from amaranth.hdl import Fragment, ResetInserter, Signal
from amaranth.sim import Simulator

from hdlgen.blocks.layernorm import LayerNorm
from hdlgen.blocks.layernorm import bench_configs as ln_bench_configs
from hdlgen.blocks.rmsnorm import RMSNorm
from hdlgen.blocks.rmsnorm import bench_configs as rms_bench_configs
from sim.golden.norm import NormParams, error_vectors, norm_error, norm_float, norm_golden

CLASSES = {"rmsnorm": RMSNorm, "layernorm": LayerNorm}


# ---- golden model ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("dim,in_width,eps", [(64, 8, 0.0), (172, 8, 0.25), (64, 16, 1e-3),
                                              (768, 16, 1.0), (1024, 16, 0.0), (1, 8, 0.0),
                                              (3, 16, 0.1)])
def test_golden_meets_bound(kind, dim, in_width, eps):
    p = NormParams(kind, dim=dim, in_width=in_width, eps=eps)
    assert norm_error(p, count=120)["max_rel"] <= 0.005


def test_golden_other_scales():
    for kw in ({"gamma_frac": 8, "out_frac": 2}, {"gamma_frac": 14, "out_frac": 6},
               {"gamma_width": 12, "gamma_frac": 10, "out_frac": 0}):
        for kind in ("rmsnorm", "layernorm"):
            p = NormParams(kind, dim=100, in_width=16, eps=0.5, **kw)
            assert norm_error(p, count=60)["max_rel"] <= 0.005, (kind, kw)


def test_golden_known_values():
    one = 1 << 12
    p = NormParams("rmsnorm", dim=4, in_width=8)
    # x / rms(x) with rms = 1 -> x itself, times 16 for out_frac 4
    assert norm_golden(p, [1, -1, 1, -1], [one] * 4).tolist() == [16, -16, 16, -16]
    assert norm_golden(p, [3, 0, 0, 0], [one] * 4).tolist() == [32, 0, 0, 0]   # sqrt(4) * 16
    assert norm_golden(p, [0] * 4, [one] * 4).tolist() == [0] * 4
    q = NormParams("layernorm", dim=4, in_width=8)
    assert norm_golden(q, [5] * 4, [one] * 4, [one] * 4).tolist() == [16] * 4     # beta = 1.0
    assert norm_golden(q, [1, -1, 1, -1], [one] * 4, [0] * 4).tolist() == [16, -16, 16, -16]
    assert norm_golden(q, [100, -100, 100, -100], [4 * one] * 4, [0] * 4).tolist() == [64, -64] * 2
    assert norm_golden(q, [100, -100, 100, -100], [32767] * 4, [0] * 4).tolist() == [127, -128] * 2


def test_float_reference_matches_formula():
    p = NormParams("layernorm", dim=5, in_width=8, eps=0.5)
    x = np.array([1, 2, 3, 4, 10])
    ref = norm_float(p, x, [1 << 12] * 5, [0] * 5)
    want = (x - x.mean()) / np.sqrt(x.var() + 0.5) * 16
    assert np.allclose(ref, want)


def test_bad_parameters():
    with pytest.raises(ValueError, match="dim=0"):
        RMSNorm(dim=0)
    with pytest.raises(ValueError, match="in_width=17"):
        LayerNorm(dim=8, in_width=17)
    with pytest.raises(ValueError, match="guard bits"):
        RMSNorm(dim=1024, gamma_frac=0, out_frac=16)
    with pytest.raises(ValueError, match="eps"):
        RMSNorm(dim=8, eps=-1)
    with pytest.raises(ValueError, match="steps_per_cycle 5"):
        LayerNorm(dim=8, steps_per_cycle=5)
    p = NormParams("rmsnorm", dim=4, in_width=8)
    with pytest.raises(ValueError, match="x out of signed 8-bit"):
        norm_golden(p, [200, 0, 0, 0], [1] * 4)
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        norm_golden(p, [1, 2, 3], [1] * 4)


@pytest.mark.parametrize("configs", [rms_bench_configs, ln_bench_configs])
def test_bench_configs(configs):
    (cfg,) = configs()
    err = cfg.error()
    assert err["metric"] == "max_rel" and err["bound"] == 0.005 and err["value"] <= 0.005
    block = cfg.build()
    assert block.kind == cfg.name and block.dim == 768
    Fragment.get(block, None)                          # elaborates


# ---- Amaranth simulator ------------------------------------------------------------------------

def _amaranth_run(dut, vectors, stall, seed):
    rng = np.random.default_rng(seed)
    D = dut.dim
    ln = dut.kind == "layernorm"
    got = []
    total = D * len(vectors)

    async def tb_x(ctx):
        for x, _, _ in vectors:
            for v in x:
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": int(v)})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)

    async def tb_g(ctx):
        for _, g, b in vectors:
            for c in range(D):
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(dut.g.valid, 1)
                ctx.set(dut.g.payload, {"gamma": int(g[c]), "beta": int(b[c])} if ln
                        else {"gamma": int(g[c])})
                await ctx.tick().until(dut.g.ready)
                ctx.set(dut.g.valid, 0)

    async def tb_out(ctx):
        while len(got) < total:
            rdy = int(rng.random() >= stall)
            ctx.set(dut.o.ready, rdy)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and rdy:
                got.append((int(payload.data), int(payload.last)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in (tb_x, tb_g, tb_out):
        sim.add_testbench(tb)
    sim.run_until(1e-8 * (6 * total + 300 * len(vectors)))
    return got


@pytest.mark.parametrize("kind,kw,count", [
    ("rmsnorm", {"dim": 64, "in_width": 8, "eps": 0.5}, 6),        # stories260K
    ("layernorm", {"dim": 768, "in_width": 16, "eps": 1.0}, 2),    # GPT-2
    ("rmsnorm", {"dim": 172, "in_width": 16, "eps": 0.0}, 2),
    ("layernorm", {"dim": 1, "in_width": 8, "eps": 0.0}, 4),          # length 1
    ("rmsnorm", {"dim": 1, "in_width": 16, "eps": 0.0}, 4),
    # two to four square-root and division steps per cycle (the engine's norms take two)
    ("rmsnorm", {"dim": 64, "in_width": 16, "eps": 0.5, "steps_per_cycle": 2}, 6),
    ("layernorm", {"dim": 100, "in_width": 16, "eps": 1.0, "steps_per_cycle": 3}, 3),
    ("rmsnorm", {"dim": 172, "in_width": 8, "eps": 0.0, "steps_per_cycle": 4}, 3),
    ("layernorm", {"dim": 1, "in_width": 16, "eps": 0.0, "steps_per_cycle": 2}, 4),
])
def test_amaranth_sim_matches_golden(kind, kw, count):
    dut = CLASSES[kind](**kw)
    p = dut.params
    vectors = []
    for x, g, b in error_vectors(p, np.random.default_rng(5), count):
        vectors.append((x, g, b if b is not None else np.zeros(p.dim, dtype=np.int64)))
    got = _amaranth_run(dut, vectors, stall=0.2, seed=2)
    expected = []
    for x, g, b in vectors:
        y = norm_golden(p, x, g, b if kind == "layernorm" else None)
        expected += [(int(v), int(k == p.dim - 1)) for k, v in enumerate(y)]
    assert got == expected


def _reset_run(kind, kw, k, junk, vec):
    """Feed ``junk`` (and gains, so the unit gets as far as its outputs), reset the unit ``k``
    cycles after its first element (the engine's ``ResetInserter``), then feed ``vec``; the
    outputs after the reset."""
    rst = Signal()
    dut = ResetInserter({"sync": rst})(CLASSES[kind](**kw))
    ln = kind == "layernorm"
    D = kw["dim"]
    got = []

    def gains(g, b):
        return {"gamma": int(g), "beta": int(b)} if ln else {"gamma": int(g)}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        j = gi = 0
        for _ in range(k):                    # the junk vector, up to the reset
            ctx.set(dut.i.valid, j < D)
            ctx.set(dut.i.payload, {"data": int(junk[0][min(j, D - 1)])})
            ctx.set(dut.g.valid, 1)
            ctx.set(dut.g.payload, gains(junk[1][gi % D], junk[2][gi % D]))
            _, _, ir, gr = await ctx.tick().sample(dut.i.ready, dut.g.ready)
            j += int(j < D and ir)
            gi += int(gr)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.g.valid, 0)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        j = gi = 0
        for _ in range(6 * D + 400):          # the vector after it
            ctx.set(dut.i.valid, j < D)
            ctx.set(dut.i.payload, {"data": int(vec[0][min(j, D - 1)])})
            ctx.set(dut.g.valid, gi < D)
            ctx.set(dut.g.payload, gains(vec[1][min(gi, D - 1)], vec[2][min(gi, D - 1)]))
            _, _, ir, gr, ov, op = await ctx.tick().sample(dut.i.ready, dut.g.ready,
                                                           dut.o.valid, dut.o.payload)
            j += int(j < D and ir)
            gi += int(gi < D and gr)
            if ov:
                got.append(int(op.data))
            if len(got) == D:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


@pytest.mark.parametrize("kind,kw", [
    ("rmsnorm", {"dim": 8, "in_width": 16, "eps": 0.5}),
    ("layernorm", {"dim": 6, "in_width": 16, "eps": 0.25}),
    ("rmsnorm", {"dim": 8, "in_width": 16, "eps": 0.5, "steps_per_cycle": 2}),
])
def test_reset_at_any_cycle_leaves_the_next_vector_exact(kind, kw):
    """The engine resets a norm unit (``ResetInserter``) that loaded a vector early which is
    then not normalised: wherever the reset falls (loading, the squares still in the DSP, the
    scalar phase, the outputs), the next vector is exact."""
    blk = CLASSES[kind](**kw)
    blk._MustUse__silence = True              # (only its parameters)
    p = blk.params
    vecs = []
    for x, g, b in error_vectors(p, np.random.default_rng(9), 2):
        vecs.append((x, g, b if b is not None else np.zeros(p.dim, dtype=np.int64)))
    junk, vec = vecs
    expected = [int(v) for v in norm_golden(p, vec[0], vec[1], vec[2] if kind == "layernorm"
                                            else None)]
    for k in range(1, p.dim + (60 if kind == "rmsnorm" else 140), 2):
        assert _reset_run(kind, kw, k, junk, vec) == expected, f"reset {k} cycles in"


# ---- cocotb on the Verilog ---------------------------------------------------------------------

# Short vectors: the next vector's scalar phase overlaps the tail of the output pipeline.
SMALL = {"rmsnorm": {"dim": 3, "in_width": 16, "eps": 0.5},
         "layernorm": {"dim": 6, "in_width": 8, "eps": 0.25, "out_frac": 3}}


def _cocotb(kind, *, count=None, testcase=None, check=True, steps=1, **extra):
    from sim.harness import run_cocotb
    block = SMALL[kind]
    env = {"HDLGEN_PARAMS": json.dumps({"kind": kind, "block": block, **extra})}
    if count is not None:
        env["HDLGEN_COUNT"] = str(count)
    return run_cocotb(CLASSES[kind](**block, steps_per_cycle=steps), "sim.benches.norm",
                      name=f"{kind}_{block['dim']}_{block['in_width']}_s{steps}",
                      testcase=testcase, env=env, check=check)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("stall", [0.0, 0.1, 0.5])
def test_cocotb_random_vectors(kind, stall):
    """3000 random vectors per block in all, 1000 per stall rate."""
    _cocotb(kind, count=1000, testcase="random_vectors", stall_in=stall, stall_out=stall)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("steps", [1, 2])
def test_cocotb_edge_cases(kind, steps):
    """Named edge cases (the extremes reach the square root's and the division's widest
    operands), with one and two of their steps per cycle."""
    _cocotb(kind, testcase=["all_equal", "extremes", "saturation", "zeros"],
            stall_in=0.1, stall_out=0.3, steps=steps)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_cocotb_scoreboard_catches_errors(kind, corrupt):
    res = _cocotb(kind, count=5, testcase="random_vectors", check=False, corrupt=corrupt)
    assert res.tests == 1 and res.failed == 1


@pytest.mark.parametrize("kind,steps,overhead", [("rmsnorm", 1, 64), ("layernorm", 1, 140),
                                                 ("rmsnorm", 2, 44), ("layernorm", 2, 108)])
def test_throughput_one_element_per_cycle(kind, steps, overhead):
    """Loading and output both stream one element per cycle: a vector takes 2 dim + a
    constant number of cycles (the scalar phase; two square-root and division steps per
    cycle take 16 cycles off it)."""
    dim, vectors = 200, 2
    dut = CLASSES[kind](dim=dim, steps_per_cycle=steps)
    done = {"outputs": 0, "cycles": 0}

    async def tb_x(ctx):
        for _ in range(vectors):
            for j in range(dim):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": j % 100 - 50})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def tb_g(ctx):
        ctx.set(dut.g.valid, 1)
        ctx.set(dut.g.payload, {"gamma": 4096, "beta": 0} if kind == "layernorm" else {"gamma": 4096})

    async def tb_out(ctx):
        ctx.set(dut.o.ready, 1)
        while done["outputs"] < vectors * dim:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            done["cycles"] += 1
            done["outputs"] += int(valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in (tb_x, tb_g, tb_out):
        sim.add_testbench(tb)
    sim.run()
    assert done["cycles"] / vectors <= 2 * dim + overhead, done
