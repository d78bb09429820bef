"""``hdlgen bench blocks``: discovery of every block's ``bench_configs()``, the JSON report's
shape, the table, ``--only`` and failures, with a fast fake in place of place and route."""

import json
from types import SimpleNamespace

from amaranth.hdl import Fragment

import hdlgen.bench.blocks as bench_blocks
import hdlgen.flow as flow
from hdlgen.bench.registry import BlockBench
from hdlgen.blocks.dsp import DSPMultiplier
from hdlgen.blocks.mac_array import MACArray
from hdlgen.cli import main

_BASE = {"name", "params", "lut", "ff", "dsp", "ebr", "fmax_mhz"}


def _fake_implement(calls):
    def implement(component, *, device, freq_mhz, seed, **kwargs):
        Fragment.get(component, None)          # elaborates it, as the real flow would
        calls.append((type(component).__name__, device, freq_mhz, seed))
        return SimpleNamespace(lut=100 + len(calls), ff=200, dsp=len(calls), ebr=0,
                               fmax_mhz=151.234, seconds={"yosys": 0.1, "nextpnr": 0.2})
    return implement


def _discovered(entries, failures=()):
    return lambda: bench_blocks._Discovered([("tests.fake", e) for e in entries], list(failures))


def test_discovery_finds_mac_array():
    found = bench_blocks.discover()
    macs = [e for m, e in found.entries if e.name == "mac_array"]
    assert macs and all(m.startswith("hdlgen.blocks.") for m, _ in found.entries)
    p = macs[0].params
    assert p["lanes"] * p["macs_per_lane"] >= 128 and macs[0].error is None


def test_list_prints_entries(capsys):
    assert main(["bench", "blocks", "--list", "--only", "mac_array"]) == 0
    out = capsys.readouterr().out
    assert "mac_array" in out and "lanes=16" in out


def test_json_shape(monkeypatch, capsys):
    calls = []
    entries = [
        BlockBench("mac_array", {"lanes": 2, "macs_per_lane": 2}, lambda: MACArray(2, 2)),
        BlockBench("fake_approx", {"bits": 8}, lambda: DSPMultiplier(8, 8),
                   error=lambda: {"metric": "max_abs", "value": 0.01, "bound": 0.02}),
    ]
    monkeypatch.setattr(bench_blocks, "discover", _discovered(entries))
    monkeypatch.setattr(flow, "ooc_implement", _fake_implement(calls))
    assert main(["bench", "blocks", "--device", "45F", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)          # exactly one JSON object on stdout
    assert set(report) == {"device", "blocks"} and report["device"] == "45F"
    exact, approx = report["blocks"]
    assert set(exact) == _BASE and exact["name"] == "mac_array"
    assert exact["params"] == {"lanes": 2, "macs_per_lane": 2}
    assert (exact["lut"], exact["ff"], exact["dsp"], exact["ebr"], exact["fmax_mhz"]) == (101, 200, 1, 0, 151.23)
    assert set(approx) == _BASE | {"error"}
    assert approx["error"] == {"metric": "max_abs", "value": 0.01, "bound": 0.02}
    assert calls == [("MACArray", "45F", 150.0, 1), ("DSPMultiplier", "45F", 150.0, 1)]


def test_table_and_only(monkeypatch, capsys):
    calls = []
    entries = [
        BlockBench("mac_array", {"lanes": 2, "macs_per_lane": 2}, lambda: MACArray(2, 2)),
        BlockBench("other", {}, lambda: DSPMultiplier(8, 8), target_mhz=200.0),
    ]
    monkeypatch.setattr(bench_blocks, "discover", _discovered(entries))
    monkeypatch.setattr(flow, "ooc_implement", _fake_implement(calls))
    assert main(["bench", "blocks", "--only", "other"]) == 0
    out = capsys.readouterr().out
    assert "other" in out and "151.2 (<200)" in out and "mac_array" not in out
    assert calls == [("DSPMultiplier", "85F", 200.0, 1)]
    # --check: the block misses its 200 MHz target
    assert main(["bench", "blocks", "--only", "other", "--check"]) == 1
    assert main(["bench", "blocks", "--only", "nosuch"]) == 2
    assert "unknown block 'nosuch'" in capsys.readouterr().err


def test_failures_are_reported(monkeypatch, capsys):
    def broken():
        raise RuntimeError("tool exploded")
    entries = [BlockBench("mac_array", {"lanes": 2, "macs_per_lane": 2}, lambda: MACArray(2, 2)),
               BlockBench("broken", {"x": 1}, broken)]
    monkeypatch.setattr(bench_blocks, "discover",
                        _discovered(entries, [{"name": "badmod", "params": {}, "message": "ImportError: x"}]))
    monkeypatch.setattr(flow, "ooc_implement", _fake_implement([]))
    assert main(["bench", "blocks", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in report["blocks"]] == ["mac_array"]
    assert {f["name"] for f in report["failed"]} == {"badmod", "broken"}
    assert any("tool exploded" in f["message"] for f in report["failed"])


def _args(**kw):
    base = {"device": "85F", "json": True, "only": None, "freq": None, "seed": 1, "out": None,
            "list": False, "check": False, "systems": False}
    base.update(kw)
    return SimpleNamespace(**base)


def test_systems_run_only_when_asked(monkeypatch, capsys):
    """The engine's 30-60 min place and route is not part of a default run."""
    block = BlockBench("mac_array", {"lanes": 2, "macs_per_lane": 2}, lambda: MACArray(2, 2))
    system = BlockBench("engine", {"lanes": 2}, lambda: DSPMultiplier(8, 8), target_mhz=125.0)
    monkeypatch.setattr(bench_blocks, "discover", lambda: bench_blocks._Discovered(
        [("tests.fake", block)], [], [("tests.fake_sys", system)]))

    def ran(**kw):
        calls = []
        assert bench_blocks.run(_args(**kw), implement=_fake_implement(calls)) == 0
        names = [b["name"] for b in json.loads(capsys.readouterr().out)["blocks"]]
        return names, [c[0] for c in calls]

    assert ran() == (["mac_array"], ["MACArray"])
    assert ran(only=["engine"]) == (["engine"], ["DSPMultiplier"])
    assert ran(only=["mac_array", "engine"]) == (["mac_array", "engine"], ["MACArray", "DSPMultiplier"])
    assert ran(systems=True) == (["mac_array", "engine"], ["MACArray", "DSPMultiplier"])
    assert ran(only=["mac_array"], systems=True) == (["mac_array"], ["MACArray"])


def test_real_engine_entry_is_opt_in(capsys):
    """With the real discovery: ``--list`` leaves the engine out unless asked for."""
    assert main(["bench", "blocks", "--list"]) == 0
    default = capsys.readouterr().out.split()
    assert "mac_array" in default and "engine" not in default
    assert main(["bench", "blocks", "--list", "--only", "engine"]) == 0
    assert capsys.readouterr().out.split()[0] == "engine"
    assert main(["bench", "blocks", "--list", "--systems"]) == 0
    assert "engine" in capsys.readouterr().out.split()
