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
