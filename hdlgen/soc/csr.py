"""Control/status registers: field and register definitions, and a Wishbone CSR bank.

The objects here are the *one* definition of every register: the gateware
(:class:`CSRBank`) is built from them, and :mod:`hdlgen.soc.regmap` turns the very same
objects into ``regmap.json``, the C header, the Markdown reference and the host accessor.

Definitions::

    from hdlgen.soc.csr import Access, Field, Register, CSRBank

    regs = [
        Register("SCRATCH", 0x00, [Field("VALUE", 32, Access.RW)], "Free read/write word."),
        Register("STATUS", 0x04, [Field("BUSY", 1, Access.RO),
                                  Field("DONE", 1, Access.W1C),
                                  Field("CODE", 8, Access.RO, offset=8)], "Job status."),
    ]
    bank = CSRBank(regs, addr_width=4)          # 16 words: bytes 0x00..0x3f

Access types (:class:`Access`):

``RW``   read/write; the gateware reads the value at ``bank.regs.<reg>.<field>.data``.
``RO``   read-only; the gateware drives ``.data`` (an input of the bank).
``W1C``  status bit(s) set by the gateware with a one-cycle ``.set`` pulse (per bit), cleared
         by the host writing 1; value at ``.data``.
``WO``   write-only command: a host write (of its bytes) pulses ``.stb`` for one cycle with the written
         value on ``.data``; reads return 0.

A register defined with ``read_strobe=True`` also has ``bank.regs.<reg>.rd_stb``, high
(combinationally) in the cycle whose clock edge samples the register for a host read: latch
at that edge, e.g. the high word of a 64-bit counter when the low word is read. Register and field names are upper case in the definition and
lower case in the gateware (``bank.regs.status.done.set``).

Bus behaviour (:class:`CSRBank`): 32-bit Wishbone B4 subordinate, byte selects honoured
(only the bits of selected bytes are written); an access is answered three cycles after it
starts (the first registers a one-hot register select, the second writes, or reads into
partial words of four registers each, the third combines them and answers), so no address
decode and no wide mux sits on one path; an access to an offset with no register ends with
``err``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.soc import wishbone

__all__ = ["Access", "Field", "Register", "CSRBank", "field_signature"]


class Access(enum.Enum, shape=3):
    """Host-side access type of a field."""
    RW = 0
    RO = 1
    W1C = 2
    WO = 3

    @property
    def label(self) -> str:
        return self.name


class Field:
    """A bit field of a 32-bit register.

    Parameters
    ----------
    name : str
        Upper-case identifier, unique in its register.
    width : int
        Bits, 1..32.
    access : Access
    reset : int
        Value after reset (RW, W1C) or the constant value of an RO field that the gateware
        leaves undriven.
    offset : int or None
        Bit position of the LSB; ``None`` places the field right after the previous one.
    desc : str
        One sentence for the documentation.
    """

    def __init__(self, name: str, width: int, access: Access, *, reset: int = 0,
                 offset: int | None = None, desc: str = ""):
        if not (isinstance(name, str) and name.isidentifier() and name.upper() == name):
            raise ValueError(f"field name {name!r} must be an upper-case identifier")
        if not isinstance(width, int) or not 1 <= width <= 32:
            raise ValueError(f"field {name}: width={width!r} must be an integer in 1..32")
        if not isinstance(access, Access):
            raise TypeError(f"field {name}: access must be an Access, not {access!r}")
        if not isinstance(reset, int) or not 0 <= reset < (1 << width):
            raise ValueError(f"field {name}: reset={reset!r} does not fit in {width} bits")
        self.name, self.width, self.access, self.reset = name, width, access, reset
        self.offset = offset
        self.desc = desc

    @property
    def mask(self) -> int:
        """Mask of the field in the register (shifted)."""
        return ((1 << self.width) - 1) << self.offset

    def __repr__(self):
        return f"Field({self.name!r}, {self.width}, Access.{self.access.name}, offset={self.offset})"


class Register:
    """A 32-bit register at a byte ``offset`` inside its CSR bank.

    Parameters
    ----------
    name : str
        Upper-case identifier, unique in the whole register map.
    offset : int
        Byte offset in the bank, a multiple of 4.
    fields : list of Field
        LSB first; fields without an explicit offset are packed after the previous one.
    desc : str
    read_strobe : bool
        Give the gateware a ``rd_stb`` pulse when the host reads this register.
    """

    def __init__(self, name: str, offset: int, fields, desc: str = "", *, read_strobe: bool = False):
        if not (isinstance(name, str) and name.isidentifier() and name.upper() == name):
            raise ValueError(f"register name {name!r} must be an upper-case identifier")
        if not isinstance(offset, int) or offset < 0 or offset % 4:
            raise ValueError(f"register {name}: offset={offset!r} must be a non-negative multiple of 4")
        self.name, self.offset, self.desc, self.read_strobe = name, offset, desc, read_strobe
        self.fields: list[Field] = []
        pos = 0
        used = 0
        for f in fields:
            if f.offset is None:
                f.offset = pos
            if f.offset + f.width > 32:
                raise ValueError(f"register {name}: field {f.name} at bit {f.offset} with width "
                                 f"{f.width} runs past bit 31")
            if used & f.mask:
                raise ValueError(f"register {name}: field {f.name} overlaps another field")
            if f.name in (g.name for g in self.fields) or f.name == "RD_STB":
                raise ValueError(f"register {name}: field name {f.name} is used twice or reserved")
            used |= f.mask
            pos = f.offset + f.width
            self.fields.append(f)
        if not self.fields:
            raise ValueError(f"register {name} has no fields")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name.upper():
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; it has "
                       f"{', '.join(f.name for f in self.fields)}")

    @property
    def reset(self) -> int:
        return sum(f.reset << f.offset for f in self.fields if f.access != Access.WO)

    def __repr__(self):
        return f"Register({self.name!r}, {self.offset:#x}, {self.fields!r})"


def field_signature(f: Field) -> wiring.Signature:
    """Gateware-side port of one field, seen from the bank (``Out`` = driven by the bank)."""
    if f.access == Access.RW:
        return wiring.Signature({"data": Out(f.width)})
    if f.access == Access.RO:
        return wiring.Signature({"data": In(f.width, init=f.reset)})
    if f.access == Access.W1C:
        return wiring.Signature({"set": In(f.width), "data": Out(f.width, init=f.reset)})
    return wiring.Signature({"data": Out(f.width), "stb": Out(1)})


def _register_signature(r: Register) -> wiring.Signature:
    members = {f.name.lower(): Out(field_signature(f)) for f in r.fields}
    if r.read_strobe:
        members["rd_stb"] = Out(1)
    return wiring.Signature(members)


class CSRBank(wiring.Component):
    """Wishbone subordinate holding a list of :class:`Register` (see the module docstring).

    Parameters
    ----------
    registers : list of Register
    addr_width : int or None
        Word-address width of the bus port; default: the smallest that holds every register.

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width, 32))
    regs : Out(...)
        One member per register (lower-case name), one per field inside it.
    """

    def __init__(self, registers, *, addr_width: int | None = None):
        try:
            self._setup(registers, addr_width)
        except Exception:
            self._MustUse__silence = True   # a refused bank is not an unused one
            raise

    def _setup(self, registers, addr_width):
        registers = list(registers)
        seen = {}
        for r in registers:
            if r.name in seen or r.offset in seen.values():
                raise ValueError(f"register {r.name} at {r.offset:#x}: name or offset used twice")
            seen[r.name] = r.offset
        need = max(1, (max(r.offset for r in registers) // 4).bit_length())
        if addr_width is None:
            addr_width = need
        elif addr_width < need:
            raise ValueError(f"addr_width={addr_width} is too small for a register at "
                             f"{max(r.offset for r in registers):#x}; use at least {need}")
        self._registers = registers
        self._addr_width = addr_width
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=addr_width, data_width=32)),
            "regs": Out(wiring.Signature({r.name.lower(): Out(_register_signature(r))
                                          for r in registers})),
        })

    @property
    def registers(self) -> list[Register]:
        return list(self._registers)

    @property
    def size_bytes(self) -> int:
        return 4 << self._addr_width

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        ack = Signal()
        err = Signal()
        dat_r = Signal(32)
        m.d.comb += [bus.ack.eq(ack), bus.err.eq(err), bus.dat_r.eq(dat_r)]
        m.d.sync += [ack.eq(0), err.eq(0)]

        # Three-stage access: the request cycle registers a one-hot register select, the
        # write data and mask; the next cycle writes, or reads partial words (AND-OR over the
        # one-hot select, no address decode on the path); the third answers.
        n = len(self._registers)
        stage = Signal()
        stage2 = Signal()
        hits = Signal(n)
        any_hit = Signal()
        we_r = Signal()
        wd_r = Signal(32)
        wmask = Signal(32)
        req = bus.cyc & bus.stb & ~ack & ~err & ~stage & ~stage2
        m.d.sync += [stage.eq(req), stage2.eq(stage)]
        # The request is registered every cycle, without a clock enable: the initiator holds
        # it until the answer, so the registers are stable from ``stage`` to the answer.
        offsets = {r.offset // 4 for r in self._registers}
        any_hit_now = Signal()
        with m.Switch(bus.adr):       # a truth table of the address, not a sum of compares
            with m.Case(*sorted(offsets)):
                m.d.comb += any_hit_now.eq(1)
        m.d.sync += [we_r.eq(bus.we), wd_r.eq(bus.dat_w), any_hit.eq(any_hit_now)]
        for i in range(4):
            m.d.sync += wmask[8 * i:8 * i + 8].eq(bus.sel[i].replicate(8))
        for i, r in enumerate(self._registers):
            m.d.sync += hits[i].eq(bus.adr == r.offset // 4)
        do_write = stage & we_r
        do_read = stage & ~we_r          # (only the read strobes use it)

        # Storage and per-field behaviour.
        values = {}
        for i, r in enumerate(self._registers):
            port = getattr(self.regs, r.name.lower())
            hit = hits[i]
            if r.read_strobe:
                m.d.comb += port.rd_stb.eq(do_read & hit)
            word = []
            for f in r.fields:
                fp = getattr(port, f.name.lower())
                sl = slice(f.offset, f.offset + f.width)
                mask, wd = wmask[sl], wd_r[sl]
                if f.access == Access.RW:
                    reg = Signal(f.width, init=f.reset, name=f"{r.name.lower()}_{f.name.lower()}")
                    with m.If(do_write & hit):
                        m.d.sync += reg.eq((reg & ~mask) | (wd & mask))
                    m.d.comb += fp.data.eq(reg)
                    word.append((f, reg))
                elif f.access == Access.RO:
                    word.append((f, fp.data))
                elif f.access == Access.W1C:
                    reg = Signal(f.width, init=f.reset, name=f"{r.name.lower()}_{f.name.lower()}")
                    clear = Signal(f.width, name=f"{r.name.lower()}_{f.name.lower()}_clr")
                    m.d.comb += clear.eq(Const(0, f.width))
                    with m.If(do_write & hit):
                        m.d.comb += clear.eq(wd & mask)
                    m.d.sync += reg.eq((reg & ~clear) | fp.set)
                    m.d.comb += fp.data.eq(reg)
                    word.append((f, reg))
                else:  # WO
                    stb = Signal(name=f"{r.name.lower()}_{f.name.lower()}_stb")
                    data = Signal(f.width, name=f"{r.name.lower()}_{f.name.lower()}_wdata")
                    m.d.sync += stb.eq(do_write & hit & mask.any())
                    with m.If(do_write & hit):
                        m.d.sync += data.eq(wd)
                    m.d.comb += [fp.stb.eq(stb), fp.data.eq(data)]
            values[r.name] = word

        # Read mux in two registered levels: groups of four registers, then the groups.
        groups = []
        for g in range(0, n, 4):
            part = Signal(32, name=f"rd_part{g // 4}")
            acc = Const(0, 32)
            for i in range(g, min(g + 4, n)):
                r = self._registers[i]
                word = Signal(32, name=f"rd_{r.name.lower()}")
                for f, sig in values[r.name]:
                    m.d.comb += word[f.offset:f.offset + f.width].eq(sig)
                acc = acc | (word & hits[i].replicate(32))
            m.d.sync += part.eq(acc)     # every cycle: the value sampled at the end of ``stage``
            groups.append(part)           # is the one answered
        total = Const(0, 32)
        for part in groups:
            total = total | part
        m.d.sync += dat_r.eq(total)
        with m.If(stage2):
            m.d.sync += [ack.eq(any_hit), err.eq(~any_hit)]
        return m
