"""Register map: checked-in artefacts in sync, JSON round trip, host accessor, C header."""

import json
import shutil
import subprocess

import pytest

from hdlgen.config import AcceleratorConfig
from hdlgen.soc import regmap
from hdlgen.soc.regmap import RegisterMap, RegisterMapMismatch, soc_register_map


def test_checked_in_artifacts_are_up_to_date():
    stale = regmap.stale_artifacts()
    assert not stale, (f"generated files are stale: {stale}; run "
                       f"'python -m hdlgen.soc.regmap --write' and commit them")


def test_stale_check_detects_an_edit(tmp_path):
    regmap.write_artifacts(tmp_path)
    assert regmap.stale_artifacts(tmp_path) == []
    hdr = tmp_path / regmap.ARTIFACTS["header"]
    hdr.write_text(hdr.read_text().replace("0x00000014u", "0x00000018u", 1))
    assert regmap.stale_artifacts(tmp_path) == [regmap.ARTIFACTS["header"]]
    # a different configuration changes every artefact
    assert len(regmap.stale_artifacts(tmp_path, AcceleratorConfig(lanes=8))) == 3


def test_json_round_trip_and_accessors():
    rm = soc_register_map()
    d = json.loads(rm.to_json())
    for src in (d, rm.to_json()):
        back = RegisterMap.from_json(src)
        assert back.to_dict() == rm.to_dict()
    assert rm.address("STATUS") == regmap.CTRL_BASE + 0x14
    f = rm.field("STATUS", "CODE")
    assert (f.shift, f.width, f.mask, f.access) == (8, 8, 0xFF00, "RO")
    assert rm.encode("CTRL", START=1) == 1
    assert rm.encode("STATUS", DONE=1, ERROR=1) == 0b110
    assert rm.decode("STATUS", 0x0305) == {"BUSY": 1, "DONE": 0, "ERROR": 1, "CODE": 3}
    assert rm.window("scratch") == (regmap.SCRATCH_BASE, 65536)
    with pytest.raises(KeyError, match="no register 'NOPE'"):
        rm.address("NOPE")
    with pytest.raises(KeyError, match="has no field"):
        rm.field("STATUS", "NOPE")
    with pytest.raises(ValueError, match="does not fit"):
        rm.encode("STATUS", CODE=256)


def test_from_json_path_and_errors(tmp_path):
    p = tmp_path / "regmap.json"
    p.write_text(soc_register_map().to_json())
    assert RegisterMap.from_json(p).config_hash == soc_register_map().config_hash
    assert RegisterMap.from_json(str(p)).address("ID") == 0
    with pytest.raises(regmap.UserError, match="does not exist"):
        RegisterMap.from_json(tmp_path / "missing.json")
    bad = json.loads(p.read_text())
    bad["format"] = 99
    with pytest.raises(regmap.UserError, match="format"):
        RegisterMap.from_json(bad)


def test_check_identity():
    rm = soc_register_map()
    rm.check_identity(rm.expected_id, rm.config_hash)
    with pytest.raises(RegisterMapMismatch, match="not an hdlgen device"):
        rm.check_identity(0xFFFF_FFFF)
    with pytest.raises(RegisterMapMismatch, match="version"):
        rm.check_identity(rm.expected_id ^ 0x100)
    with pytest.raises(RegisterMapMismatch, match="CONFIG_HASH"):
        rm.check_identity(rm.expected_id, rm.config_hash ^ 1)


def test_markdown_has_field_tables():
    md = soc_register_map().markdown()
    assert "### STATUS" in md and "| 15:8 | `CODE` | RO |" in md and "| 2 | `ERROR` | W1C |" in md


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_c_header_compiles_and_agrees(tmp_path):
    rm = soc_register_map()
    src = tmp_path / "t.c"
    src.write_text(
        '#include <stdio.h>\n#include "hdlgen_regs.h"\n'
        "int main(void) {\n"
        '  printf("%lu %lu %lu %lu\\n", (unsigned long)HDLGEN_STATUS_ADDR, '
        "(unsigned long)HDLGEN_GET(0x0305u, STATUS, CODE), (unsigned long)HDLGEN_SET(CTRL, ABORT, 1), "
        "(unsigned long)HDLGEN_ID_VALUE);\n  return 0;\n}\n")
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(regmap.REPO_ROOT / "firmware"), str(src),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    assert [int(x) for x in out] == [rm.address("STATUS"), 3, 2, rm.expected_id]


def test_cli_check(tmp_path, capsys):
    assert regmap.main(["--check"]) == 0
    out = tmp_path / "m.json"
    assert regmap.main(["--json", str(out)]) == 0
    assert RegisterMap.from_json(out).address("SCRATCH") == 0x1C


def test_extra_entries_and_overlap_check():
    from hdlgen.blocks.dma import dma_registers
    extra = (regmap.Bank("dma", 0x100, 0x20, tuple(dma_registers()), "DMA."),
             regmap.Window("engine", 0x10_0000, 0x1_0000, "Engine."))
    rm = soc_register_map(extra=extra)
    assert rm.address("DMA_STATUS") == 0x114 and rm.window("engine") == (0x10_0000, 0x1_0000)
    assert "HDLGEN_DMA_STATUS_CODE_MASK" in rm.c_header() and "## Bank `dma`" in rm.markdown()
    with pytest.raises(regmap.UserError, match="overlaps"):
        soc_register_map(extra=(regmap.Window("bad", regmap.SCRATCH_BASE + 0x100, 0x100),))
    with pytest.raises(regmap.UserError, match="used twice"):
        soc_register_map(extra=(regmap.Window("scratch", 0x20_0000, 0x100),))
