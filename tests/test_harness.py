"""The cocotb + Verilator harness: a real bench passes, a wrong result fails, builds are cached."""

import json
import shutil

import pytest

from hdlgen.blocks.stream_parts import SkidBuffer
import fcntl
import os

from sim.harness import prune_cache, run_cocotb, verilator_root


def _run(stall, corrupt=None, check=True):
    params = {"width": 16, "stall": stall}
    if corrupt:
        params["corrupt"] = corrupt
    return run_cocotb(SkidBuffer(16), "sim.benches.skid_buffer", name="skid_buffer",
                      env={"HDLGEN_PARAMS": json.dumps(params)}, check=check)


def test_verilator_found_without_path():
    assert (verilator_root() / "bin" / "verilator").exists()


@pytest.mark.parametrize("stall", [0.0, 0.1, 0.5])
def test_skid_buffer_random_traffic(stall):
    result = _run(stall)
    assert result.passed and result.tests == 1


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_wrong_and_missing_output(corrupt):
    result = _run(0.1, corrupt=corrupt, check=False)
    assert result.tests == 1 and result.failed == 1
    with pytest.raises(AssertionError, match="HDLGEN_SEED="):
        _run(0.1, corrupt=corrupt)


def test_build_is_cached():
    first = _run(0.0)
    binary = first.build_dir / "skid_buffer"
    stamp = binary.stat().st_mtime_ns
    second = _run(0.0)
    assert second.build_dir == first.build_dir
    assert binary.stat().st_mtime_ns == stamp    # the simulator was not rebuilt


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_icarus_passes_and_fails():
    params = {"width": 16, "stall": 0.1}
    env = {"HDLGEN_PARAMS": json.dumps(params), "HDLGEN_COUNT": "500"}
    assert run_cocotb(SkidBuffer(16), "sim.benches.skid_buffer", name="skid_buffer",
                      env=env, simulator="icarus").passed
    env["HDLGEN_PARAMS"] = json.dumps({**params, "corrupt": "value"})
    bad = run_cocotb(SkidBuffer(16), "sim.benches.skid_buffer", name="skid_buffer", env=env,
                     simulator="icarus", check=False)
    assert (bad.tests, bad.failed) == (1, 1)


def test_waveforms_only_on_request():
    env = {"HDLGEN_PARAMS": json.dumps({"width": 16, "stall": 0.1}), "HDLGEN_COUNT": "100"}
    plain = run_cocotb(SkidBuffer(16), "sim.benches.skid_buffer", name="skid_buffer", env=env,
                       waves=False)
    assert not list(plain.build_dir.glob("dump.*"))
    traced = run_cocotb(SkidBuffer(16), "sim.benches.skid_buffer", name="skid_buffer", env=env,
                        waves=True)
    assert traced.build_dir != plain.build_dir
    dumps = list(traced.build_dir.glob("dump.*"))
    assert dumps and dumps[0].suffix in (".fst", ".vcd") and dumps[0].stat().st_size > 1000


def test_cache_is_pruned_least_recently_used_first(tmp_path):
    """Old builds go first; the one kept, and one another process has locked, stay."""
    builds = []
    for i in range(5):
        d = tmp_path / f"blk-verilator-{i:016x}"
        d.mkdir()
        (d / "obj").write_bytes(bytes(1000))
        (d / ".built").touch()
        os.utime(d / ".built", (1000 + i, 1000 + i))     # build i last used at time 1000 + i
        builds.append(d)
    assert prune_cache(tmp_path, max_bytes=0) == []        # 0: unbounded
    with open(builds[1].with_suffix(".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)                   # build 1 is in use elsewhere
        deleted = prune_cache(tmp_path, max_bytes=3500, keep=[builds[0]])
    assert deleted == [builds[2], builds[3]]
    assert [d.exists() for d in builds] == [True, True, False, False, True]
    # a build a simulation runs from (its .use held shared, as run_cocotb does) stays too
    with open(builds[4].with_suffix(".use"), "w") as running:
        fcntl.flock(running, fcntl.LOCK_SH)
        assert prune_cache(tmp_path, max_bytes=1, keep=[builds[0]]) == [builds[1]]
    assert [d.exists() for d in builds] == [True, False, False, False, True]


def test_verilator_opt_is_a_build_of_its_own(monkeypatch):
    """``HDLGEN_VERILATOR_OPT`` reaches make (``OPT_FAST`` in MAKEFLAGS) and keys the cache,
    so a build at another level is not mistaken for this one; a bad value is refused."""
    default = _run(0.0)
    assert "OPT_FAST=-O1" in os.environ["MAKEFLAGS"]
    monkeypatch.setenv("HDLGEN_VERILATOR_OPT", "-Os")
    other = _run(0.0)
    assert "OPT_FAST=-Os" in os.environ["MAKEFLAGS"] and "-O1" not in os.environ["MAKEFLAGS"]
    assert other.passed and other.build_dir != default.build_dir
    monkeypatch.setenv("HDLGEN_VERILATOR_OPT", "fast")
    with pytest.raises(ValueError, match="HDLGEN_VERILATOR_OPT='fast'"):
        _run(0.0)


def _objcache(cwd, env, *args):
    import subprocess
    import sys
    from sim.harness import REPO_ROOT
    return subprocess.run([sys.executable, str(REPO_ROOT / "sim" / "objcache.py"), *args],
                          cwd=cwd, env={**os.environ, **env}).returncode


def test_objcache_hits_only_the_same_preprocessed_compile(tmp_path):
    """A compile of a source outside the build directory is taken from the cache when its
    command and preprocessed text match: a changed header misses; the build's own sources and
    a link are never cached."""
    lib, cache, log = tmp_path / "lib", tmp_path / "cache", tmp_path / "log"
    lib.mkdir()
    (lib / "lib.h").write_text("#define K 3\n")
    (lib / "lib.cpp").write_text('#include "lib.h"\nint k() { return K; }\n')
    env = {"HDLGEN_OBJCACHE_DIR": str(cache), "HDLGEN_OBJCACHE_LOG": str(log)}
    cmd = ["c++", "-O1", "-MMD", f"-I{lib}", "-c", "-o", "lib.o", str(lib / "lib.cpp")]
    objs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert _objcache(tmp_path / name, env, *cmd) == 0
        objs.append((tmp_path / name / "lib.o").read_bytes())
        assert (tmp_path / name / "lib.d").read_text().startswith("lib.o:")
    assert objs[0] == objs[1] and log.read_text().split("\n")[:2] == ["miss lib.o", "hit lib.o"]
    (lib / "lib.h").write_text("#define K 4\n")              # the header changes the code
    (tmp_path / "c").mkdir()
    assert _objcache(tmp_path / "c", env, *cmd) == 0
    assert (tmp_path / "c" / "lib.o").read_bytes() != objs[0]
    (tmp_path / "c" / "own.cpp").write_text("int main() { return 0; }\n")
    assert _objcache(tmp_path / "c", env, "c++", "-c", "-o", "own.o", "own.cpp") == 0
    assert _objcache(tmp_path / "c", env, "c++", "-o", "prog", "own.o", "lib.o") == 0
    assert (tmp_path / "c" / "prog").exists()
    assert log.read_text().split("\n")[2:] == ["miss lib.o", "pass own.o", ""]
    # a failing compile fails through the wrapper and stores nothing
    (lib / "bad.cpp").write_text("int f() { return undefined; }\n")
    before = sorted(cache.iterdir())
    assert _objcache(tmp_path / "c", env, "c++", "-c", "-o", "bad.o", str(lib / "bad.cpp")) != 0
    assert sorted(cache.iterdir()) == before


def test_second_build_takes_the_runtime_from_the_cache(tmp_path, monkeypatch):
    """Two different designs in a fresh cache: the second build takes Verilator's run-time
    library from sim/objcache.py's cache, and its simulation still passes."""
    monkeypatch.setenv("HDLGEN_SIM_BUILD", str(tmp_path / "sim_build"))
    monkeypatch.setenv("HDLGEN_OBJCACHE_LOG", str(tmp_path / "log"))
    logs = []
    for width in (16, 8):
        res = run_cocotb(SkidBuffer(width), "sim.benches.skid_buffer", name="skid_buffer",
                         env={"HDLGEN_COUNT": "200",
                              "HDLGEN_PARAMS": json.dumps({"width": width, "stall": 0.1})})
        assert res.passed
        logs.append(set((tmp_path / "log").read_text().split("\n")) - set().union(*logs))
    runtime = {"verilated.o", "verilated_vpi.o", "verilated_threads.o", "verilated_dpi.o"}
    assert {f"miss {o}" for o in runtime} <= logs[0]
    assert {f"hit {o}" for o in runtime} <= logs[1]
    assert "pass Vtop__ALL.o" in logs[0]             # the design's own code is compiled
