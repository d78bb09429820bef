"""``hdlgen selftest``: the CLI entry on the simulated SoC with faults on the wire, and
negative tests showing each of its checks fails on a faulty device model."""

import argparse
import json
import random

import pytest

from hdlgen import selftest
from hdlgen.errors import UserError
from hdlgen.host import Device, FaultyTransport
from hdlgen.soc.protocol import crc32
from hdlgen.soc.regmap import soc_register_map
from sim.golden.bridge import BridgeModel, DictBus, ModelTransport, model_device_bus

RM = soc_register_map()
PROGRAM = selftest.load_program()


def parse(argv):
    p = argparse.ArgumentParser()
    selftest.add_arguments(p)
    return p.parse_args(argv)


def test_selftest_sim_json(capsys):
    rc = selftest.run(parse(["--target", "sim", "--frames", "400", "--corrupt-rate", "0.1",
                             "--seed", "3", "--json"]))
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert rc == 0, report
    assert report["registers"] == "pass"
    assert report["memory_bytes"] >= 64 * 1024 and report["memory_errors"] == 0
    assert report["frames"] == 400 and report["corrupted"] > 15
    assert report["undetected"] == 0 and report["recovered"] == report["corrupted"]


def test_selftest_argument_errors():
    with pytest.raises(UserError, match="--port"):
        selftest.run(parse(["--target", "serial"]))
    with pytest.raises(UserError, match="corrupt-rate"):
        selftest.run(parse(["--corrupt-rate", "1.5"]))


# ---- the checks can fail ---------------------------------------------------------------------

class NoCrcCheck(BridgeModel):
    """A broken device: executes frames without checking their CRC."""

    def _execute(self, frame: bytes) -> bytes:
        body = frame[:-4]
        return super()._execute(body + crc32(body).to_bytes(4, "little"))


def _model_dev(model_cls=BridgeModel, bus=None):
    bus = bus or model_device_bus(RM)
    t = ModelTransport(bus)
    t.model = model_cls(bus.read, bus.write)
    faulty = FaultyTransport(t, rate=0.0, seed=9, kinds=("flip",))
    dev = Device(faulty, regmap=RM, timeout=0.01, seed=1)
    return dev, faulty


def test_frames_check_counts_undetected_corruption():
    dev, faulty = _model_dev(NoCrcCheck)
    faulty.rate = 0.2
    r = PROGRAM.check_frames(dev, faulty, 300, random.Random(1))
    assert r["undetected"] > 0


def test_frames_check_passes_on_a_correct_model():
    dev, faulty = _model_dev()
    faulty.rate = 0.2
    r = PROGRAM.check_frames(dev, faulty, 300, random.Random(1))
    assert r["undetected"] == 0 and r["corrupted"] > 20 and r["recovered"] == r["corrupted"]


def test_memory_check_counts_errors():
    class StuckBit(DictBus):
        def read(self, w):
            st, v = super().read(w)
            return st, v | (1 << 5) if w == RM.window("scratch")[0] // 4 + 77 else v

    good = model_device_bus(RM)
    bus = StuckBit(good.windows)
    bus.mem.update(good.mem)
    dev, _ = _model_dev(bus=bus)
    done, errors = PROGRAM.check_memory(dev, 8192, random.Random(2))
    assert done == 8192 and 0 < errors <= 1


def test_register_check_reports_problems():
    """On the model device (control registers are plain RAM, no counter, no job engine)."""
    dev, _ = _model_dev()
    problems = PROGRAM.check_registers(dev)
    assert any("CYCLES_LO" in p for p in problems)
