"""``hdlgen run``: compile a model and run decode steps on a target.

The prompt (token ids, or a text with ``--tokenizer``) is processed position by position, then
``--steps`` tokens are generated greedily. Targets:

``golden``
    The integer golden model (:mod:`sim.golden.engine`): the accelerator's exact output.
``sim``
    The accelerator SoC (bridge, control block, engine generated for this model with the
    weights preloaded) under Verilator, driven over the host protocol's bytes exactly as a
    board (:class:`hdlgen.host.sim.SimTransport`); ``--load`` also loads the program and
    weights over the link first (the run-time load path a board uses).
``serial``
    A board built with ``python -m hdlgen build --model M`` (same config), over its USB-UART
    (``--port``); the host loads the program, weights and parameters first (``--no-load``
    skips that when the board runs the bitstream's preloaded model).

``--check`` runs the integer golden model alongside the target and counts the steps whose
next token differs (``golden_mismatches``); on the golden target it compares with the float
reference instead (``float_mismatches``: the int8 scheme's disagreements, not an error).
``--json`` prints one object::

    {"tokens": [...], "predictions": [...], "golden_mismatches": 0, "cycles_per_token": [...],
     "fmax_mhz": X, "fmax_source": "...", "tokens_per_s": X, ...}

``cycles_per_token`` and ``tokens_per_s`` need the RTL engine's cycle counts: ``null`` on the
golden target. The accelerator configuration (MAC array shape, clock, ...) is the board
device's default (``--board``, ``--device`` and the overrides of ``build``), so ``run`` and
``build`` agree on it.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "parse_tokens", "fmax_for"]

HELP = "compile a model and generate tokens on a target (golden model, simulation, board)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True,
                        help="llama2.c .bin, hdlgen .npz, the built-in stories260K, random:llama or "
                             "random:gpt2")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random model")
    parser.add_argument("--prompt-tokens", default="1",
                        help="comma-separated prompt token ids (default: 1, BOS)")
    parser.add_argument("--prompt", default=None,
                        help="prompt text (needs --tokenizer; replaces --prompt-tokens)")
    parser.add_argument("--steps", type=int, default=16, help="tokens to generate")
    parser.add_argument("--target", choices=("golden", "sim", "serial"), default="golden")
    parser.add_argument("--port", default=None, help="serial port of the board (serial target)")
    parser.add_argument("--load", dest="load", action="store_true", default=None,
                        help="load program, weights and parameters over the link (default on "
                             "serial, off on sim whose SoC has them preloaded)")
    parser.add_argument("--no-load", dest="load", action="store_false",
                        help="use the contents the device already has")
    parser.add_argument("--context", type=int, default=None,
                        help="KV-cache positions (default: the config's, capped at seq_len)")
    from hdlgen.build import add_target_arguments
    add_target_arguments(parser, freq=False)
    parser.add_argument("--tokenizer", default=None, help="llama2.c tokenizer .bin to print text")
    parser.add_argument("--check", action="store_true",
                        help="run the integer golden model alongside and compare every step")
    parser.add_argument("--emit", default=None, metavar="DIR",
                        help="also write the program, memory image and manifest to DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_tokens(text: str, vocab: int) -> list:
    """Token ids from ``"1,2,3"``; :class:`UserError` on anything else."""
    try:
        toks = [int(t) for t in str(text).replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise UserError(f"--prompt-tokens {text!r}: expected comma-separated integers such as "
                        f"1,2,3") from None
    if not toks:
        raise UserError("the prompt is empty; give at least one token id (BOS is 1)")
    bad = [t for t in toks if not 0 <= t < vocab]
    if bad:
        raise UserError(f"prompt token {bad[0]} is outside the model's vocabulary 0..{vocab - 1}")
    return toks


def build_reports():
    """``(path, report)`` of every readable ``build/*/report.json``, newest first."""
    reports = sorted(Path("build").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(reports):
        try:
            yield p, json.loads(p.read_text())
        except (OSError, ValueError):
            continue


def fmax_for(config, device: str | None = None, model: str | None = None) -> tuple:
    """``(fmax_mhz, source)``: the fmax of the newest build report under ``build/`` of the SoC
    with an engine (``build --model``) for this configuration (MAC array shape, context, clock)
    and device, preferring a build of ``model``; else the config's target clock. A build
    without an engine says nothing about the engine's timing and is not used. ``source`` says
    which."""
    want = {k: getattr(config, k) for k in ("lanes", "macs_per_lane", "context_length",
                                            "sys_clk_mhz")}
    other_model = None
    for p, rep in build_reports():
        cfg = rep.get("config") or {}
        if not rep.get("fmax_mhz") or not rep.get("model") or \
                any(cfg.get(k) != v for k, v in want.items()):
            continue
        if device is not None and rep.get("device") not in (device, f"LFE5U-{device}"):
            continue
        if model is not None and rep.get("model") == model:
            return float(rep["fmax_mhz"]), f"build report {p} (this model)"
        if other_model is None:
            other_model = (float(rep["fmax_mhz"]),
                           f"build report {p} (same config, model {rep['model']})")
    if other_model is not None:
        return other_model
    return float(config.sys_clk_mhz), ("target clock (no build report of this config with "
                                       "an engine: python -m hdlgen build --model M)")


def run(args) -> int:
    from hdlgen.build import resolve_target
    from hdlgen.compiler import CompileOptions, compile_model
    from hdlgen.model import Tokenizer, load_model
    from sim.float_ref import FloatModel
    from sim.golden.engine import Engine

    if args.steps < 0:
        raise UserError(f"--steps {args.steps} must be >= 0")
    if args.target == "serial" and not args.port:
        raise UserError("--target serial needs --port (e.g. /dev/ttyUSB0)")
    _, bdev, config = resolve_target(args, model=True)
    model = load_model(args.model, seed=args.seed)
    c = model.config
    tok = Tokenizer.read(args.tokenizer, c.vocab_size) if args.tokenizer else None
    if args.prompt is not None:
        if tok is None:
            raise UserError("--prompt needs --tokenizer to encode the text; or give "
                            "--prompt-tokens")
        prompt = tok.encode(args.prompt, bos=True)
    else:
        prompt = parse_tokens(args.prompt_tokens, c.vocab_size)
    t0 = time.time()
    comp = compile_model(model, config, CompileOptions(context=args.context, device=bdev.device.name))
    ctx = comp.image.context
    if args.emit:
        comp.save(args.emit)
    need = len(prompt) + max(args.steps - 1, 0)
    if need > ctx:
        raise UserError(f"{len(prompt)} prompt tokens + {args.steps} generated need {need} "
                        f"positions but the context is {ctx}: generate at most "
                        f"{ctx - len(prompt) + 1} tokens or raise --context")
    golden = Engine(comp.image, comp.words, acc_width=config.acc_width, mac="reference")
    out = {"model": model.name, "target": args.target, "prompt": prompt}
    if args.target == "golden":
        preds, tokens, results = golden.run(prompt, args.steps)
        cycles, mismatches, units = None, None, None
    else:
        preds, tokens, cycles, mismatches, units = _run_rtl(args, config, comp, golden, prompt)
    out.update({"tokens": tokens, "predictions": preds})
    if args.target == "golden" and args.check:
        # the golden target is the golden model: compare with the float reference instead
        fm = FloatModel(model, context=ctx).generate(prompt, args.steps)
        out["golden_mismatches"] = 0
        out["float_mismatches"] = int(sum(a != b for a, b in zip(fm.predictions, preds)) +
                                      sum(a != b for a, b in zip(fm.tokens, tokens)))
        out["float_tokens"] = fm.tokens
    else:
        out["golden_mismatches"] = mismatches
    fmax, src = fmax_for(config, bdev.device.name, model.name)
    tps = None
    if cycles:
        mean = sum(cycles) / len(cycles)
        tps = round(fmax * 1e6 / mean, 2)
    out.update({"cycles_per_token": cycles, "fmax_mhz": fmax, "fmax_source": src,
                "tokens_per_s": tps, "config": {"lanes": config.lanes,
                                                "macs_per_lane": config.macs_per_lane,
                                                "device": bdev.device.name, "context": ctx},
                "unit_busy_cycles": units,
                "instructions_per_token": len(comp.program),
                "elapsed_s": round(time.time() - t0, 3), "memory": comp.manifest["fit"]})
    if tok is not None:
        seq = prompt + tokens
        out["text"] = tok.decode(seq[1:] if seq[0] == 1 else seq, prev_token=1)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"model {model.name} on target {args.target} (context {ctx})")
        print(f"prompt      {prompt}")
        print(f"predictions {preds}")
        print(f"tokens      {tokens}")
        if tok is not None:
            print(f"text        {out['text']!r}")
        if args.target == "golden" and args.check:
            print(f"float reference tokens {out['float_tokens']} "
                  f"({out['float_mismatches']} differences)")
        if mismatches is not None:
            print(f"golden mismatches {mismatches}")
        if cycles:
            print(f"cycles per token {cycles[0]} .. {cycles[-1]}; {tps} tokens/s at {fmax} MHz "
                  f"({src})")
        else:
            print(f"fmax {fmax} MHz ({src}); cycles per token: only on the sim/serial targets")
    sys.stdout.flush()
    return 1 if mismatches else 0


def _run_rtl(args, config, comp, golden, prompt):
    """Prompt and generation on the simulated SoC or a board; with ``--check`` every step is
    compared with ``golden`` (next token, largest logit, and the logits when the program
    outputs them). Returns ``(predictions, tokens, cycles, mismatches, unit cycles)``."""
    from hdlgen.host.accelerator import open_accelerator

    load = args.load if args.load is not None else args.target == "serial"
    preds, tokens, cycles, mismatches = [], [], [], 0
    units = {}
    golden.reset()
    with open_accelerator(args.target, config, comp, port=args.port, load=load) as acc:
        acc.clear_scratch()
        pos = 0
        seq = list(prompt)
        nxt = None
        for n in range(len(prompt) + max(args.steps - 1, 0)):
            token = seq[n] if n < len(prompt) else nxt
            if n >= len(prompt):
                tokens.append(token)
            st = acc.step(token, pos)
            cycles.append(st.cycles)
            for u, v in st.units.items():
                units[u] = units.get(u, 0) + v
            if args.check:
                r = golden.step(token, pos)
                bad = (st.token, st.value) != (r.token, r.value)
                if not bad and r.logits is not None:
                    bad = not np.array_equal(acc.logits(), np.asarray(r.logits))
                mismatches += int(bad)
            if n < len(prompt):
                preds.append(st.token)
            nxt = st.token
            pos += 1
        if args.steps and len(tokens) < args.steps:
            tokens.append(nxt)
    return preds, tokens, cycles, (mismatches if args.check else None), units
