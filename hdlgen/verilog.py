"""``hdlgen verilog``: Verilog (or RTLIL) of the whole SoC (with the matrix-vector unit, as
``hdlgen build`` makes it without ``--model``), or of one block with parameters.

Blocks are the modules of :mod:`hdlgen.blocks`; ``--block softmax`` takes the first
``wiring.Component`` named in that module's ``__all__`` and passes ``--param k=v`` to its
constructor (values are Python literals: ``4``, ``True``, ``"int8"``). The output is the
behavioural (simulation) form unless ``--device`` asks for ECP5 primitives.
"""

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

from hdlgen.errors import UserError

__all__ = ["block_names", "make_block"]

HELP = "emit Verilog or RTLIL of the whole SoC or of one named block"


def block_names() -> list[str]:
    import hdlgen.blocks
    names = []
    for info in pkgutil.iter_modules(hdlgen.blocks.__path__):
        if _block_class(info.name, quiet=True) is not None:
            names.append(info.name)
    return sorted(names)


def _block_class(name, quiet=False):
    from amaranth.lib import wiring
    try:
        module = importlib.import_module(f"hdlgen.blocks.{name}")
    except ModuleNotFoundError:
        if quiet:
            return None
        raise UserError(f"unknown block {name!r}: use one of {', '.join(block_names())}") from None
    for attr in getattr(module, "__all__", []):
        obj = getattr(module, attr, None)
        if inspect.isclass(obj) and issubclass(obj, wiring.Component):
            return obj
    if quiet:
        return None
    raise UserError(f"module hdlgen.blocks.{name} defines no block: use one of {', '.join(block_names())}")


def _parse_param(text):
    if "=" not in text:
        raise UserError(f"--param {text!r} must be NAME=VALUE, e.g. --param lanes=4")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value   # a bare word is taken as a string


def make_block(name: str, params: dict):
    cls = _block_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise UserError(f"block {name}: {e}; its parameters are {inspect.signature(cls)}") from None
    except ValueError as e:
        raise UserError(f"block {name}: {e}") from None


def add_arguments(p):
    from hdlgen.build import add_target_arguments
    p.add_argument("--block", default=None, help="emit one block (a module of hdlgen/blocks) instead of the SoC")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="block constructor parameter (repeatable)")
    p.add_argument("--rtlil", action="store_true", help="emit RTLIL instead of Verilog")
    p.add_argument("--ecp5", action="store_true",
                   help="elaborate for ECP5 (instantiate MULT18X18D/DP16KD primitives)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="output file (default: stdout)")
    add_target_arguments(p, freq=True)


def run(args) -> int:
    from amaranth.back import rtlil, verilog
    from hdlgen.flow import OOCPlatform

    if args.block:
        params = dict(_parse_param(p) for p in args.param)
        component = make_block(args.block, params)
        name = args.block
    else:
        if args.param:
            raise UserError("--param applies to --block; the SoC takes the configuration flags "
                            "(--lanes, --macs-per-lane, ...)")
        from hdlgen.build import resolve_target
        from hdlgen.soc.matvec import MatVecDesign
        _board, bdev, config = resolve_target(args)
        component = MatVecDesign(config).soc()     # what `build` makes without --model
        name = "hdlgen_soc"
    platform = OOCPlatform((args.device or "85F").upper()) if args.ecp5 else None
    back = rtlil if args.rtlil else verilog
    text = back.convert(component, name=name, platform=platform)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({len(text.splitlines())} lines)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
