"""``hdlgen bench matvec``: matrix-vector products on the matrix-vector unit (the SoC a build
without ``--model`` makes): cycles, MAC-array utilization and throughput, each product checked
against NumPy.

The SoC with the unit, for the board device's configuration, runs under Verilator (``--target
sim``, the default) or on a board (``--target serial --port P``, with that build's
``regmap.json``). For each shape ``RxC`` of ``--shapes`` a random int8 matrix is loaded and
multiplied by a random int8 vector. Figures per shape:

* ``cycles``: the job's ``JOB_CYCLES`` (start to done, the range check included);
* ``feed_cycles``: ``BUSY_MAC_ARRAY``, the cycles the unit fed the array (one weight row each);
* ``mac_utilization`` = ``R * C`` / (``cycles`` x MACs in the array);
* ``gmac_per_s`` = ``R * C`` / ``cycles`` x fmax;
* ``mismatches``: results that differ from NumPy's ``W @ x`` (0 expected).

``fmax`` is that of the newest ``build/*/report.json`` of a build with the unit for the same
configuration and device, or the target clock (``fmax_source`` says which). ``--json`` prints
one object: ``{"config": {...}, "fmax_mhz": X, "fmax_source": "...", "shapes": {"RxC":
{...}}}``.
"""

from __future__ import annotations

import json
import time

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "fmax_of_unit_build"]

HELP = "cycles, MAC utilization and GMAC/s of matrix-vector products on the matrix-vector unit"


def add_arguments(parser) -> None:
    from hdlgen.build import add_target_arguments
    parser.add_argument("--shapes", default="16x64,64x256,256x256",
                        help="comma-separated ROWSxCOLS (default: 16x64,64x256,256x256)")
    parser.add_argument("--target", choices=("sim", "serial"), default="sim")
    parser.add_argument("--port", default=None, help="serial port of the board (serial target)")
    parser.add_argument("--regmap", default=None,
                        help="the build's regmap.json (serial target; default "
                             "build/<board>-<device>/regmap.json)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random matrices")
    add_target_arguments(parser, freq=False)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _shapes(text: str) -> list:
    out = []
    for part in text.split(","):
        try:
            r, c = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise UserError(f"--shapes {text!r}: expected ROWSxCOLS pairs such as 64x256") from None
        if r < 1 or c < 1:
            raise UserError(f"--shapes: {part!r} must have positive rows and columns")
        out.append((r, c))
    return out


def fmax_of_unit_build(config, device: str) -> tuple:
    """``(fmax_mhz, source)`` of the newest build report under ``build/`` of the SoC with the
    matrix-vector unit for ``config`` on ``device``; else the target clock."""
    from hdlgen.run import build_reports
    want = {k: getattr(config, k) for k in ("lanes", "macs_per_lane", "sys_clk_mhz")}
    for p, rep in build_reports():
        cfg = rep.get("config") or {}
        if rep.get("unit") == "matvec" and rep.get("fmax_mhz") and \
                rep.get("device") in (device, f"LFE5U-{device}") and \
                all(cfg.get(k) == v for k, v in want.items()):
            return float(rep["fmax_mhz"]), f"build report {p}"
    return float(config.sys_clk_mhz), ("target clock (no build report of this config: "
                                       "python -m hdlgen build)")


def run(args) -> int:
    import numpy as np

    from hdlgen.build import resolve_target
    from hdlgen.host import Device
    from hdlgen.host.matvec import MatVec
    from hdlgen.soc.matvec import MatVecDesign

    board, bdev, config = resolve_target(args)
    shapes = _shapes(args.shapes)
    design = MatVecDesign(config)
    if args.target == "serial":
        if not args.port:
            raise UserError("--target serial needs --port (e.g. /dev/ttyUSB0)")
        from hdlgen.host import SerialTransport
        regmap = args.regmap or f"build/{board.name}-{bdev.device.name}/regmap.json"
        transport = SerialTransport(args.port, config.uart_baud)
    else:
        from hdlgen.host import SimTransport
        regmap = design.register_map
        transport = SimTransport(soc=design.soc(byte_port=True), regmap=regmap, seed=args.seed)
    fmax, src = fmax_of_unit_build(config, bdev.device.name)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    res = {}
    with transport:
        dev = Device(transport, regmap=regmap)
        mv = MatVec(dev)
        for rows, cols in shapes:
            W = rng.integers(-128, 128, (rows, cols))
            x = rng.integers(-128, 128, cols)
            A = mv.load(W)
            y = mv.run(A, x, timeout=60.0)
            cycles = mv.last_cycles
            macs = rows * cols
            res[f"{rows}x{cols}"] = {
                "cycles": cycles,
                "feed_cycles": dev.read_reg("BUSY_MAC_ARRAY"),
                "weight_rows": A.out_blocks * A.in_blocks,
                "mac_utilization": round(macs / (cycles * config.macs), 4),
                "gmac_per_s": round(macs / cycles * fmax / 1e3, 3),
                "mismatches": int(np.count_nonzero(y != W @ x)),
            }
    out = {"target": args.target,
           "config": {"device": bdev.device.name, "lanes": config.lanes,
                      "macs_per_lane": config.macs_per_lane, "macs": config.macs,
                      "weight_rows": mv.weight_rows, "sys_clk_mhz": config.sys_clk_mhz},
           "fmax_mhz": fmax, "fmax_source": src, "shapes": res,
           "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"matrix-vector unit: {config.lanes} x {config.macs_per_lane} MAC array on "
              f"{bdev.device.name}, fmax {fmax} MHz ({src})")
        for shape, r in res.items():
            print(f"{shape:>10}: {r['cycles']:>7} cycles ({r['feed_cycles']} feeding the array), "
                  f"MAC utilization {r['mac_utilization']:.1%}, {r['gmac_per_s']} GMAC/s, "
                  f"{r['mismatches']} mismatches")
    return 0 if all(r["mismatches"] == 0 for r in res.values()) else 1
