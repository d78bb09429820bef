"""Command line: ``python -m hdlgen <command>``.

Commands whose implementation lives in another module are registered in ``_COMMANDS``: the
module defines ``add_arguments(parser)`` and ``run(args) -> int`` (and ``HELP``, one line).
Mistakes in what the user asked for raise :class:`hdlgen.errors.UserError`; they are printed as
one line and exit with status 2, never with a traceback.
"""

import argparse
import importlib
import importlib.util
import sys

from hdlgen.errors import UserError

__all__ = ["main"]

EXAMPLES = """\
examples:
  python -m hdlgen build --board ulx3s                    # ULX3S-85F bitstream + report.json
  python -m hdlgen build --board ulx3s --device 12F --freq 100 --out build/small
  python -m hdlgen verilog -o soc.v                       # Verilog of the whole SoC
  python -m hdlgen verilog --block mac_array --param lanes=4 --param macs_per_lane=4
  python -m hdlgen report build/ulx3s-85F                 # show a build's report again
  python -m hdlgen bench blocks --device 85F --json       # per-block LUT/FF/DSP/EBR/fmax
  python -m hdlgen bench matvec --json                    # products on the matrix-vector unit
  python -m hdlgen selftest --target sim --frames 10000 --corrupt-rate 0.05
  python -m hdlgen build --board ulx3s --model stories260K   # built-in model, weights in EBR
  python -m hdlgen run --model random:llama --seed 7 --steps 8 --target sim --check --json
  python -m hdlgen run --model stories260K --target serial --port /dev/ttyUSB0 --steps 32
  python -m hdlgen bench model --model stories260K --json       # cycles, unit shares, MAC use
  python -m hdlgen bench accuracy --model stories260K --positions 256 --json
"""

# (command, module, sub-verbs or None). A command is offered when its module exists.
_COMMANDS = [
    ("build", "hdlgen.build", None),
    ("verilog", "hdlgen.verilog", None),
    ("report", "hdlgen.build", None),
    ("bench", None, [("blocks", "hdlgen.bench.blocks"), ("model", "hdlgen.bench.model"),
                     ("accuracy", "hdlgen.bench.accuracy"), ("matvec", "hdlgen.bench.matvec")]),
    ("selftest", "hdlgen.selftest", None),
    ("run", "hdlgen.run", None),
]


class _Parser(argparse.ArgumentParser):
    """Prints argument errors as one line (no usage dump) and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _add_command(subparsers, name, module_name, help_text=None):
    module = importlib.import_module(module_name)
    run = getattr(module, f"run_{name}", None) or module.run
    adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    doc = getattr(module, f"HELP_{name.upper()}", None) or getattr(module, "HELP", None) or help_text
    p = subparsers.add_parser(name, help=doc, description=doc, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    adder(p)
    p.set_defaults(_run=run, _parser=p)
    return p


def make_parser() -> argparse.ArgumentParser:
    from hdlgen import __version__
    parser = _Parser(prog="hdlgen", description="Generator of int8 LLM inference accelerators "
                     "for low-cost ECP5 FPGAs.", epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hdlgen {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for name, module, verbs in _COMMANDS:
        if verbs is None:
            if _exists(module):
                _add_command(sub, name, module)
            continue
        present = [(v, mod) for v, mod in verbs if _exists(mod)]
        if not present:
            continue
        p = sub.add_parser(name, help=f"benchmarks that print figures: {', '.join(v for v, _ in present)}")
        vsub = p.add_subparsers(title="benchmarks", metavar="WHAT", parser_class=_Parser)
        for verb, mod in present:
            _add_command(vsub, verb, mod)
        p.set_defaults(_run=None, _parser=p)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        return int(run(args) or 0)
    except UserError as e:
        print(f"hdlgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hdlgen: interrupted", file=sys.stderr)
        return 130
