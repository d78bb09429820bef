"""CLI argument errors: one clear line naming the value, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from hdlgen.cli import main
from hdlgen.model import builtin_model_path


def run_cli(*argv):
    proc = subprocess.run([sys.executable, "-m", "hdlgen", *argv], capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("argv, needle", [
    (["build", "--board", "nosuchboard"], "'nosuchboard'"),
    (["build", "--device", "99F"], "'99F'"),
    (["build", "--freq", "48"], "48 MHz"),
    (["build", "--freq", "900"], "900 MHz"),
    (["build", "--freq", "-5"], "-5"),
    (["build", "--device", "12F", "--lanes", "16", "--macs-per-lane", "8"], "128 MULT18X18D"),
    (["build", "--uart-baud", "12000000"], "12000000"),
    (["build", "--bogus-flag"], "--bogus-flag"),
    (["build", "--freq", "fast"], "'fast'"),
    (["report", "/no/such/dir"], "/no/such/dir"),
    (["verilog", "--block", "no_such_block"], "'no_such_block'"),
    (["verilog", "--block", "stream_parts", "--param", "nonsense"], "'nonsense'"),
    (["build", "--model", "/no/such/model.bin"], "/no/such/model.bin"),
    (["run", "--model", "random:llama", "--target", "serial"], "--port"),
    (["bench", "model", "--model", "random:llama", "--target", "serial"], "--port"),
    (["bench", "model", "--model", "random:llama", "--positions", "a,b"], "'a,b'"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, needle):
    code, out, err = run_cli(*argv)
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


STORIES = builtin_model_path("stories260K")   # hdlgen/model/builtin (vendored)
def test_model_that_does_not_fit_is_refused_before_synthesis(tmp_path):
    """stories260K's int8 weights alone need more block RAM than the 12F has."""
    code, out, err = run_cli("build", "--model", str(STORIES), "--device", "12F",
                             "--out", str(tmp_path))
    assert code == 2, (code, out, err)
    assert "12F" in err and "bytes" in err and "Traceback" not in err
    assert not (tmp_path / "top.il").exists()
    # the model fits the 85F, but not with a 64 KiB host scratch RAM beside it
    code, out, err = run_cli("build", "--model", str(STORIES), "--scratch-bytes", "65536",
                             "--out", str(tmp_path))
    assert code == 2 and "--scratch-bytes" in err and "Traceback" not in err, err
    assert not (tmp_path / "top.il").exists()


def test_program_without_openfpgaloader_is_refused_before_building(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "definitely-not-installed-openfpgaloader")
    monkeypatch.chdir(tmp_path)
    code = main(["build", "--device", "12F", "--program", "--out", str(tmp_path / "b")])
    assert code == 2
    assert not (tmp_path / "b").exists()


def test_help_lists_commands_and_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("build", "verilog", "report"):
        assert cmd in out
    assert "python -m hdlgen build --board ulx3s" in out


def test_verilog_of_a_block(tmp_path):
    out = tmp_path / "skid.v"
    assert main(["verilog", "--block", "stream_parts", "--param", "shape=8", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module stream_parts" in text and "i__payload" in text


def test_run_fmax_comes_only_from_builds_with_an_engine(tmp_path, monkeypatch):
    """tokens/s use the fmax of a build that contains an engine (this model first); a SoC built
    without one says nothing about the engine's timing and falls back to the target clock."""
    import json
    import os
    from hdlgen.config import AcceleratorConfig
    from hdlgen.run import fmax_for
    cfg = AcceleratorConfig()
    monkeypatch.chdir(tmp_path)

    def report(name, mtime, **extra):
        d = tmp_path / "build" / name
        d.mkdir(parents=True)
        p = d / "report.json"
        p.write_text(json.dumps({"device": "LFE5U-85F", "config": {
            "lanes": cfg.lanes, "macs_per_lane": cfg.macs_per_lane,
            "context_length": cfg.context_length, "sys_clk_mhz": cfg.sys_clk_mhz}, **extra}))
        os.utime(p, (mtime, mtime))

    report("soc", 300, fmax_mhz=157.9)
    fmax, src = fmax_for(cfg, "85F", "stories260K")
    assert fmax == cfg.sys_clk_mhz and src.startswith("target clock")
    report("other", 100, fmax_mhz=131.0, model="random:llama")
    report("this", 200, fmax_mhz=127.5, model="stories260K")
    assert fmax_for(cfg, "85F", "stories260K") == (127.5, "build report build/this/report.json "
                                                          "(this model)")
    fmax, src = fmax_for(cfg, "85F", "random:gpt2")
    assert fmax == 127.5 and "model stories260K" in src      # the newest build with an engine
    assert fmax_for(cfg, "45F", "stories260K")[1].startswith("target clock")
