"""cocotb bench of the engine's weight bank as the host and ``EMBED`` see it: a small synthetic
image is loaded through the engine's Wishbone port, **every** word of the weight bank is read
back, a few words are rewritten with byte enables and read back merged, then decode steps run
a program of ``EMBED`` (int8 and two-plane 16-bit tables) and a 16-bit ``MATVEC`` over their
sum, compared with the integer golden model (:mod:`sim.golden.engine`) over the whole
scratchpad.

Why: the host's weight reads take port ``b`` and ``EMBED``'s lane select when a 32-bit word
lies within one lane's slice (``macs_per_lane`` a multiple of 4 with ``macs_per_lane / 4`` a
power of two: one, two or four words per lane), port ``a`` otherwise; this bench runs for any
``lanes`` x ``macs_per_lane``.

The image (:func:`build`): ``E`` (``2 * lanes + 1`` x ``3 * K + 1`` int8), ``E2`` (the same
shape, 16-bit values stored as two int8 planes, high plane first), ``A`` (``lanes + 3`` x
``3 * K + 1`` int8, per-row requantization and int32 biases) and per-row requantization
words for the tables. Program ``main``: ``x = EMBED(E, TOKEN)``, ``x += EMBED(E2, TOKEN)``
(``accumulate``), ``y = A @ x`` (16-bit input, bias), ``HALT``.

``HDLGEN_PARAMS`` (JSON): ``lanes``, ``macs_per_lane``, ``seed``, ``outcome`` (path: each
scenario's outcome as JSON) and ``scenarios``, each with ``tokens`` (a decode step per token,
at position 0, from a zero scratchpad), optionally ``readback`` (read every weight word back,
then ``sel_writes`` byte-enabled writes, each read back and then restored) and ``corrupt``
(``"readback"``: one expected weight word is changed; ``"value"``: one expected scratchpad
element is changed; ``"missing"``: the last element the program wrote is expected unwritten;
the scenario must then fail: negative tests of the checkers, with ``expect_fail``). The first
scenario loads the image.
"""

from types import SimpleNamespace

import numpy as np

from hdlgen.compiler.image import MemoryImage, ParamAllocator, WeightAllocator, requant_word
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import Instruction, Opcode, Reg, Width, encode

__all__ = ["build", "engine_of", "run"]


def _planes(v):
    """High and low int8 planes of 16-bit values (``v == 256 * hi + lo``)."""
    lo = ((v + 128) & 255) - 128
    return (v - lo) >> 8, lo


def build(p: dict):
    """``(config, case)``: ``case.image``, ``case.program`` and ``case.layout``."""
    L, K = p.get("lanes", 4), p.get("macs_per_lane", 4)
    cfg = AcceleratorConfig(lanes=L, macs_per_lane=K)
    rng = np.random.default_rng(p.get("seed", 1))
    wa, pa = WeightAllocator(L, K), ParamAllocator()
    te, cols = 2 * L + 1, 3 * K + 1
    E = rng.integers(-128, 128, size=(te, cols))
    E2 = rng.integers(-32768, 32640, size=(te, cols))      # (hi <= 127: no carry plane)
    A = rng.integers(-128, 128, size=(L + 3, cols))
    lay = {"E": wa.add(E)}
    hi, lo = _planes(E2)
    lay["E2"] = wa.add(hi)
    wa.add(lo)                                             # right after the high plane
    lay["A"] = wa.add(A)
    lay["pE"] = pa.add([requant_word(m, s) for m, s in zip(rng.integers(1 << 13, 1 << 15, te),
                                                           rng.integers(8, 12, te))])
    lay["pE2"] = pa.add([requant_word(m, s) for m, s in zip(rng.integers(1 << 13, 1 << 15, te),
                                                            rng.integers(17, 20, te))])
    ra = A.shape[0]
    lay["pA"] = pa.add([requant_word(m, s) for m, s in zip(rng.integers(1 << 12, 1 << 15, ra),
                                                           rng.integers(22, 26, ra))])
    pa.add(rng.integers(-(1 << 20), 1 << 20, size=ra))    # biases
    x, y = 16, 16 + cols + 8
    image = MemoryImage(lanes=L, macs_per_lane=K, weights=wa.array(), params=pa.array(),
                        act_elements=y + ra + 16, kv_layers=1, kv_heads=1, head_size=8,
                        context=4)
    emb = dict(index_reg=Reg.TOKEN, dst=x, rows=te, cols=cols)
    prog = [Instruction.make(Opcode.EMBED, waddr=lay["E"], paddr=lay["pE"], w_planes=1, **emb),
            Instruction.make(Opcode.EMBED, waddr=lay["E2"], paddr=lay["pE2"], w_planes=2,
                             accumulate=1, **emb),
            Instruction.make(Opcode.MATVEC, in_width=Width.W16, out_width=Width.W16,
                             w_planes=1, bias=1, src=x, dst=y, waddr=lay["A"], rows=ra,
                             cols=cols, paddr=lay["pA"]),
            Instruction.make(Opcode.HALT)]
    lay.update(x=x, y=y, table_rows=te)
    return cfg, SimpleNamespace(image=image, program=prog, layout=lay)


def engine_of(cfg, case):
    from hdlgen.engine.core import Engine
    return Engine(cfg, case)


try:
    import cocotb
    from cocotb.triggers import FallingEdge
except ImportError:          # the helpers above are used without a simulator too
    cocotb = None

if cocotb is not None:
    from sim.benches.engine import Host, _run_step, run_recorded
    from sim.cocotb_kit import bench_params, bench_rng, start, to_signed, wishbone_access
    from sim.golden.engine import Engine as Golden
    from hdlgen.engine.core import ErrorCode

    async def _readback(dut, host, mp, img, sc, rng):
        """Every weight word read back; then byte-enabled writes, read back and restored."""
        writes = mp.image_writes([], img)
        wts = [(a, v) for a, v in writes if mp.base("weights") <= a < mp.base("params")]
        expected = [v for _, v in wts]
        if sc.get("corrupt") == "readback":
            expected[len(expected) // 2] ^= 1 << 31
        got = [await host.read(a) for a, _ in wts]
        bad = [n for n, (g, e) in enumerate(zip(got, expected)) if g != e]
        assert not bad, (f"weight readback differs at {len(bad)} of {len(wts)} words, first "
                         f"at {wts[bad[0]][0]:#x}: read {got[bad[0]]:#x}, expected "
                         f"{expected[bad[0]]:#x}")
        for _ in range(sc.get("sel_writes", 0)):
            addr, old = wts[rng.randrange(len(wts))]
            new, sel = rng.getrandbits(32), rng.randrange(1, 15)
            mask = sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1)
            await FallingEdge(dut.clk)
            _, ack = await wishbone_access(dut, addr, new, sel=sel)
            assert ack == "ack", f"write {addr:#x} answered {ack}"
            dut.bus__sel.value = 0xF
            merged = (old & ~mask) | (new & mask)
            assert (r := await host.read(addr)) == merged, \
                f"sel={sel:#x} write {new:#x} over {old:#x} at {addr:#x}: read {r:#x}"
            await host.write(addr, old)
            assert (r := await host.read(addr)) == old, f"restored {addr:#x}: read {r:#x}"
        return len(wts)

    async def _scenario(dut, host, case, mp, sc, first, rng):
        img = case.image
        words = [encode(i) for i in case.program]
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        writes = mp.image_writes(words, img)
        for addr, value in (writes if first else writes[:4 * len(words)]):
            await host.write(addr, value)
        out = {}
        if sc.get("readback"):
            out["words_read"] = await _readback(dut, host, mp, img, sc, rng)
        for token in sc.get("tokens", []):
            for e in range(img.act_elements):
                await host.write(mp.word("scratch", e), 0)
            err, code, cycles = await _run_step(dut, host, mp, token, 0, case.program)
            assert not err, f"token {token}: job failed with code {code} ({ErrorCode(code).name})"
            gold = Golden(img, case.program)
            gold.step(token, 0)
            act = np.array([to_signed(await host.read(mp.word("scratch", e)), 16)
                            for e in range(img.act_elements)], dtype=np.int64)
            expected = gold.act.copy()
            changed = np.nonzero(expected)[0]
            if sc.get("corrupt") == "value":
                expected[changed[len(changed) // 2]] += 1
            elif sc.get("corrupt") == "missing":
                expected[changed[-1]] = 0
            bad = np.nonzero(act != expected)[0]
            assert not bad.size, (f"token {token}: scratchpad differs at {bad.size} elements, "
                                  f"first at {bad[0]}: rtl {act[bad[0]]} golden "
                                  f"{expected[bad[0]]}")
            out.setdefault("changed", []).append(int(changed.size))
        return out

    @cocotb.test()
    async def scenarios(dut):
        """Every scenario of ``HDLGEN_PARAMS["scenarios"]`` on one build; a scenario with
        ``expect_fail`` must fail."""
        p = bench_params()
        cfg, case = build(p)
        mp = engine_of(cfg, case).memory_map
        rng = bench_rng("engine_weights")
        await start(dut)
        host = Host(dut)
        dut.start.value = 0

        async def one(n, sc):
            return await _scenario(dut, host, case, mp, sc, n == 0, rng)
        await run_recorded(dut, p, one)


def run(p: dict, check: bool = True):
    """Build the engine for bench parameters ``p`` and run this bench on it (Verilator); see
    :func:`sim.benches.engine.run` for why tests call it in a subprocess
    (``python -m sim.benches.engine_weights JSON``)."""
    from sim.benches.engine import run_bench
    cfg, case = build(p)
    return run_bench("sim.benches.engine_weights", engine_of(cfg, case), p, check)


if __name__ == "__main__":
    from sim.benches.engine import main
    main(run)
