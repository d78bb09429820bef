"""``hdlgen bench accuracy``: the integer accelerator's next-token agreement with the float
model.

Teacher-forced over the float reference's greedy sequence from BOS (``--positions`` tokens):
at each position the integer golden model (:mod:`sim.golden.engine`, the accelerator's exact
output) and the float reference (:mod:`sim.float_ref`) read the same token; the command
reports the fraction of positions whose top-1 next tokens agree and the mean KL divergence
``KL(P_float || P_int)`` of the next-token distributions (the integer logits dequantized with
their scale), with the memory the compiled image needs. The MAC array runs as its model's
exact reference (``Engine(mac="reference")``, identical results; ``--mac beats`` feeds every
beat through the array model instead, ~5x slower). With ``--json`` one object::

    {"model": ..., "positions": 256, "top1_agreement": X, "mean_kl": X, "max_kl": X,
     "mismatches": [...], "scheme": {...}, "memory": {...}, "fits": true, "seconds": X}

``--weight16 wq,wk`` runs those matrices as 16-bit weights (two int8 planes, two MAC
passes); ``--act8 q,att_out`` narrows activations of the default scheme to 8 bits;
``--plain`` turns off the compiler's free accuracy measures (per-channel smoothing of the norm
outputs and of the KV cache, GPTQ rounding; see :class:`hdlgen.compiler.CompileOptions`).

Measured on stories260K (teacher-forced, 256 positions, ECP5-85F at context 256, 16 x 8 MAC
array; ``python -m hdlgen bench accuracy --model ../shared/models/stories260K.bin
--positions 256 [...]``; KL in nats):

================================================ ======= ======= ===== ==============
options                                          top-1   mean KL EBR   weight bytes
================================================ ======= ======= ===== ==============
``--plain``                                      0.824   0.098   204   263,168
(default: smoothing, KV smoothing, GPTQ)         0.852   0.065   204   263,168
``--weight16 token_embedding,wq,wk``             0.867   0.052   204   326,656
================================================ ======= ======= ===== ==============

Over 512 positions (``--positions 512 --no-fit``): plain 0.832 / 0.086; smoothing 0.846 /
0.066; + GPTQ 0.861 / 0.061; + 16-bit embedding, wq, wk 0.869 / 0.047; + KV smoothing 0.877 /
0.046. What limits it: the norm blocks' int8 outputs (fake quantization: 16-bit norm outputs
alone take int8-weight agreement from 0.836 to about 0.88-0.91) and int8 weights (16-bit
weights with 16-bit activations everywhere: 0.984, but twice the weight memory, which the
85F's block RAM does not hold at context 256).
"""

import json
import time

import numpy as np

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "GoldenLogits", "measure"]

HELP = "teacher-forced top-1 agreement and KL of the integer golden model vs the float model"


class GoldenLogits:
    """``logits_sequence(tokens)`` of a compiled model on the integer golden model, dequantized
    (for :func:`hdlgen.model.accuracy.teacher_forced`)."""

    def __init__(self, compiled, mac: str = "beats"):
        from sim.golden.engine import Engine
        self.compiled = compiled
        self.engine = Engine(compiled.image, compiled.words, acc_width=compiled.config.acc_width,
                             mac=mac)

    def logits_sequence(self, tokens) -> np.ndarray:
        self.engine.reset()
        rows = []
        for pos, t in enumerate(tokens):
            r = self.engine.step(int(t), pos)
            if r.logits is None:
                raise UserError("the program does not output logits (compile with logits_out)")
            rows.append(r.logits * self.compiled.logit_scale)
        return np.stack(rows)


def measure(model, positions: int, options=None, config=None, mac: str = "reference") -> dict:
    """Compile ``model`` and measure its agreement over ``positions`` teacher-forced tokens."""
    from hdlgen.compiler import CompileOptions, compile_model
    from hdlgen.model.accuracy import reference_sequence, teacher_forced
    from sim.float_ref import FloatModel
    options = options or CompileOptions()
    t0 = time.time()
    seq = reference_sequence(model, positions)
    from dataclasses import replace
    comp = compile_model(model, config, replace(options, context=max(positions, options.context
                                                                     or 0) or None))
    agree = teacher_forced(FloatModel(model, context=len(seq)), GoldenLogits(comp, mac), seq)
    fit = comp.manifest["fit"]
    total = sum(fit["ebr"].values())
    return {"model": model.name, "positions": positions, **agree.to_json(),
            "scheme": comp.manifest["scheme"], "memory": fit, "ebr_total": total,
            "fits": fit.get("ebr_available") is None or total <= fit["ebr_available"],
            "seconds": round(time.time() - t0, 1)}


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True,
                        help="llama2.c .bin, hdlgen .npz, random:llama or random:gpt2")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random model")
    parser.add_argument("--positions", type=int, default=256,
                        help="teacher-forced positions (default 256, at most seq_len)")
    parser.add_argument("--weight16", default="",
                        help="comma-separated weight matrices to run as 16-bit (two int8 planes)")
    parser.add_argument("--act8", default="",
                        help="comma-separated activations (q, att_out, ffn_up, ffn_hidden) to "
                             "narrow to 8 bits")
    parser.add_argument("--smooth", type=float, default=0.75, metavar="ALPHA",
                        help="alpha of the per-channel norm-output scales folded into the "
                             "weights (0..1, default 0.75)")
    parser.add_argument("--untie", action="store_true",
                        help="a separate classifier copy so the final norm is smoothed too")
    parser.add_argument("--plain", action="store_true",
                        help="the plain per-row int8 scheme: no smoothing of norm outputs or "
                             "KV cache, weights rounded to nearest")
    parser.add_argument("--act-headroom", type=float, default=2.0, metavar="H",
                        help="factor (>= 1) on the calibrated range of the 16-bit activations "
                             "other than residual and logits (default 2)")
    parser.add_argument("--norm16", action="store_true",
                        help="int16 norm outputs into 16-bit matrix inputs (image extension "
                             "norm_out_bits: golden model only, the RTL needs a change)")
    parser.add_argument("--kv9", action="store_true",
                        help="int9 KV cache (extension kv_bits: golden model only)")
    parser.add_argument("--weight-width", type=int, choices=(8, 9), default=8,
                        help="native width of every weight (9: extension weight_bits, golden "
                             "model only; a 9-bit weight bank)")
    parser.add_argument("--weight-exp", action="store_true",
                        help="int8 weights with a shift bit per lane and bank row (extension "
                             "weight_exp: golden model only)")
    parser.add_argument("--device", default="85F", help="ECP5 device for the fit check")
    parser.add_argument("--no-fit", action="store_true",
                        help="measure even when the image does not fit the device")
    parser.add_argument("--mac", choices=("reference", "beats"), default="reference",
                        help="MAC-array model: its exact reference (fast) or beat by beat")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from hdlgen.compiler import CompileOptions
    from hdlgen.model import load_model
    model = load_model(args.model, seed=args.seed)
    if not 1 <= args.positions <= model.config.seq_len:
        raise UserError(f"--positions {args.positions} must be 1..{model.config.seq_len} "
                        f"(the model's seq_len)")
    w16 = {k: 16 for k in args.weight16.split(",") if k}
    a8 = {k: 8 for k in args.act8.split(",") if k}
    opts = CompileOptions(device=args.device, weight_bits=w16, act_bits=a8, fit=not args.no_fit,
                          smooth=None if args.plain else args.smooth,
                          smooth_kv=not args.plain, untie=args.untie, gptq=not args.plain,
                          act_headroom=args.act_headroom, norm_bits=16 if args.norm16 else 8,
                          kv_bits=9 if args.kv9 else 8, weight_width=args.weight_width,
                          weight_exp=args.weight_exp)
    res = measure(model, args.positions, opts, mac=args.mac)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"model {res['model']}: teacher-forced over {res['positions']} positions")
        print(f"  top-1 agreement {res['top1_agreement']:.4f}   mean KL {res['mean_kl']:.4f} "
              f"nats   max KL {res['max_kl']:.3f}")
        print(f"  memory {res['ebr_total']} EBR {res['memory']['ebr']}")
        print(f"  weight planes {res['scheme']['weight_planes']}")
        print(f"  {res['seconds']} s")
    return 0
