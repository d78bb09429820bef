"""``hdlgen bench blocks``: every compute block synthesized and placed out of context.

Every module of :mod:`hdlgen.blocks` that defines ``bench_configs()`` contributes
:class:`hdlgen.bench.registry.BlockBench` entries, and
:func:`hdlgen.bench.registry.system_benches` the designs composed of blocks (``engine``: the
transformer engine for a stories260K-shaped model). System entries take 30-60 minutes of place
and route each, so they run only when asked: ``--only engine`` measures the engine alone,
``--systems`` adds every system entry after the blocks. Without either, only the blocks run::

    python -m hdlgen bench blocks --device 85F --json              # blocks only
    python -m hdlgen bench blocks --device 85F --json --systems    # blocks, then the engine
    python -m hdlgen bench blocks --device 85F --json --only engine

This command imports them all, implements
each entry alone on the chosen ECP5 (:func:`hdlgen.flow.ooc_implement`: Yosys, then nextpnr
on a wrapper that feeds the block from a scan chain), evaluates its numerics against the
float reference when it has an error bound, and prints a table, or with ``--json`` one JSON
object::

    {"device": "85F",
     "blocks": [{"name": "mac_array", "params": {...}, "lut": N, "ff": N, "dsp": N,
                 "ebr": N, "fmax_mhz": X,
                 "error": {"metric": "max_abs", "value": X, "bound": X}}, ...]}

``error`` is omitted for blocks that are exact against their integer definition. Entries
that fail (a tool error, an exception while building) are left out of ``blocks`` and listed
in ``"failed": [{"name":..., "params":..., "message":...}]`` (present only when non-empty);
the command then exits with status 1. ``--check`` also exits with 1 when a block misses its
clock target or its error bound.
"""

import importlib
import json
import pkgutil
import sys
import time
from dataclasses import dataclass, field

from hdlgen.bench.registry import BlockBench, system_benches
from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "discover", "measure"]

HELP = "synthesize and place every compute block out of context; resources, fmax, numerics"

_DEVICES = ("12F", "25F", "45F", "85F")


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="85F", choices=_DEVICES,
                        help="ECP5 device (LFE5U-<device>, speed 6, CABGA381); default 85F")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the table")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="only these blocks (names as in the table, e.g. mac_array softmax); "
                             "naming a system entry (engine) selects it")
    parser.add_argument("--systems", action="store_true",
                        help="also measure the system entries (engine: 30-60 min of place and "
                             "route) after the blocks; without it they run only when --only "
                             "names them")
    parser.add_argument("--freq", type=float, default=None, metavar="MHZ",
                        help="clock constraint for nextpnr (default: each block's target, 150)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="keep each block's netlists and logs under DIR/<name>-<n>")
    parser.add_argument("--list", action="store_true",
                        help="list the entries that would be measured and exit")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a block misses its fmax target or error bound")


@dataclass
class _Discovered:
    entries: list          # [(module name, BlockBench)] of hdlgen.blocks
    failures: list         # [{"name", "params", "message"}]
    systems: list = field(default_factory=list)   # [(module name, BlockBench)], after the blocks


def discover() -> _Discovered:
    """Import every module of :mod:`hdlgen.blocks` and collect its ``bench_configs()``.

    A module that fails to import or whose ``bench_configs()`` raises is reported as a
    failure (named after the module) instead of stopping the others.
    """
    import hdlgen.blocks as pkg
    entries, failures = [], []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        modname = f"{pkg.__name__}.{info.name}"
        try:
            module = importlib.import_module(modname)
            configs = getattr(module, "bench_configs", None)
            if configs is None:
                continue
            found = list(configs())
        except Exception as e:     # another block's bug must not hide the rest
            failures.append({"name": info.name, "params": {},
                             "message": f"{modname}: {type(e).__name__}: {e}"})
            continue
        for entry in found:
            if not isinstance(entry, BlockBench):
                failures.append({"name": info.name, "params": {},
                                 "message": f"{modname}.bench_configs() returned {entry!r}, "
                                            f"not a BlockBench"})
                continue
            entries.append((modname, entry))
    systems = [(system_benches.__module__, e) for e in system_benches()]
    return _Discovered(entries, failures, systems)


def _implement():
    from hdlgen import flow
    return flow.ooc_implement


def measure(entry: BlockBench, *, device: str, freq_mhz: float | None = None, seed: int = 1,
            out_dir=None, implement=None) -> dict:
    """Implement one entry and evaluate its numerics; returns its row of the JSON report."""
    implement = implement or _implement()
    component = entry.build()
    kwargs = {"device": device, "freq_mhz": freq_mhz or entry.target_mhz, "seed": seed}
    if out_dir is not None:
        kwargs["out_dir"] = out_dir
    if entry.timeout_s is not None:
        kwargs["timeout_s"] = entry.timeout_s
    rep = implement(component, **kwargs)
    row = {"name": entry.name, "params": dict(entry.params),
           "lut": int(rep.lut), "ff": int(rep.ff), "dsp": int(rep.dsp), "ebr": int(rep.ebr),
           "fmax_mhz": None if rep.fmax_mhz is None else round(float(rep.fmax_mhz), 2)}
    if entry.error is not None:
        err = entry.error()
        row["error"] = {"metric": str(err["metric"]), "value": float(err["value"]),
                        "bound": float(err["bound"])}
    return row


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _table(device: str, rows: list, targets: list, failures: list) -> str:
    head = ("block", "params", "LUT4", "FF", "DSP", "EBR", "fmax MHz", "numerics")
    lines = []
    for row, target in zip(rows, targets):
        fmax = row["fmax_mhz"]
        fm = "-" if fmax is None else f"{fmax:.1f}" + ("" if fmax >= target else f" (<{target:g})")
        if "error" in row:
            e = row["error"]
            ok = "ok" if e["value"] <= e["bound"] else "OVER"
            num = f"{e['metric']} {e['value']:.4g} <= {e['bound']:g} {ok}"
        else:
            num = "exact"
        lines.append((row["name"], _fmt_params(row["params"]), str(row["lut"]), str(row["ff"]),
                      str(row["dsp"]), str(row["ebr"]), fm, num))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = [f"out-of-context on LFE5U-{device}, speed 6"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    for f in failures:
        out.append(f"FAILED {f['name']} {_fmt_params(f['params'])}: {f['message']}")
    return "\n".join(out)


def run(args, *, implement=None) -> int:
    found = discover()
    entries = found.entries + found.systems
    failures = list(found.failures)
    if not args.only and not getattr(args, "systems", False):
        system_ids = {id(e) for _, e in found.systems}
        entries = [(m, e) for m, e in entries if id(e) not in system_ids]
    if args.only:
        known = sorted({e.name for _, e in entries} | {f["name"] for f in failures})
        unknown = [n for n in args.only if n not in known]
        if unknown:
            raise UserError(f"unknown block {', '.join(map(repr, unknown))} for --only: "
                            f"known blocks are {', '.join(known) or '(none)'}")
        entries = [(m, e) for m, e in entries if e.name in args.only]
        failures = [f for f in failures if f["name"] in args.only]
    if args.list:
        for modname, e in entries:
            print(f"{e.name:<12} {_fmt_params(e.params)}  ({modname}, target {e.target_mhz:g} MHz)")
        return 0
    rows, targets = [], []
    for n, (modname, entry) in enumerate(entries, 1):
        label = f"{entry.name} {_fmt_params(entry.params)}"
        print(f"[{n}/{len(entries)}] {label}", file=sys.stderr, flush=True)
        start = time.monotonic()
        out_dir = None
        if args.out:
            from pathlib import Path
            out_dir = Path(args.out) / f"{entry.name}-{n}"
        try:
            row = measure(entry, device=args.device, freq_mhz=args.freq, seed=args.seed,
                          out_dir=out_dir, implement=implement)
        except UserError:
            raise
        except Exception as e:
            failures.append({"name": entry.name, "params": dict(entry.params),
                             "message": f"{type(e).__name__}: {e}"})
            print(f"      failed after {time.monotonic() - start:.0f} s: {e}", file=sys.stderr)
            continue
        rows.append(row)
        targets.append(args.freq or entry.target_mhz)
        print(f"      {time.monotonic() - start:.0f} s: {row['lut']} LUT4, {row['dsp']} DSP, "
              f"fmax {row['fmax_mhz']} MHz", file=sys.stderr, flush=True)
    if args.json:
        report = {"device": args.device, "blocks": rows}
        if failures:
            report["failed"] = failures
        print(json.dumps(report))
    else:
        print(_table(args.device, rows, targets, failures))
    if failures:
        return 1
    if args.check:
        for row, target in zip(rows, targets):
            if row["fmax_mhz"] is None or row["fmax_mhz"] < target:
                return 1
            if "error" in row and row["error"]["value"] > row["error"]["bound"]:
                return 1
    return 0
