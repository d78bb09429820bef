"""Host API: retries, dedup, errors and registers against the Python device model (fast), then
the same Device code against the simulated SoC (byte port) and through the real UART (bit
level)."""

import random

import pytest

from hdlgen.config import AcceleratorConfig
from hdlgen.host import (Device, DeviceError, FaultyTransport, JobError, LinkTimeout,
                         RetriesExhausted)
from hdlgen.errors import UserError
from hdlgen.soc.protocol import Status
from hdlgen.soc.regmap import RegisterMapMismatch, soc_register_map
from sim.golden.bridge import DictBus, ModelTransport, model_device_bus

RM = soc_register_map()
SCRATCH = RM.window("scratch")[0]


def model_device(**kw):
    bus = model_device_bus(RM)
    return ModelTransport(bus, **kw), bus


# ---- against the Python model ----------------------------------------------------------------

def test_connect_registers_and_bursts():
    t, bus = model_device()
    dev = Device(t, regmap=RM, seed=3)
    assert dev.identity["config_hash"] == RM.config_hash
    dev.write_reg("SCRATCH", 0x1234)
    assert dev.read_reg("SCRATCH") == 0x1234 == bus.mem[RM.address("SCRATCH") // 4]
    dev.write_reg("CTRL", START=1)
    assert bus.mem[RM.address("CTRL") // 4] == RM.encode("CTRL", START=1)
    data = bytes(random.Random(1).getrandbits(8) for _ in range(4 * 700))
    dev.write_bytes(SCRATCH, data)                      # 700 words: 3 bursts
    assert dev.read_bytes(SCRATCH, len(data)) == data
    assert dev.stats["transactions"] >= 2 + 3 + 3


def test_errors_are_clear():
    t, _ = model_device()
    dev = Device(t, regmap=RM)
    with pytest.raises(DeviceError, match="BUS_ERROR") as e:
        dev.read(0x8000_0000, 1)
    assert e.value.status == Status.BUS_ERROR
    with pytest.raises(UserError, match="multiple of 4"):
        dev.read(SCRATCH + 2, 1)
    with pytest.raises(UserError, match="multiple of 4"):
        dev.write_bytes(SCRATCH, b"abc")
    with pytest.raises(LinkTimeout, match="no reply"):
        Device(ModelTransport(DictBus([]), silent=True), retries=1, timeout=0.01)
    with pytest.raises(UserError, match="no register map"):
        Device(model_device()[0]).read_reg("ID")


def test_identity_mismatch():
    other = soc_register_map(AcceleratorConfig(lanes=8))
    t, _ = model_device()                          # a device built for the default config
    with pytest.raises(RegisterMapMismatch, match="CONFIG_HASH"):
        Device(t, regmap=other)


def test_retries_recover_from_every_fault_kind():
    rng = random.Random(7)
    t, bus = model_device()
    faulty = FaultyTransport(t, rate=0.0, seed=5)
    dev = Device(faulty, regmap=RM, timeout=0.01, retries=10)
    faulty.rate = 0.3
    model = {}
    for _ in range(400):
        w = rng.randrange(64)
        if rng.random() < 0.5:
            words = [rng.getrandbits(32) for _ in range(rng.randrange(1, 5))]
            dev.write(SCRATCH + 4 * w, words)
            model.update({w + k: v for k, v in enumerate(words)})
        else:
            got = dev.read(SCRATCH + 4 * w, 3)
            assert got == [model.get(w + k, 0) for k in range(3)]
    assert all(faulty.log.counts[k] > 5 for k in faulty.log.counts), faulty.log.counts
    assert dev.stats["retries"] > 50 and dev.stats["crc_errors"] and dev.stats["reply_crc_errors"]


def test_lost_reply_does_not_apply_a_write_twice():
    """A write to an accumulating register whose reply is lost: the retry must be answered
    from the device's cache, not executed again."""
    bus = DictBus([(0, 64)], accumulators=[0x100])
    bus.mem[0] = 0

    class LoseFirstReply(ModelTransport):
        lose = 0

        def write(self, data):
            super().write(data)
            if self.lose:
                self.lose -= 1
                self._out.clear()

    t = LoseFirstReply(bus)
    dev = Device(t, timeout=0.01)
    t.lose = 1
    dev.write(0x400, [5])
    assert dev.stats["retries"] == 1 and t.model.stats["duplicate"] == 1
    assert dev.read(0x400, 1) == [5]


def test_retries_exhausted():
    t, _ = model_device()
    faulty = FaultyTransport(t, rate=0.0, seed=1, kinds=("flip",))
    dev = Device(faulty, regmap=RM, timeout=0.01, retries=2)
    faulty.rate = 1.0
    with pytest.raises(RetriesExhausted, match="failed 3 times") as e:
        # flips may hit the sync bytes (silent) or the body (CRC_ERROR): either way 3 failures
        dev.write(SCRATCH, [1, 2, 3, 4, 5, 6, 7, 8])
    assert len(e.value.reasons) == 3


# ---- against the simulated SoC ---------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_link():
    from hdlgen.host import SimTransport
    with SimTransport(AcceleratorConfig(), seed=11) as t:
        yield t
    assert t.result is not None and t.result.passed, t.error or t.result


def test_sim_device(sim_link):
    dev = Device(sim_link, regmap=sim_link.regmap, seed=1)
    assert dev.read_fields("ID")["MAGIC"] == 0x4847
    assert dev.read_fields("SYS_CLK")["KHZ"] == 125_000
    base, size = dev.window("scratch")
    data = random.Random(2).randbytes(16 * 1024)
    dev.write_bytes(base + size - len(data), data)
    assert dev.read_bytes(base + size - len(data), len(data)) == data
    with pytest.raises(DeviceError, match="BUS_ERROR"):
        dev.read(base + size, 1)
    # start / wait / counters: without an engine the watchdog ends the job
    dev.write_reg("WATCHDOG", 500)
    dev.start()
    with pytest.raises(JobError) as e:
        dev.wait(timeout=5)
    assert e.value.code == 1                           # ErrorCode.WATCHDOG
    before = sim_link.cycles()
    c = dev.counters()
    after = sim_link.cycles()
    assert c["job_cycles"] >= 500 and c["cycles"] > c["job_cycles"]
    dev.write_reg("WATCHDOG", 0)
    # the link's clock is the simulated clock (published every 256 cycles), and a read's
    # timeout counts it
    assert before - 256 <= c["cycles"] <= after + 256 + 8
    from hdlgen.host.sim import SIM_CYCLES_PER_S
    t0 = sim_link.cycles()
    assert sim_link.read(16, 0.02) == b""
    assert sim_link.cycles() - t0 >= 0.02 * SIM_CYCLES_PER_S


def test_sim_device_with_faults(sim_link):
    faulty = FaultyTransport(sim_link, rate=0.0, seed=3)
    dev = Device(faulty, regmap=sim_link.regmap, seed=2)
    base, _ = dev.window("scratch")
    rng = random.Random(4)
    model = [rng.getrandbits(32) for _ in range(256)]
    dev.write(base, model)
    faulty.rate = 0.15
    for _ in range(150):
        w, n = rng.randrange(240), rng.randrange(1, 17)
        if rng.random() < 0.5:
            words = [rng.getrandbits(32) for _ in range(n)]
            dev.write(base + 4 * w, words)
            model[w:w + n] = words
        else:
            assert dev.read(base + 4 * w, n) == model[w:w + n]
    faulty.rate = 0.0
    assert dev.read(base, 256) == model
    assert faulty.log.total > 10 and dev.stats["retries"] > 0


def test_sim_bit_level_uart():
    """The real UART in the loop: the host's bytes are serialised onto ``rx`` bit by bit and
    the reply decoded from ``tx`` (8 cycles per bit)."""
    from hdlgen.host import SimTransport
    cfg = AcceleratorConfig(sys_clk_mhz=24.0, uart_baud=3_000_000, scratch_bytes=4096)
    with SimTransport(cfg, bit_level=True, seed=5) as t:
        dev = Device(t, regmap=t.regmap, seed=3)
        assert dev.read_fields("SYS_CLK")["KHZ"] == 24_000
        base, _ = dev.window("scratch")
        words = [random.Random(6).getrandbits(32) for _ in range(64)]
        dev.write(base, words)
        assert dev.read(base, 64) == words
        dev.write_reg("SCRATCH", 0xCAFEF00D)
        assert dev.read_reg("SCRATCH") == 0xCAFEF00D
        assert dev.stats["retries"] == 0
    assert t.result is not None and t.result.passed


def test_serial_transport_over_a_pty():
    """SerialTransport's read/write against the model device on the other end of a pty."""
    import os
    import threading

    from hdlgen.host import SerialTransport
    master, slave = os.openpty()
    t_model, _ = model_device()
    stop = threading.Event()

    def device():
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            reply = t_model.model.feed(data)     # a frame may come in pieces
            if reply:
                os.write(master, reply)

    th = threading.Thread(target=device, daemon=True)
    th.start()
    try:
        import tty
        tty.setraw(slave)
        with SerialTransport(os.ttyname(slave), 115_200) as t:
            dev = Device(t, regmap=RM, seed=4)
            dev.write(SCRATCH, list(range(300)))
            assert dev.read(SCRATCH, 300) == list(range(300))
            assert dev.stats["retries"] == 0
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    with pytest.raises(UserError, match="cannot open serial port"):
        SerialTransport("/dev/does-not-exist")
