"""``hdlgen bench model``: cycles of one decode step on the RTL accelerator, per-unit busy
shares and MAC-array utilization.

The model is compiled for the board device's default configuration (or the overrides), the
accelerator SoC with its engine runs under Verilator (``--target sim``, the default; or a
board with ``--target serial --port P``), and one decode step is timed at each position of
``--positions`` (default 1, 64 and 255, capped at the context's last position). The cycles
of a step depend on its position (attention covers positions ``0..pos``), not on the KV
cache's contents, so each position is run directly.

Figures per position:

* ``cycles``: the engine's ``CYCLES`` register for the step;
* ``units``: each unit's busy cycles (the control block's ``BUSY_<UNIT>`` counters) as a share
  of the step's cycles (units overlap, so shares need not sum to 1);
* ``useful_macs``: the model's multiply-accumulates in the step (matrix-vector products
  ``rows x cols``, attention scores and weighted sums ``heads x (pos + 1) x head_size``,
  counted from the integer golden model's trace of the same program; a 16-bit weight matrix
  run as two int8 planes counts once);
* ``mac_utilization`` = useful MACs / (cycles x MACs in the array).

``--json`` prints one object::

    {"config": {...}, "fmax_mhz": X, "fmax_source": "...", "positions": {"1": {"cycles": N,
     "mac_utilization": X, "units": {...}, "useful_macs": N}, ...}, "tokens_per_s_at_64": X}

(``tokens_per_s_at_<p>`` for the middle position when 64 is beyond the context).
"""

import json
import time

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "useful_macs"]

HELP = "cycles per decode step, unit shares and MAC utilization of a model on the RTL engine"


def add_arguments(parser) -> None:
    from hdlgen.build import add_target_arguments
    parser.add_argument("--model", required=True,
                        help="llama2.c .bin, hdlgen .npz, the built-in stories260K, random:llama or "
                             "random:gpt2")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random model")
    parser.add_argument("--context", type=int, default=None,
                        help="KV-cache positions (default: the config's, capped at seq_len)")
    parser.add_argument("--positions", default="1,64,255",
                        help="positions to time (capped at the context's last one)")
    parser.add_argument("--target", choices=("sim", "serial"), default="sim")
    parser.add_argument("--port", default=None, help="serial port of the board (serial target)")
    add_target_arguments(parser, freq=False)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def useful_macs(compiled, pos: int) -> int:
    """Multiply-accumulates of the model in one decode step at ``pos`` (see the module
    docstring), from the golden model's trace."""
    from hdlgen.engine.isa import Opcode
    from sim.golden.engine import Engine

    total = [0]

    def trace(pc, layer, ins, values):
        f = dict(ins.fields)
        if ins.op == Opcode.MATVEC:
            total[0] += f["rows"] * f["cols"]
        elif ins.op in (Opcode.SCORES, Opcode.SCORES_SOFTMAX, Opcode.ATTV):
            total[0] += f["n_heads"] * (pos + 1) * f["head_size"]

    eng = Engine(compiled.image, compiled.words, mac="reference", trace=trace)
    eng.reset()
    eng.step(1, pos)
    return total[0]


def _positions(text: str, ctx: int) -> list:
    try:
        req = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--positions {text!r}: expected comma-separated integers") from None
    if not req or any(p < 0 for p in req):
        raise UserError(f"--positions {text!r}: give non-negative positions such as 1,64,255")
    out = []
    for p in req:
        q = min(p, ctx - 1)
        if q not in out:
            out.append(q)
    return out


def run(args) -> int:
    from hdlgen.build import resolve_target
    from hdlgen.compiler import CompileOptions, compile_model
    from hdlgen.host.accelerator import open_accelerator
    from hdlgen.model import load_model
    from hdlgen.run import fmax_for

    if args.target == "serial" and not args.port:
        raise UserError("--target serial needs --port (e.g. /dev/ttyUSB0)")
    _, bdev, config = resolve_target(args, model=True)
    model = load_model(args.model, seed=args.seed)
    comp = compile_model(model, config, CompileOptions(context=args.context,
                                                       device=bdev.device.name))
    ctx = comp.image.context
    positions = _positions(args.positions, ctx)
    t0 = time.time()
    fmax, src = fmax_for(config, bdev.device.name, model.name)
    res = {}
    with open_accelerator(args.target, config, comp, port=args.port,
                          load=args.target == "serial") as acc:
        acc.clear_scratch()
        for p in positions:
            st = acc.step(1, p)
            macs = useful_macs(comp, p)
            res[str(p)] = {
                "cycles": st.cycles,
                "mac_utilization": round(macs / (st.cycles * config.macs), 4),
                "useful_macs": macs,
                "units": {u: round(v / st.cycles, 4) for u, v in st.units.items()},
                "tokens_per_s": round(fmax * 1e6 / st.cycles, 2),
            }
    mid = "64" if "64" in res else str(positions[len(positions) // 2])
    out = {"model": model.name, "target": args.target,
           "config": {"device": bdev.device.name, "lanes": config.lanes,
                      "macs_per_lane": config.macs_per_lane, "macs": config.macs,
                      "acc_width": config.acc_width, "context": ctx,
                      "sys_clk_mhz": config.sys_clk_mhz},
           "fmax_mhz": fmax, "fmax_source": src, "positions": res,
           f"tokens_per_s_at_{mid}": res[mid]["tokens_per_s"],
           "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"model {model.name}: {config.lanes} x {config.macs_per_lane} MAC array on "
          f"{bdev.device.name}, context {ctx}, fmax {fmax} MHz ({src})")
    for p, r in res.items():
        busiest = sorted(r["units"].items(), key=lambda kv: -kv[1])[:4]
        print(f"pos {p:>4}: {r['cycles']:>8} cycles, MAC utilization {r['mac_utilization']:.1%}, "
              f"{r['tokens_per_s']} tokens/s; busiest: " +
              ", ".join(f"{u} {v:.0%}" for u, v in busiest))
    return 0
