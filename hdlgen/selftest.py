"""``hdlgen selftest``: run the device self-test (``firmware/selftest.py``) on the simulated
SoC or on a board, optionally corrupting, truncating or dropping frames on the wire.

::

    python -m hdlgen selftest --target sim --frames 10000 --corrupt-rate 0.05 --json
    python -m hdlgen selftest --target serial --port /dev/ttyUSB0 --regmap build/regmap.json

With ``--json`` it prints one object: ``{"registers": "pass", "memory_bytes": N,
"memory_errors": 0, "frames": N, "corrupted": K, "undetected": 0, "recovered": K, ...}``.
The exit status is 0 when every check held (no register problem, no memory error, no
undetected corruption, every corrupted frame recovered), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from hdlgen.errors import UserError

__all__ = ["HELP", "add_arguments", "run", "load_program"]

HELP = "check registers, memory and link robustness of a device (simulated or on a board)"

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = REPO_ROOT / "firmware" / "selftest.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=("sim", "serial"), default="sim",
                        help="simulated SoC (Verilator) or a board on a serial port")
    parser.add_argument("--port", help="serial port of the board (--target serial)")
    parser.add_argument("--baud", type=int, default=None,
                        help="serial baud (default: the configuration's uart_baud)")
    parser.add_argument("--regmap", default=None,
                        help="the build's regmap.json (--target serial; default "
                             "firmware/regmap.json)")
    parser.add_argument("--frames", type=int, default=1000,
                        help="random transactions sent while faulting the link (default 1000)")
    parser.add_argument("--corrupt-rate", type=float, default=0.05,
                        help="fraction of frames corrupted/truncated/dropped (default 0.05)")
    parser.add_argument("--memory-bytes", type=int, default=None,
                        help="bytes of scratch memory to round-trip (default 65536; 4096 with "
                             "--bit-level, where every byte takes ten simulated bit periods)")
    parser.add_argument("--seed", type=int, default=1, help="rng seed (data and faults)")
    parser.add_argument("--bit-level", action="store_true",
                        help="sim: go through the UART pins instead of the byte port (slow)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def load_program():
    """Import ``firmware/selftest.py`` (the self-test written against the host API)."""
    if not PROGRAM.exists():
        raise UserError(f"{PROGRAM} is missing: the self-test program lives in the source "
                        f"tree's firmware/ directory (use an editable install)")
    spec = importlib.util.spec_from_file_location("hdlgen_firmware_selftest", PROGRAM)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _transport(args, config):
    if args.target == "sim":
        from hdlgen.host.sim import SimTransport
        if args.bit_level:
            from hdlgen.soc.uart import uart_divisor
            if uart_divisor(config.sys_clk_hz, config.uart_baud) > 16:
                # Simulating 42 cycles per bit is correct but slow; keep the baud, lower the
                # simulated clock to 8 cycles per bit.
                config = config.replace(sys_clk_mhz=config.uart_baud * 8 / 1e6)
        return SimTransport(config, bit_level=args.bit_level), None
    if not args.port:
        raise UserError("--target serial needs --port (e.g. /dev/ttyUSB0)")
    from hdlgen.host.transport import SerialTransport
    regmap = args.regmap or str(REPO_ROOT / "firmware" / "regmap.json")
    return SerialTransport(args.port, args.baud or config.uart_baud), regmap


def run(args, config=None) -> int:
    """Run the self-test as the CLI asked; returns the exit status."""
    from hdlgen.config import AcceleratorConfig
    from hdlgen.host import Device, FaultyTransport

    if args.frames < 0:
        raise UserError(f"--frames {args.frames} must be >= 0")
    if not 0 <= args.corrupt_rate <= 1:
        raise UserError(f"--corrupt-rate {args.corrupt_rate} must be between 0 and 1")
    if args.memory_bytes is None:
        args.memory_bytes = 4096 if args.bit_level and args.target == "sim" else 64 * 1024
    if args.memory_bytes % 4 or args.memory_bytes < 0:
        raise UserError(f"--memory-bytes {args.memory_bytes} must be a non-negative multiple of 4")
    config = config or AcceleratorConfig()
    program = load_program()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))

    t0 = time.monotonic()
    say(f"selftest: starting the {args.target} target ...")
    inner, regmap = _transport(args, config)
    faulty = FaultyTransport(inner, args.corrupt_rate, seed=args.seed)
    faulty.enabled = False
    try:
        dev = Device(faulty, regmap=regmap or inner.regmap, seed=args.seed)
        say(f"selftest: connected in {time.monotonic() - t0:.1f} s; running "
            f"{args.frames} frames at corrupt rate {args.corrupt_rate}")
        report = program.selftest(dev, faulty=faulty, memory_bytes=args.memory_bytes,
                                  frames=args.frames, seed=args.seed,
                                  progress=lambda i, n: say(f"  {i}/{n} frames"))
    finally:
        faulty.close()
    report["target"] = args.target
    report["elapsed_s"]["total"] = round(time.monotonic() - t0, 2)
    if args.json:
        print(json.dumps(report))
    else:
        keys = ["registers", "memory_bytes", "memory_errors", "frames", "corrupted", "undetected",
                "recovered", "failed_transactions", "retries"]
        for k in keys:
            print(f"{k:>20}  {report[k]}")
        for p in report.get("register_problems", []):
            print(f"{'problem':>20}  {p}")
        print(f"{'result':>20}  {'PASS' if report['passed'] else 'FAIL'} "
              f"({report['elapsed_s']['total']} s)")
    return 0 if report["passed"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hdlgen selftest", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
