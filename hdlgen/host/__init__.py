"""Host API: drive an hdlgen device over the board's UART or the simulated SoC, same code.

::

    from hdlgen.host import Device, SerialTransport, SimTransport
    dev = Device(SerialTransport("/dev/ttyUSB0", 3_000_000), regmap="build/regmap.json")
    dev.read_reg("ID"); dev.write_bytes(0x10000, data); dev.start(); dev.wait(2.0)

See :mod:`hdlgen.host.device` (the API), :mod:`hdlgen.host.transport` (serial transport,
fault injection) and :mod:`hdlgen.host.sim` (the simulator transport).
"""

from hdlgen.host.device import (Device, DeviceError, JobError, JobTimeout, LinkError, LinkTimeout,
                                RetriesExhausted)
from hdlgen.host.transport import FAULT_KINDS, FaultyTransport, SerialTransport, Transport

__all__ = ["Device", "DeviceError", "JobError", "JobTimeout", "LinkError", "LinkTimeout",
           "RetriesExhausted", "Transport", "SerialTransport", "FaultyTransport", "FAULT_KINDS",
           "SimTransport"]


def __getattr__(name):
    # SimTransport pulls in the gateware and the simulator harness: import it on demand.
    if name == "SimTransport":
        from hdlgen.host.sim import SimTransport
        return SimTransport
    raise AttributeError(f"module 'hdlgen.host' has no attribute {name!r}")
