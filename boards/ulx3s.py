"""Radiona ULX3S: Lattice ECP5 LFE5U-12F/25F/45F/85F (CABGA381, speed 6), 25 MHz
oscillator, FT231X USB-UART (up to 3 Mbaud), 32 MB SDR SDRAM, 8 LEDs."""

from amaranth_boards import ulx3s

from hdlgen.config import AcceleratorConfig
from hdlgen.flow import ECP5_DEVICES

from . import Board, BoardDevice

# The MAC array takes most DSPs; the rest serve the requantizer, norms and softmax.
# System clock: 125 MHz on the 85F and 45F. The bare SoC (host link, bus, control block,
# scratch RAM) placed at 146-158 MHz on the 85F, 149-157 MHz on the 45F and 155-166 MHz on the
# 25F/12F over nextpnr seeds 1-3. With the matrix-vector unit (the default build since),
# `hdlgen build --board ulx3s --seed N` routes at 127.8 / 143.1 / 153.7 / 140.5 / 141.2 MHz
# on the 85F (seeds 1-5); on the 12F (4 x 4 MACs) a 125 MHz target gave 109.5 MHz
# (`--device 12F --freq 125 --seed 1 --allow-timing-failure`, session 7), its 100 MHz default
# 150.5 MHz (seed 1), so the 12F/25F default to 100 MHz. The 45F has not been built with the
# unit. A transformer engine (`--model`) has its own multipliers besides the array (19 for
# random:llama: range checks, softmax, requantizer, norms, RoPE, SwiGLU), so on the 45F the
# default 8 x 8 array does not fit beside them (83 of 72: refused after elaboration) and
# `--lanes 4` does (51).
_SYS_CLK_MHZ = 125.0
_SMALL_SYS_CLK_MHZ = 100.0
_85F = AcceleratorConfig(lanes=16, macs_per_lane=8, context_length=256, sys_clk_mhz=_SYS_CLK_MHZ)
_45F = AcceleratorConfig(lanes=8, macs_per_lane=8, context_length=256, sys_clk_mhz=_SYS_CLK_MHZ)
_25F = AcceleratorConfig(lanes=4, macs_per_lane=4, context_length=128,
                         sys_clk_mhz=_SMALL_SYS_CLK_MHZ)

BOARD = Board(
    name="ulx3s",
    description="Radiona ULX3S (ECP5, FT231X USB-UART, 32 MB SDRAM)",
    devices={
        "12F": BoardDevice(ECP5_DEVICES["12F"], ulx3s.ULX3S_12F_Platform, _25F),
        "25F": BoardDevice(ECP5_DEVICES["25F"], ulx3s.ULX3S_25F_Platform, _25F),
        "45F": BoardDevice(ECP5_DEVICES["45F"], ulx3s.ULX3S_45F_Platform, _45F),
        "85F": BoardDevice(ECP5_DEVICES["85F"], ulx3s.ULX3S_85F_Platform, _85F),
    },
    default_device="85F",
    clk_resource="clk25",
    clk_in_mhz=25.0,
    uart_resource="uart",
    max_baud=3_000_000,
    led_count=8,
    package="CABGA381",
    speed=6,
)
