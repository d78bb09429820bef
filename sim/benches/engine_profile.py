"""Cycles of each instruction of one decode step on the RTL engine.

``python -m sim.benches.engine_profile [--pos P] [--model SPEC] [--json]`` builds the engine of
:mod:`sim.benches.engine` for a model (default: the stories260K-shaped random LLaMA of
``hdlgen bench blocks``'s engine entry, 16 x 8 MACs, context 256) and runs one step at position
``P`` once per prefix of the program: the program cut after ``n`` instructions (inside the layer
loop or at its end, the loop runs once; see :func:`sim.benches.engine.program_of`) for every
``n`` up to the end of the loop body, then the whole program. The difference of consecutive prefixes is the
cost of one instruction in the first layer, including its share of pipeline fill and drain and
the sequencer's fetch, decode and range checks. The whole step's cycles close the table. All
runs share one Verilator build and the KV cache (the bench keeps its rows between scenarios, as
the golden model does).
"""

import argparse
import json
import os
import sys
import tempfile

from sim.benches.engine import build

__all__ = ["profile"]

#: The engine entry's model of ``hdlgen bench blocks`` (stories260K's shapes).
STORIES_SHAPED = {"spec": "random:llama", "seed": 7, "context": 256, "lanes": 16,
                  "macs_per_lane": 8,
                  "over": {"dim": 64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                           "n_kv_heads": 4, "vocab_size": 512, "seq_len": 512}}


def profile(p: dict, pos: int) -> dict:
    """``{"rows": [(index, instruction text, cycles)], "step_cycles": N}`` for bench
    parameters ``p`` (module docstring)."""
    from sim.benches import engine
    from hdlgen.engine.isa import Opcode
    _, comp = build(p)
    prog = comp.program
    loop = next((n for n, ins in enumerate(prog) if ins.op == Opcode.LOOP), None)
    last = loop + prog[loop].body if loop is not None else len(prog) - 1
    cuts = list(range(1, last + 2))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "outcome.json")
        q = dict(p, outcome=out,
                 scenarios=[{"steps": [[3, pos]], "stop_after": n} for n in cuts] +
                           [{"steps": [[3, pos]]}])
        res = engine.run(q, check=False)
        with open(out) as f:
            outcomes = json.load(f)
    if res.failed or not all(o["passed"] for o in outcomes):
        bad = [o.get("message") for o in outcomes if not o["passed"]]
        raise AssertionError(f"engine bench failed (seed {res.seed}): {bad[:1]}")
    cycles = [o["steps"][0]["cycles"] for o in outcomes]
    rows, prev = [], 0
    for n, c in zip(cuts, cycles):
        rows.append((n - 1, str(prog[n - 1]), c - prev))
        prev = c
    return {"pos": pos, "rows": rows, "step_cycles": cycles[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.benches.engine_profile",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--pos", type=int, default=64, help="position of the step (default 64)")
    ap.add_argument("--params", default=None,
                    help="bench parameters as JSON (sim.benches.engine; default: the "
                         "stories260K-shaped random LLaMA)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    p = json.loads(args.params) if args.params else STORIES_SHAPED
    r = profile(p, args.pos)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"cycles per instruction, first layer, position {args.pos}")
    for n, text, c in r["rows"]:
        print(f"{n:4d} {c:7d}  {text[:100]}")
    print(f"whole step: {r['step_cycles']} cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
