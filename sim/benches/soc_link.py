"""cocotb module behind :class:`hdlgen.host.sim.SimTransport`: a byte pump between a TCP
socket on 127.0.0.1 (``HDLGEN_LINK_PORT``) and the simulated SoC.

``HDLGEN_PARAMS``: ``{"bit_level": false}`` drives the SoC's byte streams ``rx_byte`` /
``tx_byte`` directly (one protocol byte per cycle); ``{"bit_level": true, "divisor": N}``
drives the UART pin ``rx`` bit by bit and decodes ``tx`` (8N1, ``N`` cycles per bit), so the
real UART is in the loop. The test ends when the host closes the socket.

While bytes move, the byte pump acts every cycle; when the link is quiet it lets the
simulator run in chunks of cycles and polls the socket between them (sleeping briefly when
it has been quiet for long, so an idle simulation does not burn a CPU).

``HDLGEN_LINK_CLOCK`` (optional): a file of 8 bytes into which the bench writes its cycle
count (little-endian) every :data:`CLOCK_CYCLES` cycles; :meth:`SimTransport.clock
<hdlgen.host.sim.SimTransport.clock>` reads it, so the host's timeouts count simulated time.
"""

import mmap
import os
import select
import socket
import struct

import cocotb
from cocotb.triggers import Event, FallingEdge, Timer

from sim.cocotb_kit import bench_params, start

PERIOD_NS = 10
ACTIVE_CYCLES = 16        # stay cycle-by-cycle this long after the last byte moved
FLUSH_QUIET = 8           # send collected output after this many cycles without a new byte
CHUNK_CYCLES = 32         # cycles per step when quiet
DEEP_QUIET = 20000        # quiet cycles after which the pump sleeps on the socket
SLEEP_S = 0.002
CLOCK_CYCLES = 256        # how often the cycle count is published


def _poll(sock, wait_s):
    """New bytes from the host; b"" if none; None at end of stream."""
    r, _, _ = select.select([sock], [], [], wait_s)
    if not r:
        return b""
    try:
        data = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return b""
    except (ConnectionResetError, OSError):
        return None
    return data or None


@cocotb.test()
async def link(dut):
    p = bench_params()
    sock = socket.create_connection(("127.0.0.1", int(os.environ["HDLGEN_LINK_PORT"])))
    sock.setblocking(False)
    if p.get("bit_level"):
        dut.rx.value = 1
    await start(dut, period_ns=PERIOD_NS)
    if os.environ.get("HDLGEN_LINK_CLOCK"):
        cocotb.start_soon(_publish_cycles(os.environ["HDLGEN_LINK_CLOCK"]))
    try:
        if p.get("bit_level"):
            await _bit_pump(dut, sock, int(p["divisor"]))
        else:
            await _byte_pump(dut, sock)
    finally:
        sock.close()


async def _publish_cycles(path):
    """Write the cycle count into the host's clock file every CLOCK_CYCLES cycles."""
    with open(path, "r+b") as f:
        clock = mmap.mmap(f.fileno(), 8)
    cycles = 0
    while True:
        await Timer(CLOCK_CYCLES * PERIOD_NS, unit="ns")
        cycles += CLOCK_CYCLES
        struct.pack_into("<Q", clock, 0, cycles)


def _send(sock, out: bytearray):
    if out:
        sock.setblocking(True)
        sock.sendall(bytes(out))
        sock.setblocking(False)
        out.clear()


async def _byte_pump(dut, sock):
    inq, out = bytearray(), bytearray()
    quiet = polls = 0
    rx_valid, rx_payload, rx_ready = dut.rx_byte__valid, dut.rx_byte__payload, dut.rx_byte__ready
    tx_valid, tx_payload, tx_ready = dut.tx_byte__valid, dut.tx_byte__payload, dut.tx_byte__ready
    rx_valid.value = 0
    tx_ready.value = 0
    cur = [0, 0]          # what rx_valid and tx_ready were last set to
    await FallingEdge(dut.clk)
    while True:
        if not inq and quiet >= ACTIVE_CYCLES:
            # Quiet: output held (ready low), run a chunk of cycles, look at the socket.
            _send(sock, out)
            if cur[0] or cur[1]:
                rx_valid.value = tx_ready.value = 0
                cur[:] = [0, 0]
            data = _poll(sock, SLEEP_S if quiet >= DEEP_QUIET else 0)
            if data is None:
                return
            if data:
                inq += data
                quiet = 0
                continue
            await Timer(CHUNK_CYCLES * PERIOD_NS, unit="ns")
            await FallingEdge(dut.clk)
            quiet += CHUNK_CYCLES
            if int(tx_valid.value):
                quiet = 0
            continue
        # Active: one trigger per cycle. At the falling edge the DUT's outputs are settled
        # and stay so until the rising edge: ``tx_byte.valid``/``payload`` are registers and
        # the bridge's ``rx_byte.ready`` depends only on its state, not on ``valid``. So the
        # handshakes of the coming rising edge are decided here, with this cycle's inputs.
        polls += 1
        if not inq and polls % 8 == 0:
            data = _poll(sock, 0)
            if data is None:
                return
            inq += data
        moved = False
        ready = int(rx_ready.value)
        if int(tx_valid.value):
            out.append(int(tx_payload.value))
            moved = True
        if not cur[1]:
            tx_ready.value = cur[1] = 1
        if inq:
            if not cur[0]:
                rx_valid.value = cur[0] = 1
            rx_payload.value = inq[0]
            if ready:
                del inq[0]
                moved = True
        elif cur[0]:
            rx_valid.value = cur[0] = 0
        await FallingEdge(dut.clk)
        quiet = 0 if moved else quiet + 1
        if quiet == FLUSH_QUIET or len(out) >= 4096:
            _send(sock, out)


async def _bit_pump(dut, sock, div):
    bit_ns = div * PERIOD_NS
    inq, out = bytearray(), bytearray()
    have_input = Event()
    done = Event()
    state = {"quiet": 0}

    async def line_driver():
        while True:
            if not inq:
                have_input.clear()
                await have_input.wait()
                continue
            b = inq.pop(0)
            for level in [0] + [(b >> k) & 1 for k in range(8)] + [1]:
                dut.rx.value = level
                await Timer(bit_ns, unit="ns")
            state["quiet"] = 0

    async def line_monitor():
        while True:
            await FallingEdge(dut.tx)
            await Timer(bit_ns // 2, unit="ns")
            if int(dut.tx.value):
                continue
            byte = 0
            for k in range(8):
                await Timer(bit_ns, unit="ns")
                byte |= int(dut.tx.value) << k
            await Timer(bit_ns, unit="ns")
            if int(dut.tx.value):          # stop bit; a framing error loses the byte
                out.append(byte)
            state["quiet"] = 0

    async def poller():
        while True:
            quiet = state["quiet"]
            _send(sock, out)
            data = _poll(sock, SLEEP_S if quiet >= DEEP_QUIET and not inq else 0)
            if data is None:
                done.set()
                return
            if data:
                inq.extend(data)
                have_input.set()
                state["quiet"] = 0
            await Timer(max(CHUNK_CYCLES, 2 * div) * PERIOD_NS, unit="ns")
            state["quiet"] += max(CHUNK_CYCLES, 2 * div)

    cocotb.start_soon(line_driver())
    cocotb.start_soon(line_monitor())
    cocotb.start_soon(poller())
    await done.wait()
