"""Sums of 16-bit floats that travel as 16 bits: the ``"sum_fp16"`` and ``"sum_bf16"`` allreduces.

NumPy has no bfloat16, so a bfloat16 array is carried as the ``uint16`` bit patterns (the upper
half of a float32's bits); ``float_to_bf16_bits`` and ``bf16_bits_to_float32`` convert.

Every backend combines two ranks' contributions with the same function below: both operands are
widened exactly to float32, added, and the sum is rounded once to 16 bits (round to nearest,
ties to even). float32 has more than 2p+2 significand bits for both 16-bit formats (p = 11 and
8), so this double rounding is innocuous: each pairwise sum is the correctly rounded 16-bit sum,
and it does not depend on operand order. With more than two ranks the partial sums are rounded
too, in an order the backend chooses (MPI's algorithm; rank order on the threads backend).
"""

from __future__ import annotations

import numpy as np

from ...backend import array_module

_BF16_QUIET_BIT = 0x0040
"""Set in every bfloat16 NaN made here: a signalling NaN's payload may lie entirely in the 16
dropped bits, and truncating it would leave infinity."""


def float_to_bf16_bits(x):
    """bfloat16 bit patterns (``uint16``) of ``x``, rounded to nearest, ties to even.

    Overflow gives infinity; NaN stays NaN (sign and upper payload kept, quiet bit set). float64
    (and float16) is converted to float32 first, as ``torch.Tensor.to(torch.bfloat16)`` does.
    Works on NumPy and CuPy arrays.
    """
    xp = array_module(x)
    single = xp.ascontiguousarray(x, dtype=xp.float32)
    bits = single.view(xp.uint32)
    rounded = bits >> 16
    rounded &= 1
    rounded += 0x7FFF  # below half of the dropped bits rounds down, above rounds up, a tie to even
    rounded += bits
    rounded >>= 16
    out = rounded.astype(xp.uint16)
    nan = xp.isnan(single)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | _BF16_QUIET_BIT).astype(xp.uint16)
    return out


def bf16_bits_to_float32(bits):
    """float32 values of bfloat16 bit patterns (exact). Works on NumPy and CuPy arrays."""
    xp = array_module(bits)
    wide = bits.astype(xp.uint32)
    wide <<= 16
    return wide.view(xp.float32)


def add_fp16_(total, other):
    """``total = fp16(float32(total) + float32(other))`` in place, on float16 arrays."""
    with np.errstate(over="ignore"):  # overflow gives infinity, as intended
        np.add(total, other, out=total)  # NumPy's float16 add: float32 arithmetic, rounded once


def add_bf16_(total, other):
    """``total = bf16(float32(total) + float32(other))`` in place, on bfloat16 bits (uint16)."""
    wide = bf16_bits_to_float32(total)
    with np.errstate(over="ignore"):  # overflow gives infinity, as intended
        wide += bf16_bits_to_float32(other)
    total[...] = float_to_bf16_bits(wide)


PAIRWISE_SUMS = {
    "sum_fp16": (np.dtype(np.float16), add_fp16_),
    "sum_bf16": (np.dtype(np.uint16), add_bf16_),
}
"""allreduce op -> (the buffer dtype it takes, how two ranks' buffers combine, in place)."""
