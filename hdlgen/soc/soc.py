"""The accelerator SoC: host link (UART -> bridge) on a Wishbone bus with the register bank
and on-chip memory.

Address map (byte addresses; the register map lists the registers inside CSR_BASE):

============  ==========================  ======================================
base          window                      what
============  ==========================  ======================================
CSR_BASE      MEM's control/CSR bank      identification, control, counters
LINK_BASE     :class:`LinkStatus`         host-link frame counters
SCRATCH_BASE  ``config.scratch_bytes``    scratch memory (activations, buffers)
============  ==========================  ======================================
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import BlockRAM
from hdlgen.soc import wishbone

__all__ = ["WishboneRAM"]


class WishboneRAM(wiring.Component):
    """Block RAM as a Wishbone subordinate: 32-bit words, byte enables, every access acked
    three cycles after it starts (the RAM's two cycles of read latency, registered).

    Parameters
    ----------
    depth : int
        Words; a power of two (the bus window is ``4 * depth`` bytes).
    init : list of int
        Initial contents.

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width=log2(depth)))
    """

    def __init__(self, depth: int, init=None):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2 words, not {depth!r}")
        self._depth = depth
        self._init = init
        super().__init__({"bus": In(wishbone.Signature(addr_width=(depth - 1).bit_length()))})

    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = BlockRAM(width=32, depth=self._depth, granularity=8,
                                          ports=("rw", "r"), init=self._init)
        bus = self.bus
        busy = Signal()
        p1 = Signal()
        req = bus.cyc & bus.stb & ~busy
        m.d.comb += [
            ram.a.addr.eq(bus.adr), ram.a.en.eq(req), ram.a.wdata.eq(bus.dat_w),
            ram.a.we.eq(bus.sel & bus.we.replicate(4)),
            bus.dat_r.eq(ram.a.rdata),
        ]
        m.d.sync += [p1.eq(req), bus.ack.eq(p1)]
        with m.If(req):
            m.d.sync += busy.eq(1)
        with m.Elif(bus.ack):
            m.d.sync += busy.eq(0)
        with m.If(~bus.cyc):     # abandoned cycle: forget it (the write, if any, is done)
            m.d.sync += [busy.eq(0), p1.eq(0), bus.ack.eq(0)]
        return m
