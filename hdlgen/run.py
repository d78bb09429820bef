"""``hdlgen run``: compile a model and run decode steps on a target.

The prompt (token ids, or a text with ``--tokenizer``) is processed position by position, then
``--steps`` tokens are generated greedily. Targets:

``golden``
    The integer golden model (:mod:`sim.golden.engine`): the accelerator's exact output.
``sim`` / ``serial``
    The RTL engine in simulation / on a board over the UART bridge (need the RTL engine).

``--check`` runs the integer golden model alongside the target and counts the steps whose
next token differs (``golden_mismatches``); on the golden target it compares with the float
reference instead (``float_mismatches``: the int8 scheme's disagreements, not an error).
``--json`` prints one object::

    {"tokens": [...], "predictions": [...], "golden_mismatches": 0, "cycles_per_token": [...],
     "fmax_mhz": X, "fmax_source": "...", "tokens_per_s": X, ...}

``cycles_per_token`` and ``tokens_per_s`` need the RTL engine's cycle counts: ``null`` on the
golden target.
"""

import json
import sys
import time
from pathlib import Path

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "parse_tokens", "fmax_for"]

HELP = "compile a model and generate tokens on a target (golden model, simulation, board)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True,
                        help="llama2.c .bin, hdlgen .npz, random:llama or random:gpt2")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random model")
    parser.add_argument("--prompt-tokens", default="1",
                        help="comma-separated prompt token ids (default: 1, BOS)")
    parser.add_argument("--prompt", default=None,
                        help="prompt text (needs --tokenizer; replaces --prompt-tokens)")
    parser.add_argument("--steps", type=int, default=16, help="tokens to generate")
    parser.add_argument("--target", choices=("golden", "sim", "serial"), default="golden")
    parser.add_argument("--port", default=None, help="serial port of the board (serial target)")
    parser.add_argument("--context", type=int, default=None,
                        help="KV-cache positions (default: the config's, capped at seq_len)")
    parser.add_argument("--device", default="85F", help="ECP5 device for the fit check")
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


def fmax_for(config) -> tuple:
    """``(fmax_mhz, source)``: the newest build report's fmax when one exists under build/,
    else the config's target clock."""
    reports = sorted(Path("build").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(reports):
        try:
            rep = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if rep.get("fmax_mhz"):
            return float(rep["fmax_mhz"]), f"build report {p}"
    return float(config.sys_clk_mhz), "target clock (no build report)"


def run(args) -> int:
    from hdlgen.compiler import CompileOptions, compile_model
    from hdlgen.config import AcceleratorConfig
    from hdlgen.model import Tokenizer, load_model
    from sim.float_ref import FloatModel
    from sim.golden.engine import Engine

    if args.steps < 0:
        raise UserError(f"--steps {args.steps} must be >= 0")
    if args.target in ("sim", "serial"):
        raise UserError(f"--target {args.target} needs the RTL transformer engine, which is not "
                        f"built yet; use --target golden (the integer golden model) for now")
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
    config = AcceleratorConfig()
    t0 = time.time()
    comp = compile_model(model, config, CompileOptions(context=args.context, device=args.device))
    ctx = comp.image.context
    if args.emit:
        comp.save(args.emit)
    need = len(prompt) + max(args.steps - 1, 0)
    if need > ctx:
        raise UserError(f"{len(prompt)} prompt tokens + {args.steps} generated need {need} "
                        f"positions but the context is {ctx}: generate at most "
                        f"{ctx - len(prompt) + 1} tokens or raise --context")
    engine = Engine(comp.image, comp.words, acc_width=config.acc_width)
    preds, tokens, results = engine.run(prompt, args.steps)
    out = {"model": model.name, "target": args.target, "prompt": prompt,
           "tokens": tokens, "predictions": preds}
    if args.check:
        # the golden target is the golden model: compare with the float reference instead
        fm = FloatModel(model, context=ctx).generate(prompt, args.steps)
        out["golden_mismatches"] = 0
        out["float_mismatches"] = int(sum(a != b for a, b in zip(fm.predictions, preds)) +
                                      sum(a != b for a, b in zip(fm.tokens, tokens)))
        out["float_tokens"] = fm.tokens
    else:
        out["golden_mismatches"] = None
    fmax, src = fmax_for(config)
    out.update({"cycles_per_token": None, "fmax_mhz": fmax, "fmax_source": src,
                "tokens_per_s": None, "instructions_per_token": results[0].instructions
                if results else 0, "elapsed_s": round(time.time() - t0, 3),
                "memory": comp.manifest["fit"]})
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
        if args.check:
            print(f"float reference tokens {out['float_tokens']} "
                  f"({out['float_mismatches']} differences)")
        print(f"fmax {fmax} MHz ({src}); cycles per token: RTL engine not built")
    sys.stdout.flush()
    return 0
