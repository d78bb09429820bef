"""cocotb bench of the engine's ``MATMAT`` (prefill tile) instruction: hand-assembled programs
on a small synthetic memory image, run on :class:`hdlgen.engine.core.Engine` and compared with
the integer golden model (:mod:`sim.golden.engine`) over the **whole scratchpad**.

The image (:func:`build`) holds three int8 matrices with random requantization parameters and
int32 biases: ``A`` (``2 * lanes + 3`` x ``16 * K + 3``: rows not a multiple of ``lanes``,
columns not a multiple of ``macs_per_lane``, a tile buffer of 17 words, in block RAM), ``B``
(``lanes`` x ``4 * K``) and ``C`` (two layers of ``lanes + 1`` x ``2 * K - 1`` at a fixed
stride, run by a ``LOOP`` with ``layer_rel``). ``HDLGEN_PARAMS["shape_a"]`` (``[rows,
cols]``) overrides ``A``'s shape. The scratchpad holds random int8 input tiles for each
matrix; everything else starts at zero.

With ``HDLGEN_PARAMS["model"]`` (parameters of :func:`sim.benches.engine.build`) and
``"prefill"`` (``[tokens, ...]``) the case is instead a compiled random model with prefill
buffers (:func:`hdlgen.compiler.prefill.with_prefill`) and one program, ``prefill``: the
prompt chunk at positions ``0 ..``, starting from a zero scratchpad and an empty KV cache.

Programs (:func:`programs`): ``main`` (tiles of 1, 3 and ``lanes`` tokens, both output widths,
with and without bias, a ``MATVEC`` between tiles, a tile that reuses the loaded tile buffer,
one that overwrites its own input and one that must then reload it, a layer-relative tile in a
two-layer ``LOOP``), ``tile`` (one ``lanes``-token tile of ``A``) and ``vecs`` (the same
products as ``lanes`` ``MATVEC``: cycle comparison), ``wide16`` (a ``MATVEC`` of token 0's
input of ``A`` as a 16-bit operand) and ``wide`` (``wide16``'s ``MATVEC``, then the same input
as an 8-bit operand, which the vector buffer already holds), ``elt`` (an ``ELTWISE`` sum of
token 0's and token 1's inputs of ``A``), ``chain16`` and ``chain8`` (``elt``, then a ``MATVEC``
of its result as a 16-bit and as an 8-bit operand, which the vector buffer holds: the
``ELTWISE`` wrote it there too); ``side_a`` and ``side_b`` (a ``MATVEC`` of ``A``, then an
``ELTWISE`` sum with its results as operand ``a`` or ``b``, which the vector buffer's side region
holds), ``side_hazard`` (``side_a`` with an ``ELTWISE`` between that overwrites four of those
results, so the side region's copy is stale and must not be used), ``side_mv`` and ``side_elt``
(each instruction alone; the ``ELTWISE`` loads). ``main`` ends with such a sum too, so the
engine has a side region, then an RMSNorm of its result (the image holds gains for ``A``'s
rows: a norm unit of that length) and the argmax of the norm's output. The norm and argmax
units load a one-row run of their length as it is written: ``norm_hit`` (``side_mv``, then a
``NORM`` of its results), ``norm_miss`` (``side_mv``, then a ``NORM`` of another region),
``norm_alone`` (a ``NORM`` that loads), ``norm_other`` (an ``ELTWISE`` of the same length
between them, which the unit loaded instead), ``norm_hazard`` (one that overwrites four of the
results) and ``norm_after`` (``norm_hit`` after such an ``ELTWISE``: the unit is reset just
after loading it, its squares still in the DSP, then loads the ``MATVEC``'s results);
``am_hit``, ``am_miss``, ``am_alone``, ``am_other`` and ``am_hazard`` are the same cases for
``ARGMAX``. A ``MATVEC`` of the input the vector buffer holds starts while the one before it
drains: ``mv_one`` (a ``MATVEC`` of ``A`` alone), ``mv_pair`` (then another of the same input,
other width, no bias), ``mv_three`` (then a third, as a 16-bit operand), ``mv_acc`` (the second
accumulates into the first's results), ``mv_hazard`` (the first's last result lands on the
buffered input, so the second must reload it), ``mv_norm_b`` / ``mv_norm_a`` and ``mv_am_b`` /
``mv_am_a`` (``mv_pair``, then a ``NORM`` or ``ARGMAX`` of the second's results, which the
unit loaded as they were written, or of the first's, which it must read again). Every scenario's result registers (``RESULT``, ``RESULT_VALUE``: the
last argmax) are compared with the golden model's too.

``HDLGEN_PARAMS`` (JSON): ``lanes``, ``macs_per_lane``, ``seed`` (image contents),
``shape_a``, ``outcome`` (path: each scenario's result and cycles as JSON) and ``scenarios``,
each with ``program`` (a name above), optionally ``poke`` (``[[address, value], ...]``:
scratchpad elements set before the job, after the inputs), ``patch`` (``[n, {field: value},
code]``: the job must end with error ``code`` and the golden model must refuse the program
too, with the same code where it names one: ``golden_code`` in the outcome), ``expect``
(``code``: the same without a patch) and
``corrupt`` (``"value"``: one expected scratchpad element is changed, ``"missing"``: the
scratchpad is compared one element short of what the program wrote and the last output
element is expected to be what the program did not write; the scenario must then fail:
negative tests of the checker, with ``expect_fail``).
"""

from types import SimpleNamespace

import numpy as np

from hdlgen.compiler.image import MemoryImage, ParamAllocator, WeightAllocator, requant_word
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import EltOp, Instruction, NormKind, Opcode, Reg, Width, encode

__all__ = ["build", "programs", "engine_of", "run"]

ACT_ELEMENTS_MIN = 768


def build(p: dict):
    """``(config, case)``: ``case.image`` (:class:`MemoryImage`), ``case.program`` (the main
    program, which sizes the engine), ``case.programs`` (every program by name),
    ``case.inputs`` (``{address: int8 values}``) and ``case.layout`` (named matrices and
    buffers)."""
    if "model" in p:
        return _build_model(p)
    L, K = p.get("lanes", 8), p.get("macs_per_lane", 4)
    cfg = AcceleratorConfig(lanes=L, macs_per_lane=K)
    rng = np.random.default_rng(p.get("seed", 1))
    ra, ca = p.get("shape_a", [2 * L + 3, 16 * K + 3])
    shapes = {"A": (ra, ca), "B": (L, 4 * K), "C0": (L + 1, 2 * K - 1), "C1": (L + 1, 2 * K - 1)}
    wa, pa = WeightAllocator(L, K), ParamAllocator()
    lay = {}
    for name, (rows, cols) in shapes.items():
        w = rng.integers(-128, 128, size=(rows, cols))
        waddr = wa.add(w)
        mult = rng.integers(1 << 12, 1 << 15, size=rows)
        shift = rng.integers(14, 19, size=rows)
        paddr = pa.add([requant_word(a, b) for a, b in zip(mult, shift)])
        pa.add(rng.integers(-(1 << 16), 1 << 16, size=rows))           # biases
        lay[name] = {"rows": rows, "cols": cols, "waddr": waddr, "paddr": paddr}
    # an RMSNorm over A's rows: gains, then the epsilon words (eps = 1 LSB**2)
    lay["N"] = {"paddr": pa.add(rng.integers(-(1 << 12), 1 << 12, size=ra))}
    pa.add([ra * 256, 0])
    # scratchpad: input tiles, then room for the outputs
    at = 0
    inputs = {}
    for name in ("A", "B", "C0"):
        n = L * shapes[name][1]
        inputs[at] = rng.integers(-128, 128, size=n)
        lay[f"x{name[0]}"] = at
        at += n
    lay["out"] = at
    act = max(ACT_ELEMENTS_MIN, at + 3 * L * ra + 8 * L * L + 256)
    image = MemoryImage(lanes=L, macs_per_lane=K, weights=wa.array(), params=pa.array(),
                        act_elements=act, kv_layers=1, kv_heads=1, head_size=8, context=4)
    progs = programs(L, lay)
    case = SimpleNamespace(image=image, program=progs["main"], programs=progs, inputs=inputs,
                           layout=lay)
    return cfg, case


def _build_model(p: dict):
    from hdlgen.compiler.prefill import prefill_program, with_prefill
    from sim.benches.engine import build as build_model
    cfg, comp = build_model(p["model"])
    tokens = list(p["prefill"])
    pc = with_prefill(comp, len(tokens))
    progs = {"prefill": prefill_program(pc, tokens, 0)}
    case = SimpleNamespace(image=pc.image, program=pc.program, manifest=pc.manifest,
                           programs=progs, inputs={}, layout=pc.buffers)
    return cfg, case


def programs(L: int, lay: dict) -> dict:
    """The bench's programs by name (see the module docstring)."""
    A, B, C = lay["A"], lay["B"], lay["C0"]
    xa, xb, xc = lay["xA"], lay["xB"], lay["xC"]
    out = [lay["out"]]

    def buf(n):
        out[0] += n
        return out[0] - n

    def mm(mat, tokens, src, w16, bias, dst=None, rel=0):
        return Instruction.make(Opcode.MATMAT, out_width=Width.W16 if w16 else Width.W8,
                                layer_rel=rel, bias=bias, tokens=tokens, src=src,
                                dst=buf(tokens * mat["rows"]) if dst is None else dst,
                                waddr=mat["waddr"], rows=mat["rows"], cols=mat["cols"],
                                paddr=mat["paddr"])

    def mv(mat, src, dst, w16, bias, x16=0, acc=0):
        return Instruction.make(Opcode.MATVEC, in_width=Width.W16 if x16 else Width.W8,
                                out_width=Width.W16 if w16 else Width.W8, w_planes=1, bias=bias,
                                accumulate=acc, src=src, dst=dst, waddr=mat["waddr"],
                                rows=mat["rows"], cols=mat["cols"], paddr=mat["paddr"])

    def add(a, b, dst, n):
        return Instruction.make(Opcode.ELTWISE, eop=EltOp.ADD, width=Width.W16, a=a, b=b,
                                dst=dst, len=n, paddr=A["paddr"])

    def norm(src, dst):
        return Instruction.make(Opcode.NORM, kind=NormKind.RMSNORM, gamma_frac=9, beta_frac=0,
                                out_frac=0, src=src, dst=dst, len=A["rows"],
                                paddr=lay["N"]["paddr"])

    halt = Instruction.make(Opcode.HALT)
    ra = A["rows"]
    mv_out = buf(ra)
    main = [
        mm(A, L, xa, 0, 1),                                  # full tile, int8 out, bias
        mv(A, xa, mv_out, 1, 1),                             # MATVEC between tiles
        mm(A, 1, xa, 1, 0),                                  # one token (reloads the tile)
        mm(B, 3, xb, 1, 1),                                  # 3 tokens
        mm(B, 3, xb, 0, 0),                                  # the same tile: no reload
        mm(B, 3, xb, 0, 1, dst=xb),                          # overwrites its own input ...
        mm(B, 3, xb, 1, 0),                                  # ... so this one reloads it
        mm(B, L, xb, 1, 1),
        add(mv_out, xa, buf(ra), ra),                        # the MATVEC's results: side region
        norm(out[0] - ra, buf(ra)),                          # ... and the norm unit's load
        Instruction.make(Opcode.ARGMAX, src=out[0] - ra, len=ra),  # ... the argmax unit's
        Instruction.make(Opcode.LOOP, count=2, body=1,
                         wstride=lay["C1"]["waddr"] - C["waddr"],
                         pstride=lay["C1"]["paddr"] - C["paddr"]),
        mm(C, L, xc, 1, 1, rel=1),                           # layer-relative weights/params
        halt,
    ]
    tile = [mm(A, L, xa, 0, 1, dst=lay["out"]), halt]
    vecs = [mv(A, xa + t * A["cols"], lay["out"] + t * A["rows"], 0, 1) for t in range(L)]
    # token 0's input as a 16-bit operand, then (the vector buffer holds it already) as 8-bit
    wide16 = [mv(A, xa, lay["out"], 1, 1, x16=1), halt]
    wide = [wide16[0], mv(A, xa, lay["out"] + A["rows"], 1, 1), halt]
    # an ELTWISE sum chained into the vector buffer, then a MATVEC of it as a 16-bit and as an
    # 8-bit operand (no load: the buffer holds it)
    ca = A["cols"]
    elt = Instruction.make(Opcode.ELTWISE, eop=EltOp.ADD, width=Width.W16, a=xa, b=xa + ca,
                           dst=lay["out"], len=ca, paddr=A["paddr"])
    chain16 = [elt, mv(A, lay["out"], lay["out"] + ca, 1, 1, x16=1), halt]
    chain8 = [elt, mv(A, lay["out"], lay["out"] + ca, 1, 1), halt]
    # a MATVEC's results in the vector buffer's side region: an ELTWISE reading them as a or
    # as b skips its load, unless a write touched them since
    o1, o2 = lay["out"], lay["out"] + ra
    side_mv = mv(A, xa, o1, 1, 1)
    side_elt = add(o1, xa, o2, ra)
    side = {"side_mv": [side_mv, halt], "side_elt": [side_elt, halt],
            "side_a": [side_mv, side_elt, halt], "side_b": [side_mv, add(xa, o1, o2, ra), halt],
            "side_hazard": [side_mv, add(xb, xb, o1 + 5, 4), side_elt, halt]}
    # the norm unit loads a one-row run of its length as it is written: a NORM of it right
    # after skips its load, unless another run (of its length, or into it) came between
    o3 = o2 + ra
    nrm = {"norm_hit": [side_mv, norm(o1, o2), halt], "norm_alone": [norm(xa, o2), halt],
           "norm_other": [side_mv, add(xb, xb, o3, ra), norm(o1, o2), halt],
           "norm_hazard": [side_mv, add(xb, xb, o1 + 5, 4), norm(o1, o2), halt],
           "norm_after": [add(xb, xb, o3, ra), side_mv, norm(o1, o2), halt],
           "norm_miss": [side_mv, norm(xa, o2), halt]}
    # the same for the argmax unit (runs of the longest ARGMAX's length)

    def amax(src):
        return Instruction.make(Opcode.ARGMAX, src=src, len=ra)
    nrm.update({"am_hit": [side_mv, amax(o1), halt], "am_miss": [side_mv, amax(xa), halt],
                "am_alone": [amax(xa), halt],
                "am_other": [side_mv, add(xb, xb, o3, ra), amax(o1), halt],
                "am_hazard": [side_mv, add(xb, xb, o1 + 5, 4), amax(o1), halt]})
    # a MATVEC that reuses the vector buffer follows one that still drains (MV_CHAIN)
    o4 = o3 + ra
    mv_a, mv_b = mv(A, xa, o1, 1, 1), mv(A, xa, o2, 0, 0)
    # a later token's input (the first at or after ra - 1); A's last result lands on it, so
    # the buffered copy is stale then
    x1 = xa + ca * max(1, -(-(ra - 1) // ca))
    hz = mv(A, x1, x1 - ra + 1, 1, 1)
    chn = {"mv_one": [mv_a, halt], "mv_pair": [mv_a, mv_b, halt],
           "mv_three": [mv_a, mv_b, mv(A, xa, o3, 1, 1, x16=1), halt],
           "mv_acc": [mv_a, mv(A, xa, o1, 1, 0, acc=1), halt],
           "mv_hazard": [hz, mv(A, x1, o2, 1, 0, x16=1), halt],
           "mv_norm_b": [mv_a, mv_b, norm(o2, o4), halt],
           "mv_norm_a": [mv_a, mv_b, norm(o1, o4), halt],
           "mv_am_b": [mv_a, mv_b, amax(o2), halt], "mv_am_a": [mv_a, mv_b, amax(o1), halt]}
    return {"main": main, "tile": tile, "vecs": vecs + [halt], "wide16": wide16, "wide": wide,
            "elt": [elt, halt], "chain16": chain16, "chain8": chain8, **side, **nrm, **chn}


def engine_of(cfg, case):
    """The engine under test: generated for the main program (its longest ``MATMAT`` sizes
    the tile buffer), program memory for the longest program."""
    from hdlgen.engine.core import Engine
    return Engine(cfg, case, program_words=max(len(q) for q in case.programs.values()) + 1)


try:
    import cocotb
    from cocotb.triggers import FallingEdge
except ImportError:          # the helpers above are used without a simulator too
    cocotb = None

if cocotb is not None:
    from sim.benches.engine import Host, _run_step, run_recorded
    from sim.cocotb_kit import bench_params, start, to_signed
    from sim.golden.engine import Engine as Golden, EngineError
    from hdlgen.engine.core import ErrorCode

    async def _scenario(dut, host, case, mp, sc, first):
        img = case.image
        prog = list(case.programs[sc["program"]])
        words = [encode(i) for i in prog]
        expect_code = sc.get("expect")
        if "patch" in sc:
            n, fields, expect_code = sc["patch"]
            words[n] = encode(Instruction.make(prog[n].op, **{**dict(prog[n].fields), **fields}))
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        writes = mp.image_writes(words, img)
        for addr, value in (writes if first else writes[:4 * len(words)]):
            await host.write(addr, value)
        act0 = np.zeros(img.act_elements, dtype=np.int64)
        for a, x in case.inputs.items():
            act0[a:a + len(x)] = x
        for a, x in sc.get("poke", []):
            act0[a] = x
        for e in range(img.act_elements):
            await host.write(mp.word("scratch", e), int(act0[e]) & 0xFFFF)
        err, code, cycles = await _run_step(dut, host, mp, 0, 0, prog)
        if expect_code is not None:
            assert err and code == ErrorCode[expect_code].value, \
                f"expected error {expect_code}, got error={err} code={code}"
            gold = Golden(img, words)
            gold.act[:] = act0
            try:
                gold.step(0, 0)
            except EngineError as e:
                dut._log.info(f"bad program refused with code {code}; golden: {e}")
                assert e.code in (None, expect_code), \
                    f"the golden model refused with {e.code}, the RTL with {expect_code}: {e}"
                return {"cycles": cycles, "golden_code": e.code}
            raise AssertionError("the golden model ran the bad program")
        assert not err, f"job failed with code {code} ({ErrorCode(code).name})"
        gold = Golden(img, prog)
        gold.act[:] = act0
        gold.step(0, 0)
        act = np.array([to_signed(await host.read(mp.word("scratch", e)), 16)
                        for e in range(img.act_elements)], dtype=np.int64)
        expected = gold.act.copy()
        changed = np.nonzero(expected != act0)[0]
        if sc.get("corrupt") == "value":
            expected[changed[len(changed) // 2]] += 1
        elif sc.get("corrupt") == "missing":
            expected[changed[-1]] = act0[changed[-1]]
        bad = np.nonzero(act != expected)[0]
        assert not bad.size, (f"scratchpad differs at {bad.size} elements, first at {bad[0]}: "
                              f"rtl {act[bad[0]]} golden {expected[bad[0]]}")
        rtl = (int(dut.result.value), to_signed(int(dut.result_value.value), 32))
        golden = (int(gold.regs[Reg.RESULT]), int(gold.regs[Reg.RESULT_VALUE]))
        assert rtl == golden, f"argmax result (index, value): rtl {rtl} golden {golden}"
        dut._log.info(f"program {sc['program']}: {cycles} cycles, {len(changed)} elements "
                      f"changed")
        return {"cycles": cycles, "changed": int(len(changed))}

    @cocotb.test()
    async def scenarios(dut):
        """Every scenario of ``HDLGEN_PARAMS["scenarios"]`` on one build; a scenario with
        ``expect_fail`` must fail."""
        p = bench_params()
        cfg, case = build(p)
        mp = engine_of(cfg, case).memory_map
        await start(dut)
        host = Host(dut)
        dut.start.value = 0
        async def one(n, sc):
            return await _scenario(dut, host, case, mp, sc, n == 0)
        await run_recorded(dut, p, one)


def run(p: dict, check: bool = True):
    """Build the engine for bench parameters ``p`` and run this bench on it (Verilator); see
    :func:`sim.benches.engine.run` for why tests call it in a subprocess
    (``python -m sim.benches.engine_matmat JSON``)."""
    from sim.benches.engine import run_bench
    cfg, case = build(p)
    return run_bench("sim.benches.engine_matmat", engine_of(cfg, case), p, check)


if __name__ == "__main__":
    from sim.benches.engine import main
    main(run)
