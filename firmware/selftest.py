"""Device self-test, written against the host API only (:mod:`hdlgen.host`).

Runs on the board (serial) and on the simulated SoC alike; ``python -m hdlgen selftest``
sets up the transport and calls :func:`selftest`. Standalone::

    python firmware/selftest.py --port /dev/ttyUSB0 --regmap build/regmap.json

Three parts:

1. registers -- identity (checked on connect), configuration registers against the register
   map, read/write patterns on ``SCRATCH``, the cycle counter running, a job ended by the
   watchdog (start / wait / counters), or on a build with the matrix-vector unit a product
   checked against NumPy with its busy counter, and a bus error reported for an unmapped
   address;
2. memory -- ``memory_bytes`` of random data written to the scratch window in bursts and
   read back (several passes if the window is smaller);
3. frames -- ``frames`` random transactions (burst writes and reads in a region of the
   scratch memory, register accesses, pings) while the transport faults a fraction of the
   frames on the wire. A host-side model of the region tracks every write the device
   acknowledged; a read that disagrees with it, or a final read-back that does, is an
   *undetected* corruption. A fault is *recovered* when its transaction still completed.
"""

from __future__ import annotations

import random
import time

from hdlgen.host import DeviceError, JobError, LinkError

__all__ = ["selftest", "check_registers", "check_memory", "check_frames"]

UNMAPPED = 0xFFFF_FFF0


def check_registers(dev) -> list[str]:
    """Register checks; returns the problems found (empty: pass)."""
    problems = []
    rm = dev.regmap
    cfg = rm.config

    def expect(what, got, want):
        if got != want:
            problems.append(f"{what}: read {got!r}, expected {want!r}")

    shape = dev.read_fields("SHAPE")
    expect("SHAPE.LANES", shape["LANES"], cfg["lanes"])
    expect("SHAPE.MACS_PER_LANE", shape["MACS_PER_LANE"], cfg["macs_per_lane"])
    expect("SHAPE.ACC_WIDTH", shape["ACC_WIDTH"], cfg["acc_width"])
    expect("CONTEXT.LENGTH", dev.read_fields("CONTEXT")["LENGTH"], cfg["context_length"])
    expect("SYS_CLK.KHZ", dev.read_fields("SYS_CLK")["KHZ"], round(cfg["sys_clk_mhz"] * 1000))

    patterns = [0, 0xFFFFFFFF, 0xA5A5A5A5, 0x5A5A5A5A] + [1 << k for k in range(32)]
    for v in patterns:
        dev.write_reg("SCRATCH", v)
        expect(f"SCRATCH after writing {v:#010x}", dev.read_reg("SCRATCH"), v)

    c0 = dev.read_reg("CYCLES_LO")
    c1 = dev.read_reg("CYCLES_LO")
    if (c1 - c0) & 0xFFFFFFFF == 0:
        problems.append(f"CYCLES_LO does not count ({c0} then {c1})")

    st = dev.read_fields("STATUS")
    if st["BUSY"]:
        problems.append("STATUS.BUSY is set before any job was started")

    if any(r.name == "MV_BLOCKS" for r in rm.registers):
        # the build's job is the matrix-vector unit's: a real product, checked exactly
        problems += check_matvec(dev)
    else:
        problems += _check_watchdog_job(dev)

    try:
        dev.read(UNMAPPED, 1)
        problems.append(f"reading unmapped address {UNMAPPED:#x} did not fail")
    except DeviceError as e:
        if e.status.name != "BUS_ERROR":
            problems.append(f"reading unmapped address {UNMAPPED:#x} gave {e.status.name}, "
                            f"expected BUS_ERROR")
    return problems


def check_matvec(dev, seed: int = 1) -> list[str]:
    """One product on the matrix-vector unit (a build without ``--model``) against NumPy,
    and the busy counter: one weight row per cycle."""
    import numpy as np

    from hdlgen.host.matvec import MatVec
    problems = []
    mv = MatVec(dev)
    rng = np.random.default_rng(seed)
    W = rng.integers(-128, 128, (3 * mv.lanes - 1, 5 * mv.k + 3))
    x = rng.integers(-128, 128, W.shape[1])
    try:
        A = mv.load(W)
        y = mv.run(A, x, timeout=5.0)
    except LinkError as e:
        return [f"matrix-vector job: {e}"]
    want = W @ x
    if not np.array_equal(y, want):
        bad = int(np.flatnonzero(y != want)[0])
        problems.append(f"matrix-vector result {bad}: read {int(y[bad])}, expected {int(want[bad])}")
    busy = dev.read_reg("BUSY_MAC_ARRAY")
    if busy != A.out_blocks * A.in_blocks:
        problems.append(f"BUSY_MAC_ARRAY {busy}: the unit should feed the array for "
                        f"{A.out_blocks * A.in_blocks} cycles (one weight row per cycle)")
    dev.write_reg("STATUS", DONE=1, ERROR=1)
    return problems


def _check_watchdog_job(dev) -> list[str]:
    """A job without work (a SoC without a unit): it must end, by DONE or by the watchdog,
    and be counted."""
    problems = []
    limit = 2000
    dev.write_reg("WATCHDOG", limit)
    dev.start()
    try:
        dev.wait(timeout=5.0)
    except JobError as e:
        if e.code != 1:                                  # ErrorCode.WATCHDOG
            problems.append(f"job ended with error code {e.code}, expected the watchdog (1)")
        cnt = dev.counters()
        if cnt["job_cycles"] < limit:
            problems.append(f"watchdog fired after {cnt['job_cycles']} cycles, limit {limit}")
    except LinkError as e:
        problems.append(f"job: {e}")
    dev.write_reg("WATCHDOG", 0)
    dev.write_reg("STATUS", DONE=1, ERROR=1)
    return problems


def check_memory(dev, nbytes: int, rng: random.Random) -> tuple[int, int]:
    """Write ``nbytes`` of random data to the scratch window and read it back (bursts).
    Returns (bytes round-tripped, words that differed)."""
    base, size = dev.window("scratch")
    size = min(size, dev.regmap.config["scratch_bytes"])
    done = errors = 0
    while done < nbytes:
        n = min(size, nbytes - done) & ~3
        data = rng.randbytes(n)
        dev.write_bytes(base, data)
        back = dev.read_bytes(base, n)
        errors += sum(data[i:i + 4] != back[i:i + 4] for i in range(0, n, 4))
        done += n
    return done, errors


def check_frames(dev, faulty, frames: int, rng: random.Random, *, region_words: int = 1024,
                 max_len: int = 16, progress=None) -> dict:
    """Random transactions while ``faulty`` (a :class:`~hdlgen.host.FaultyTransport`, or
    None) faults frames; see the module docstring."""
    base, size = dev.window("scratch")
    region_words = min(region_words, size // 4)
    model = [rng.getrandbits(32) for _ in range(region_words)]
    unknown = set()                     # words a failed write may or may not have changed
    scratch_reg = 0
    if faulty is not None:
        faulty.enabled = False
    dev.write(base, model)
    dev.write_reg("SCRATCH", scratch_reg)
    if faulty is not None:
        faulty.enabled = True

    corrupted = recovered = undetected = failed = 0
    for i in range(frames):
        before = faulty.log.total if faulty is not None else 0
        kind = rng.random()
        n = rng.randrange(1, max_len + 1)
        w = rng.randrange(region_words - n + 1)
        try:
            if kind < 0.4:
                words = [rng.getrandbits(32) for _ in range(n)]
                try:
                    dev.write(base + 4 * w, words)
                except LinkError:
                    unknown.update(range(w, w + n))
                    raise
                model[w:w + n] = words
                unknown.difference_update(range(w, w + n))
            elif kind < 0.8:
                got = dev.read(base + 4 * w, n)
                bad = [k for k in range(n) if w + k not in unknown and got[k] != model[w + k]]
                if bad:
                    undetected += 1
            elif kind < 0.9:
                v = rng.getrandbits(32)
                scratch_reg = None          # unknown until the write is acknowledged
                dev.write_reg("SCRATCH", v)
                scratch_reg = v
            elif kind < 0.95:
                got = dev.read_reg("SCRATCH")
                if scratch_reg is not None and got != scratch_reg:
                    undetected += 1
            else:
                dev.ping()
            ok = True
        except LinkError:
            failed += 1
            ok = False
        k = (faulty.log.total if faulty is not None else 0) - before
        corrupted += k
        if ok:
            recovered += k
        if progress is not None and (i + 1) % 1000 == 0:
            progress(i + 1, frames)

    if faulty is not None:
        faulty.enabled = False
    final = dev.read(base, region_words)
    undetected += sum(1 for k in range(region_words) if k not in unknown and final[k] != model[k])
    if scratch_reg is not None and dev.read_reg("SCRATCH") != scratch_reg:
        undetected += 1
    return {"frames": frames, "corrupted": corrupted, "undetected": undetected,
            "recovered": recovered, "failed_transactions": failed}


def selftest(dev, *, faulty=None, memory_bytes: int = 64 * 1024, frames: int = 1000,
             seed: int = 1, progress=None) -> dict:
    """The whole self-test on a connected :class:`~hdlgen.host.Device` with a register map.
    Returns the report (``passed`` says whether everything held)."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    if faulty is not None:
        faulty.enabled = False
    problems = check_registers(dev)
    mem_bytes, mem_errors = check_memory(dev, memory_bytes, rng)
    t1 = time.monotonic()
    fr = check_frames(dev, faulty, frames, rng, progress=progress)
    t2 = time.monotonic()
    report = {
        "registers": "pass" if not problems else "fail",
        "memory_bytes": mem_bytes,
        "memory_errors": mem_errors,
        **fr,
        "retries": dev.stats["retries"],
        "link": {k: v for k, v in dev.stats.items() if k != "retries"},
        "elapsed_s": {"registers_memory": round(t1 - t0, 2), "frames": round(t2 - t1, 2)},
    }
    if faulty is not None:
        report["faults"] = dict(faulty.log.counts)
    if problems:
        report["register_problems"] = problems
    report["passed"] = (not problems and mem_errors == 0 and fr["undetected"] == 0
                        and fr["recovered"] == fr["corrupted"] and fr["failed_transactions"] == 0
                        and mem_bytes >= memory_bytes)
    return report


def main(argv=None) -> int:
    import argparse
    import json

    from hdlgen.host import Device, FaultyTransport, SerialTransport

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True)
    ap.add_argument("--baud", type=int, default=3_000_000)
    ap.add_argument("--regmap", required=True, help="the build's regmap.json")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--corrupt-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    faulty = FaultyTransport(SerialTransport(args.port, args.baud), args.corrupt_rate, args.seed)
    with Device(faulty, regmap=args.regmap) as dev:
        report = selftest(dev, faulty=faulty, frames=args.frames, seed=args.seed)
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
