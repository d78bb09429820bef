"""Golden model of :class:`hdlgen.blocks.argmax.Argmax`: per packet, the index of the largest
logit (the first one on ties) and its value."""

import numpy as np

__all__ = ["argmax_packets"]


def argmax_packets(packets, bits=16):
    """``[(index, value), ...]``, one per packet (a non-empty sequence of signed ``bits``-bit
    integers)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = []
    for k, p in enumerate(packets):
        p = np.asarray(p, dtype=np.int64)
        if p.size == 0:
            raise ValueError(f"packet {k} is empty: a packet has at least one logit")
        if p.min() < lo or p.max() > hi:
            raise ValueError(f"packet {k} has logits outside the int{bits} range [{lo}, {hi}]")
        i = int(np.argmax(p))                     # numpy returns the first maximum
        out.append((i, int(p[i])))
    return out
