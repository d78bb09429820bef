"""The register map, defined once: SoC address layout, generated artefacts, host accessor.

The SoC's bus layout is :func:`soc_layout` (the one place addresses are chosen); the
registers of every CSR bank are the :class:`~hdlgen.soc.csr.Register` objects the gateware
is built from (:func:`hdlgen.soc.control.control_registers`). :func:`soc_register_map`
combines them into a :class:`RegisterMap`, from which come

* ``firmware/regmap.json`` (:meth:`RegisterMap.to_json`), which the host loads,
* the C header ``firmware/hdlgen_regs.h`` (:meth:`RegisterMap.c_header`),
* the Markdown reference ``docs/registers.md`` (:meth:`RegisterMap.markdown`).

Regenerate the checked-in copies with ``python -m hdlgen.soc.regmap --write`` (``--check``
exits 1 when they are stale; ``tests/test_regmap.py`` fails then too).

SoC integration (``hdlgen/soc/soc.py``)::

    from hdlgen.soc import regmap
    for entry in regmap.soc_layout(config):      # Bank and Window records, byte addresses
        ...                                      # entry.name, entry.base, entry.size
    # "ctrl" is a ControlBlock(config).bus; "scratch" a memory of config.scratch_bytes.

Host side (``hdlgen.host``)::

    rm = RegisterMap.from_json("firmware/regmap.json")   # or a dict, or a JSON string
    rm.address("STATUS")            # byte address on the bus
    rm.field("STATUS", "DONE")      # FieldInfo(shift=1, width=1, mask=0x2, access="W1C", ...)
    rm.encode("CTRL", START=1)      # -> 0x1
    rm.decode("STATUS", 0x0302)     # -> {"BUSY": 0, "DONE": 1, "ERROR": 0, "CODE": 3}
    rm.check_identity(id_value, config_hash_value)   # raises RegisterMapMismatch
    rm.window("scratch")            # (base, size) of a memory window
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from hdlgen.errors import UserError

__all__ = ["Bank", "Window", "FieldInfo", "RegisterInfo", "RegisterMap", "RegisterMapMismatch",
           "soc_layout", "soc_register_map", "artifact_texts", "write_artifacts", "stale_artifacts",
           "CTRL_BASE", "SCRATCH_BASE", "FORMAT"]

#: JSON format version of ``regmap.json``.
FORMAT = 1
#: Byte address of the control bank.
CTRL_BASE = 0x0000_0000
#: Byte address of the host-visible scratch memory.
SCRATCH_BASE = 0x0001_0000

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = {"json": "firmware/regmap.json", "header": "firmware/hdlgen_regs.h",
             "markdown": "docs/registers.md"}


class RegisterMapMismatch(UserError):
    """The device does not match the register map the host loaded."""


@dataclass(frozen=True)
class Bank:
    """A CSR bank on the bus: ``registers`` are :class:`hdlgen.soc.csr.Register` objects."""
    name: str
    base: int
    size: int
    registers: tuple
    desc: str = ""


@dataclass(frozen=True)
class Window:
    """A memory window on the bus (scratch RAM, weight banks, ...)."""
    name: str
    base: int
    size: int
    desc: str = ""


@dataclass(frozen=True)
class FieldInfo:
    name: str
    shift: int
    width: int
    access: str
    reset: int
    desc: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.shift


@dataclass(frozen=True)
class RegisterInfo:
    name: str
    bank: str
    address: int
    offset: int
    desc: str
    fields: tuple
    reset: int

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name.upper():
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; it has "
                       f"{', '.join(f.name for f in self.fields)}")


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def soc_layout(config=None, extra=(), fingerprint: str = "") -> list:
    """Banks and windows of the SoC bus, byte addresses (the single definition).

    ``extra``: further :class:`Bank` / :class:`Window` entries (an engine's window, a DMA
    register bank, ...) placed by the caller; names must be new and windows must not
    overlap (checked by :meth:`RegisterMap.from_layout`). ``fingerprint`` is mixed into
    ``CONFIG_HASH`` (e.g. the model an engine was generated for), so a host holding the
    register map of another build is refused on connect.
    """
    from hdlgen.config import AcceleratorConfig
    from hdlgen.soc import control
    config = (config or AcceleratorConfig()).check()
    ctrl_regs = control.control_registers(config, fingerprint=fingerprint)
    return [
        Bank("ctrl", CTRL_BASE, 4 << control.ADDR_WIDTH, tuple(ctrl_regs),
             "Identification, job control and status, counters, watchdog."),
        Window("scratch", SCRATCH_BASE, _pow2_at_least(config.scratch_bytes),
               f"On-chip scratch RAM, {config.scratch_bytes} bytes, 32-bit words, byte writes."),
        *extra,
    ]


def soc_register_map(config=None, extra=(), fingerprint: str = "") -> "RegisterMap":
    """The :class:`RegisterMap` of the SoC built for ``config`` (``extra`` and ``fingerprint``
    as for :func:`soc_layout`)."""
    from hdlgen.config import AcceleratorConfig
    from hdlgen.soc import control
    config = (config or AcceleratorConfig()).check()
    layout = soc_layout(config, extra, fingerprint)
    ctrl = next(e for e in layout if e.name == "ctrl")
    return RegisterMap.from_layout(layout, config=asdict(config),
                                   config_hash=ctrl.registers[1].fields[0].reset,
                                   version=control.VERSION)


class RegisterMap:
    """All registers and memory windows of a build, by name (see the module docstring).

    Build one with :meth:`from_layout` (gateware side) or :meth:`from_json` (host side).
    """

    def __init__(self, *, registers, windows, config: dict, config_hash: int, version,
                 banks=()):
        self._regs = {r.name: r for r in registers}
        self._windows = {w.name: w for w in windows}
        self._banks = list(banks)
        self.config = dict(config)
        self.config_hash = int(config_hash)
        self.version = tuple(version)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_layout(cls, layout, *, config: dict, config_hash: int, version) -> "RegisterMap":
        regs, windows, banks = [], [], []
        names = set()
        placed = []
        for e in layout:
            if e.name in names:
                raise UserError(f"bus entry name {e.name!r} is used twice")
            names.add(e.name)
            for other in placed:
                if e.base < other.base + other.size and other.base < e.base + e.size:
                    raise UserError(f"bus entry {e.name!r} at {e.base:#x}..{e.base + e.size - 1:#x} "
                                    f"overlaps {other.name!r} at {other.base:#x}.."
                                    f"{other.base + other.size - 1:#x}")
            placed.append(e)
            if isinstance(e, Bank):
                banks.append({"name": e.name, "base": e.base, "size": e.size, "desc": e.desc})
                for r in e.registers:
                    if r.offset >= e.size:
                        raise UserError(f"register {r.name} at offset {r.offset:#x} lies outside "
                                        f"bank {e.name} ({e.size:#x} bytes)")
                    fields = tuple(FieldInfo(f.name, f.offset, f.width, f.access.name, f.reset, f.desc)
                                   for f in r.fields)
                    regs.append(RegisterInfo(r.name, e.name, e.base + r.offset, r.offset, r.desc,
                                             fields, r.reset))
            else:
                windows.append(e)
        seen = {}
        for r in regs:
            if r.name in seen:
                raise UserError(f"register name {r.name} appears in banks {seen[r.name]} and {r.bank}")
            seen[r.name] = r.bank
        return cls(registers=regs, windows=windows, banks=banks, config=config,
                   config_hash=config_hash, version=version)

    @classmethod
    def from_json(cls, source) -> "RegisterMap":
        """Load a map from a path, a JSON string or an already parsed dict."""
        if isinstance(source, dict):
            d = source
        else:
            text = str(source)
            if isinstance(source, Path) or not text.lstrip().startswith("{"):
                path = Path(source)
                if not path.exists():
                    raise UserError(f"register map {path} does not exist; generate it with "
                                    f"'python -m hdlgen.soc.regmap --write' or pass the build's "
                                    f"regmap.json")
                text = path.read_text()
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"register map is not valid JSON: {e}") from None
        if d.get("format") != FORMAT:
            raise UserError(f"register map format {d.get('format')!r} is not supported "
                            f"(expected {FORMAT}); regenerate it with this hdlgen")
        regs = []
        for r in d["registers"]:
            fields = tuple(FieldInfo(f["name"], f["shift"], f["width"], f["access"], f["reset"],
                                     f.get("desc", "")) for f in r["fields"])
            regs.append(RegisterInfo(r["name"], r["bank"], r["address"], r["offset"],
                                     r.get("desc", ""), fields, r["reset"]))
        windows = [Window(w["name"], w["base"], w["size"], w.get("desc", "")) for w in d["windows"]]
        return cls(registers=regs, windows=windows, banks=d["banks"], config=d["config"],
                   config_hash=d["config_hash"], version=d["version"])

    # -- queries -----------------------------------------------------------------------------
    @property
    def registers(self) -> list[RegisterInfo]:
        return sorted(self._regs.values(), key=lambda r: r.address)

    @property
    def windows(self) -> list[Window]:
        return sorted(self._windows.values(), key=lambda w: w.base)

    @property
    def banks(self) -> list[dict]:
        return list(self._banks)

    def register(self, name: str) -> RegisterInfo:
        try:
            return self._regs[name.upper()]
        except KeyError:
            raise KeyError(f"no register {name!r} in the register map; known: "
                           f"{', '.join(r.name for r in self.registers)}") from None

    def address(self, name: str) -> int:
        """Byte address of register ``name`` on the bus."""
        return self.register(name).address

    def field(self, reg: str, field: str) -> FieldInfo:
        return self.register(reg).field(field)

    def window(self, name: str) -> tuple[int, int]:
        """``(base, size)`` of a memory window, bytes."""
        try:
            w = self._windows[name]
        except KeyError:
            raise KeyError(f"no memory window {name!r}; known: "
                           f"{', '.join(self._windows)}") from None
        return w.base, w.size

    def encode(self, reg: str, **values) -> int:
        """Register value with the given fields set (others 0)."""
        r = self.register(reg)
        out = 0
        for name, v in values.items():
            f = r.field(name)
            if not isinstance(v, int) or not 0 <= v < (1 << f.width):
                raise ValueError(f"{r.name}.{f.name}={v!r} does not fit in {f.width} bits")
            out |= v << f.shift
        return out

    def decode(self, reg: str, value: int) -> dict:
        """Field values of a register value, by field name."""
        r = self.register(reg)
        return {f.name: (value >> f.shift) & ((1 << f.width) - 1) for f in r.fields}

    @property
    def expected_id(self) -> int:
        return self.register("ID").reset

    def check_identity(self, id_value: int, config_hash: int | None = None) -> None:
        """Raise :class:`RegisterMapMismatch` unless the device's ``ID`` (and ``CONFIG_HASH``
        if given) match this map."""
        want = self.decode("ID", self.expected_id)
        got = self.decode("ID", id_value)
        if got["MAGIC"] != want["MAGIC"]:
            raise RegisterMapMismatch(
                f"ID register reads {id_value:#010x}: magic {got['MAGIC']:#06x} is not "
                f"{want['MAGIC']:#06x}; this is not an hdlgen device, or the link is wrong "
                f"(check the port and baud rate)")
        if (got["VERSION_MAJOR"], got["VERSION_MINOR"]) != (want["VERSION_MAJOR"], want["VERSION_MINOR"]):
            raise RegisterMapMismatch(
                f"device register layout version {got['VERSION_MAJOR']}.{got['VERSION_MINOR']} "
                f"differs from the map's {want['VERSION_MAJOR']}.{want['VERSION_MINOR']}; load the "
                f"regmap.json of the bitstream on the board")
        if config_hash is not None and config_hash != self.config_hash:
            raise RegisterMapMismatch(
                f"device CONFIG_HASH {config_hash:#010x} differs from the map's "
                f"{self.config_hash:#010x}: the board runs a different build; load that build's "
                f"regmap.json or rebuild")

    # -- artefacts --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": list(self.version),
            "config_hash": self.config_hash,
            "config": self.config,
            "banks": self._banks,
            "windows": [asdict(w) for w in self.windows],
            "registers": [{
                "name": r.name, "bank": r.bank, "address": r.address, "offset": r.offset,
                "desc": r.desc, "reset": r.reset,
                "fields": [asdict(f) for f in r.fields],
            } for r in self.registers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def c_header(self) -> str:
        out = [
            "/* hdlgen register map: addresses and bit fields of the SoC bus.",
            " * Generated by `python -m hdlgen.soc.regmap --write`; do not edit. */",
            "#ifndef HDLGEN_REGS_H",
            "#define HDLGEN_REGS_H",
            "",
            f"#define HDLGEN_REGMAP_VERSION_MAJOR {self.version[0]}",
            f"#define HDLGEN_REGMAP_VERSION_MINOR {self.version[1]}",
            f"#define HDLGEN_CONFIG_HASH 0x{self.config_hash:08x}u",
            f"#define HDLGEN_ID_VALUE 0x{self.expected_id:08x}u",
            "",
            "/* Extract / insert a field: HDLGEN_GET(value, STATUS, DONE), HDLGEN_SET(STATUS, DONE, 1) */",
            "#define HDLGEN_GET(v, reg, fld) (((v) & HDLGEN_##reg##_##fld##_MASK) >> HDLGEN_##reg##_##fld##_SHIFT)",
            "#define HDLGEN_SET(reg, fld, x) (((unsigned long)(x) << HDLGEN_##reg##_##fld##_SHIFT) & HDLGEN_##reg##_##fld##_MASK)",
            "",
            "/* Memory windows */",
        ]
        for w in self.windows:
            n = w.name.upper()
            out += [f"#define HDLGEN_MEM_{n}_BASE 0x{w.base:08x}u",
                    f"#define HDLGEN_MEM_{n}_SIZE 0x{w.size:08x}u"]
        for b in self._banks:
            n = b["name"].upper()
            out += ["", f"/* Bank {b['name']}: {b['desc']} */",
                    f"#define HDLGEN_BANK_{n}_BASE 0x{b['base']:08x}u",
                    f"#define HDLGEN_BANK_{n}_SIZE 0x{b['size']:08x}u"]
            for r in self.registers:
                if r.bank != b["name"]:
                    continue
                out += ["", f"/* {r.name}: {r.desc} */",
                        f"#define HDLGEN_{r.name}_ADDR 0x{r.address:08x}u",
                        f"#define HDLGEN_{r.name}_RESET 0x{r.reset:08x}u"]
                for f in r.fields:
                    p = f"HDLGEN_{r.name}_{f.name}"
                    out += [f"#define {p}_SHIFT {f.shift}",
                            f"#define {p}_WIDTH {f.width}",
                            f"#define {p}_MASK 0x{f.mask:08x}u  /* {f.access} */"]
        out += ["", "#endif /* HDLGEN_REGS_H */", ""]
        return "\n".join(out)

    def markdown(self) -> str:
        def esc(s):
            return s.replace("|", "\\|")
        cfg = ", ".join(f"`{k}={v}`" for k, v in self.config.items())
        out = [
            "# hdlgen register reference",
            "",
            "Generated by `python -m hdlgen.soc.regmap --write` from the register definitions the",
            "gateware is built from; do not edit. All registers are 32 bits wide, at byte addresses",
            "on the 32-bit Wishbone bus the host bridge drives.",
            "",
            f"- register layout version {self.version[0]}.{self.version[1]}, "
            f"`ID` reads `0x{self.expected_id:08x}`",
            f"- `CONFIG_HASH` of this build: `0x{self.config_hash:08x}` ({cfg})",
            "",
            "Access types: **RW** read/write; **RO** read-only; **W1C** set by the hardware, "
            "cleared by writing 1; **WO** write-only command (reads 0).",
            "",
            "## Address map",
            "",
            "| name | base | size | contents |",
            "|---|---|---|---|",
        ]
        entries = [(b["base"], b["name"], b["size"], b["desc"] + " (registers)") for b in self._banks]
        entries += [(w.base, w.name, w.size, w.desc) for w in self.windows]
        for base, name, size, desc in sorted(entries):
            out.append(f"| `{name}` | `0x{base:08x}` | {size:#x} | {esc(desc)} |")
        for b in self._banks:
            out += ["", f"## Bank `{b['name']}` at `0x{b['base']:08x}`", "",
                    "| address | register | reset | description |", "|---|---|---|---|"]
            regs = [r for r in self.registers if r.bank == b["name"]]
            for r in regs:
                out.append(f"| `0x{r.address:08x}` | [`{r.name}`](#{r.name.lower()}) | "
                           f"`0x{r.reset:08x}` | {esc(r.desc)} |")
            for r in regs:
                out += ["", f"### {r.name}", "",
                        f"Address `0x{r.address:08x}` (bank `{b['name']}` + `0x{r.offset:02x}`). {esc(r.desc)}",
                        "", "| bits | field | access | reset | description |", "|---|---|---|---|---|"]
                for f in sorted(r.fields, key=lambda f: -f.shift):
                    bits = f"{f.shift}" if f.width == 1 else f"{f.shift + f.width - 1}:{f.shift}"
                    out.append(f"| {bits} | `{f.name}` | {f.access} | `{f.reset:#x}` | {esc(f.desc)} |")
        out.append("")
        return "\n".join(out)


def artifact_texts(config=None) -> dict:
    """``{relative path: text}`` of every generated artefact for ``config``: the map of what
    ``hdlgen build`` makes without ``--model`` (the SoC with the matrix-vector unit)."""
    from hdlgen.config import AcceleratorConfig
    from hdlgen.soc.matvec import MatVecDesign
    rm = MatVecDesign((config or AcceleratorConfig()).check()).register_map
    return {ARTIFACTS["json"]: rm.to_json(), ARTIFACTS["header"]: rm.c_header(),
            ARTIFACTS["markdown"]: rm.markdown()}


def write_artifacts(root: Path | None = None, config=None) -> list[Path]:
    """Write the generated artefacts under ``root`` (default: the repository)."""
    root = Path(root or REPO_ROOT)
    written = []
    for rel, text in artifact_texts(config).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_artifacts(root: Path | None = None, config=None) -> list[str]:
    """Relative paths of checked-in artefacts that differ from what the code generates."""
    root = Path(root or REPO_ROOT)
    stale = []
    for rel, text in artifact_texts(config).items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            stale.append(rel)
    return stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hdlgen.soc.regmap",
        description="Generate the register map artefacts (regmap.json, C header, Markdown).",
        epilog="example: python -m hdlgen.soc.regmap --write")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite the checked-in artefacts")
    g.add_argument("--check", action="store_true", help="exit 1 if a checked-in artefact is stale")
    ap.add_argument("--json", metavar="PATH", help="also write regmap.json to PATH")
    args = ap.parse_args(argv)
    if args.json:
        Path(args.json).write_text(artifact_texts()[ARTIFACTS["json"]])
    if args.write:
        for p in write_artifacts():
            print(f"wrote {p.relative_to(REPO_ROOT)}")
        return 0
    if args.check:
        stale = stale_artifacts()
        for rel in stale:
            print(f"stale: {rel} (run python -m hdlgen.soc.regmap --write)")
        return 1 if stale else 0
    if not args.json:
        sys.stdout.write(artifact_texts()[ARTIFACTS["json"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
