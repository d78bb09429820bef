"""The one immutable configuration object of a generated accelerator.

Every field has a default; units are in the names; derived values are properties computed
from the fields; :meth:`AcceleratorConfig.check` validates invariants with messages that say
what is wrong and how to fix it. Presets are made with :func:`dataclasses.replace`. Hardware
code reads the config and never re-derives it.
"""

from dataclasses import dataclass, fields, replace

from hdlgen.errors import UserError

__all__ = ["AcceleratorConfig"]


@dataclass(frozen=True)
class AcceleratorConfig:
    """Shape of one generated accelerator.

    Attributes
    ----------
    lanes : int
        Output rows the MAC array computes in parallel (one dot product per lane).
    macs_per_lane : int
        int8 x int8 products per lane per cycle (the row-slice width). ``lanes * macs_per_lane``
        MULT18X18D blocks are used.
    acc_width : int
        Accumulator width of the MAC array, bits.
    max_dot_length : int
        Longest dot product (model dimension or hidden dimension) the array accepts; checked
        against ``acc_width``.
    context_length : int
        KV-cache capacity in positions.
    sys_clk_mhz : float
        System clock made by the PLL from the board's oscillator.
    uart_baud : int
        Host link baud rate.
    scratch_bytes : int
        Host-visible on-chip scratch memory (activations, test buffers), bytes.
    """
    lanes: int = 16
    macs_per_lane: int = 8
    acc_width: int = 32
    max_dot_length: int = 4096
    context_length: int = 256
    sys_clk_mhz: float = 125.0
    uart_baud: int = 3_000_000
    scratch_bytes: int = 64 * 1024

    @property
    def macs(self) -> int:
        """Total MACs (= MULT18X18D blocks) in the array."""
        return self.lanes * self.macs_per_lane

    @property
    def sys_clk_hz(self) -> int:
        return round(self.sys_clk_mhz * 1e6)

    def check(self) -> "AcceleratorConfig":
        """Validate invariants; raises :class:`UserError` naming the field and value."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and v <= 0:
                raise UserError(f"config field {f.name}={v!r} must be positive")
        need = 16 + (self.max_dot_length - 1).bit_length()
        if self.acc_width < need:
            raise UserError(
                f"acc_width={self.acc_width} is too narrow for max_dot_length={self.max_dot_length}: "
                f"int8 x int8 dot products of that length need {need} bits; raise acc_width or "
                f"lower max_dot_length")
        if self.scratch_bytes % 4:
            raise UserError(f"scratch_bytes={self.scratch_bytes} must be a multiple of 4 (32-bit bus words)")
        return self

    def replace(self, **changes) -> "AcceleratorConfig":
        return replace(self, **changes).check()
