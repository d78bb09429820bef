"""Board descriptions. Each module in this package defines ``BOARD``, a :class:`Board`;
adding a board is adding one module. Look boards up with :func:`get_board`."""

import importlib
import pkgutil
from dataclasses import dataclass, field

from hdlgen.config import AcceleratorConfig
from hdlgen.errors import UserError
from hdlgen.flow import ECP5_DEVICES, ECP5Device

__all__ = ["Board", "BoardDevice", "get_board", "board_names"]


@dataclass(frozen=True)
class BoardDevice:
    """One FPGA variant of a board: its Amaranth platform class, resource budget and the
    accelerator configuration built for it by default."""
    device: ECP5Device
    platform: type
    config: AcceleratorConfig

    def check_fits(self, config: AcceleratorConfig) -> None:
        """Refuse, before any synthesis, a configuration whose MAC array needs more DSPs than
        the device has."""
        if config.macs > self.device.dsp:
            raise UserError(
                f"lanes x macs_per_lane = {config.lanes} x {config.macs_per_lane} = {config.macs} MACs "
                f"need {config.macs} MULT18X18D but the {self.device.part} has {self.device.dsp}: "
                f"use a smaller array or a larger device")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    devices: dict            # device name -> BoardDevice
    default_device: str
    clk_resource: str        # oscillator resource name in the platform
    clk_in_mhz: float
    uart_resource: str
    max_baud: int
    led_count: int
    package: str
    speed: int
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def device(self, name: str | None) -> BoardDevice:
        name = (name or self.default_device).upper()
        if name not in self.devices:
            raise UserError(f"unknown device {name!r} for board {self.name}: use one of "
                            f"{', '.join(self.devices)}")
        return self.devices[name]


def _all_boards() -> dict:
    boards = {}
    for info in pkgutil.iter_modules(__path__):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        board = getattr(mod, "BOARD", None)
        if isinstance(board, Board):
            boards[board.name] = board
    return boards


def board_names() -> list[str]:
    return sorted(_all_boards())


def get_board(name: str) -> Board:
    boards = _all_boards()
    if name not in boards:
        raise UserError(f"unknown board {name!r}: use one of {', '.join(sorted(boards))}")
    return boards[name]


def ecp5_device(name: str) -> ECP5Device:
    return ECP5_DEVICES[name]
