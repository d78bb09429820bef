"""Matrix-vector products on the SoC's matrix-vector unit (:mod:`hdlgen.soc.matvec`) from the
host, over the board's UART or the simulated SoC::

    from hdlgen.host import Device
    from hdlgen.host.matvec import MatVec

    dev = Device(transport, regmap="build/ulx3s-85F/regmap.json")   # the build's map
    mv = MatVec(dev)
    A = mv.load(W)                      # int8 matrix into the weight bank (row 0 on)
    y = mv.run(A, x)                    # int8 vector in, exact int32 W @ x out
    mv.last_cycles                      # JOB_CYCLES of that product

Shapes and buffer sizes come from the register map (``lanes``, ``macs_per_lane``, the
``mv_*`` windows); a matrix, vector or result that does not fit is refused here with a
message that names the sizes, before anything is written. A job the device refuses ends in
:class:`~hdlgen.host.device.JobError` naming the unit's code (``MV_WEIGHT_RANGE``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdlgen.blocks.membank import weight_rows
from hdlgen.errors import UserError
from hdlgen.host.device import JobError, job_error_name

__all__ = ["MatVec", "Matrix", "matvec_error_name"]


def matvec_error_name(code: int) -> str:
    """The name of a control-block ``STATUS.CODE`` for a matrix-vector job (``MV_<NAME>``)."""
    from hdlgen.soc.matvec import MatVecError
    return job_error_name(code, MatVecError, "MV_")


@dataclass(frozen=True)
class Matrix:
    """A matrix held in the weight bank: ``rows x cols`` int8 from weight row ``base`` on,
    ``out_blocks * in_blocks`` rows."""
    base: int
    rows: int
    cols: int
    out_blocks: int
    in_blocks: int

    @property
    def end(self) -> int:
        """First weight row after the matrix."""
        return self.base + self.out_blocks * self.in_blocks


class MatVec:
    """The matrix-vector unit of the device behind ``dev`` (see the module docstring).

    Parameters
    ----------
    dev : hdlgen.host.Device
        Connected with the build's register map (it must have the ``mv`` bank).
    """

    def __init__(self, dev):
        rm = dev._rm()
        try:
            rm.register("MV_BLOCKS")
        except (KeyError, UserError):
            raise UserError("the device's register map has no matrix-vector unit (bank 'mv'): "
                            "it is in the builds without --model; use that build's "
                            "regmap.json") from None
        self.dev = dev
        self.lanes = int(rm.config["lanes"])
        self.k = int(rm.config["macs_per_lane"])
        rows = rm.field
        self.weight_rows = rows("MV_ROWS", "WEIGHT").reset
        self.vector_rows = rows("MV_ROWS", "VECTOR").reset
        self.result_rows = rows("MV_RESULT_ROWS", "ROWS").reset
        self._w = rm.window("mv_weights")[0]
        self._x = rm.window("mv_vector")[0]
        self._y = rm.window("mv_result")[0]
        self.last_cycles = None

    # ---- the weight bank
    def load(self, W, base: int = 0) -> Matrix:
        """Write int8 matrix ``W`` (rows x cols) into the weight bank from row ``base`` on."""
        W = np.asarray(W)
        if W.ndim != 2 or W.size == 0:
            raise UserError(f"W must be a non-empty 2-D matrix, not shape {W.shape}")
        _check_int8("W", W)
        ob = -(-W.shape[0] // self.lanes)
        ib = -(-W.shape[1] // self.k)
        if not isinstance(base, int) or base < 0 or base + ob * ib > self.weight_rows:
            raise UserError(f"a {W.shape[0]} x {W.shape[1]} matrix takes {ob} x {ib} = "
                            f"{ob * ib} weight rows ({self.lanes} x {self.k} int8 each); from "
                            f"row {base} it does not fit the {self.weight_rows}-row weight "
                            f"bank: load it lower or split it")
        rows = weight_rows(W.astype(np.int64), self.lanes, self.k)
        nbytes = self.lanes * self.k
        data = b"".join(int(r).to_bytes(nbytes, "little") for r in rows)
        self.dev.write_bytes(self._w + base * nbytes, data)
        return Matrix(base, W.shape[0], W.shape[1], ob, ib)

    # ---- one product
    def run(self, A: Matrix, x, *, x_base: int = 0, y_base: int = 0,
            timeout: float = 30.0) -> np.ndarray:
        """``A @ x`` for an int8 vector ``x`` of ``A.cols`` elements: int32 results (int64
        array) of ``A.rows`` elements. ``x`` goes to the vector buffer from row ``x_base``,
        the results to the result buffer from row ``y_base``."""
        x = np.asarray(x)
        if x.shape != (A.cols,):
            raise UserError(f"x has shape {x.shape}; the matrix needs ({A.cols},)")
        _check_int8("x", x)
        if x_base < 0 or x_base + A.in_blocks > self.vector_rows:
            raise UserError(f"{A.cols} elements take {A.in_blocks} vector rows; from row "
                            f"{x_base} they do not fit the {self.vector_rows}-row buffer")
        if y_base < 0 or y_base + A.out_blocks > self.result_rows:
            raise UserError(f"{A.rows} results take {A.out_blocks} result rows; from row "
                            f"{y_base} they do not fit the {self.result_rows}-row buffer")
        padded = np.zeros(A.in_blocks * self.k, dtype=np.int64)
        padded[:A.cols] = x
        self.dev.write_bytes(self._x + x_base * self.k,
                             (padded & 0xFF).astype(np.uint8).tobytes())
        self.start(A, x_base=x_base, y_base=y_base)
        self.wait(timeout)
        return self.read_results(A.rows, y_base=y_base)

    def start(self, A: Matrix, *, x_base: int = 0, y_base: int = 0) -> None:
        """Set the job registers for ``A`` and start it (the vector already in the buffer)."""
        dev = self.dev
        dev.write_reg("MV_W_BASE", ROW=A.base)
        dev.write_reg("MV_X_BASE", ROW=x_base)
        dev.write_reg("MV_Y_BASE", ROW=y_base)
        dev.write_reg("MV_BLOCKS", OUT_BLOCKS=A.out_blocks, IN_BLOCKS=A.in_blocks)
        dev.start()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the job; a device error raises :class:`JobError` with the unit's name."""
        try:
            self.dev.wait(timeout)
        except JobError as e:
            raise JobError(e.code, matvec_error_name(e.code)) from None
        self.last_cycles = self.dev.read_reg("JOB_CYCLES")

    def read_results(self, n: int, *, y_base: int = 0) -> np.ndarray:
        """The first ``n`` results from result row ``y_base`` on (signed int32)."""
        rows = -(-n // self.lanes)
        raw = self.dev.read_bytes(self._y + y_base * 4 * self.lanes, rows * 4 * self.lanes)
        return np.frombuffer(raw, dtype="<i4")[:n].astype(np.int64)


def _check_int8(name, a):
    if a.dtype.kind not in "iu":
        raise UserError(f"{name} must hold integers (int8 values), not {a.dtype}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise UserError(f"{name} holds values outside int8 [-128, 127] (min {a.min()}, "
                        f"max {a.max()}): quantize it first")
