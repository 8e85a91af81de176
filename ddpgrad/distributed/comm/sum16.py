"""Sums of 16-bit floats that travel as 16 bits: the ``"sum_fp16"`` and ``"sum_bf16"`` allreduces,
and the float32 <-> 16-bit conversions they and the compression hooks need.

NumPy has no bfloat16, so a bfloat16 array is carried as the ``uint16`` bit patterns (the upper
half of a float32's bits). All conversions round to nearest, ties to even; overflow gives
infinity; NaN stays NaN.

Every backend combines the ranks' contributions with ``sum_rows_16``: each rank's 16-bit values
are widened exactly to float32, added in rank order in float32, and the total is rounded once to
16 bits, so every backend gives the same bits. (``add_fp16_``/``add_bf16_`` are the pairwise form:
float32 has at least 2p+2 significand bits for both formats, p = 11 and 8, so each pairwise sum is
the correctly rounded 16-bit sum.)

On NumPy the float16 conversions are done here rather than with ``astype``: NumPy's own cast
takes a slow path for float16 subnormals (magnitudes below 6.1e-5, where gradients often lie),
about 35x slower than for normal numbers on a Xeon, while these cost the same for every value.
Rounding to float16 is done with integer bit operations, ``CHUNK`` elements at a time so that its
dozen passes stay in cache; widening is a lookup in a table of all 65536 float16 values. CuPy
arrays use the GPU's own conversions.
"""

from __future__ import annotations

import numpy as np

from ...backend import array_module

CHUNK = 1 << 15
"""Elements per step of a NumPy conversion: its scratch arrays (128 KiB each) stay in L2 cache."""

_BF16_QUIET_BIT = 0x0040
"""Set in every bfloat16 NaN made here: a signalling NaN's payload may lie entirely in the 16
dropped bits, and truncating it would leave infinity."""

_F32_HALF = np.float32(0.5)
_F16_MIN_NORMAL_AS_F32 = 0x38800000  # 2**-14: below it a float16 is subnormal (or zero)
_F16_OVERFLOW_AS_F32 = 0x47800000  # 2**16: from here on (and for inf, NaN) no finite float16
_F32_INF = 0x7F800000


def _steps(n):
    for lo in range(0, n, CHUNK):
        yield lo, min(lo + CHUNK, n)


class _Scratch:
    """Reused per-chunk work arrays, so a conversion allocates nothing per chunk."""

    def __init__(self, n, *dtypes):
        self.arrays = [np.empty(min(n, CHUNK), dtype) for dtype in dtypes]

    def take(self, k):
        return [a[:k] for a in self.arrays]


# ---------------------------------------------------------------------------------------------
# float16 on NumPy, one chunk at a time


_fp16_values = None


def _fp16_table():
    """float32 value of every float16 bit pattern (256 KiB, stays in cache): widening is a gather."""
    global _fp16_values
    if _fp16_values is None:
        halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
        _fp16_values = halves.astype(np.float32)
    return _fp16_values


def _blend(dst, src, flag, mask):
    """``dst = where(flag, src, dst)``, consuming ``src``; branch-free: a masked copy mispredicts
    on mixed data (a gradient with a quarter of its values subnormal: 6x slower)."""
    np.copyto(mask, flag)
    np.negative(mask, out=mask)  # all ones where flag
    src ^= dst
    src &= mask
    dst ^= src


def _narrow_fp16(u, out, a, t, s, mask, flag):
    """float32 bits ``u`` -> float16 bits ``out`` (uint16); a, t, s, mask: uint32 scratch, flag:
    bool scratch."""
    np.bitwise_and(u, 0x7FFFFFFF, out=a)
    # normal range: rebias the exponent by -112 and round the 13 dropped bits to nearest even
    np.right_shift(a, 13, out=t)
    t &= 1
    t += a
    t += 0xC8000FFF  # ((15 - 127) << 23) + 0xFFF, modulo 2**32
    t >>= 13
    # subnormal range: adding 0.5 makes the FPU round |x| to a multiple of 2**-24 (float16's step)
    np.add(a.view(np.float32), _F32_HALF, out=s.view(np.float32))
    s -= 0x3F000000
    np.less(a, _F16_MIN_NORMAL_AS_F32, out=flag)
    _blend(t, s, flag, mask)
    np.greater_equal(a, _F16_OVERFLOW_AS_F32, out=flag)
    if flag.any():
        t[flag] = np.where(a[flag] > _F32_INF, 0x7E00, 0x7C00)  # NaN stays NaN, else infinity
    np.right_shift(u, 16, out=s)
    s &= 0x8000
    t |= s
    np.copyto(out, t, casting="unsafe")


def _narrow_bf16(u, out, t, flag):
    """float32 bits ``u`` -> bfloat16 bits ``out`` (uint16); t: uint32 scratch, flag: bool."""
    np.right_shift(u, 16, out=t)
    t &= 1
    t += 0x7FFF  # below half of the dropped bits rounds down, above rounds up, a tie to even
    t += u
    t >>= 16
    np.copyto(out, t, casting="unsafe")
    np.isnan(u.view(np.float32), out=flag)
    if flag.any():
        out[flag] = ((u[flag] >> 16) | _BF16_QUIET_BIT).astype(np.uint16)


def _as_float32_bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32)


def _output(shape, dtype, out):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {tuple(shape)}, got "
                         f"{out.dtype} {out.shape}")
    return out


# ---------------------------------------------------------------------------------------------
# Conversions (NumPy or CuPy)


def float_to_fp16(x):
    """``x`` rounded to float16 (nearest, ties to even), like ``x.astype(float16)`` but fast on
    NumPy for small magnitudes. float64 is rounded to float32 first."""
    xp = array_module(x)
    if xp is not np:
        return x.astype(xp.float16)
    u = _as_float32_bits(x)
    out = np.empty(u.size, np.uint16)
    scratch = _Scratch(u.size, np.uint32, np.uint32, np.uint32, np.uint32, np.bool_)
    with np.errstate(invalid="ignore"):  # NaN + 0.5 in the unused subnormal branch
        for lo, hi in _steps(u.size):
            _narrow_fp16(u[lo:hi], out[lo:hi], *scratch.take(hi - lo))
    return out.view(np.float16).reshape(np.shape(x))


def fp16_to_float32(h, out=None):
    """float32 values of float16 ``h`` (exact), into ``out`` (C-contiguous float32) if given."""
    xp = array_module(h)
    if xp is not np:
        if out is None:
            return h.astype(xp.float32)
        out[...] = h
        return out
    result = _output(np.shape(h), np.float32, out)
    np.take(_fp16_table(), np.ascontiguousarray(h).view(np.uint16), out=result, mode="clip")
    return result


def float_to_bf16_bits(x):
    """bfloat16 bit patterns (``uint16``) of ``x``, rounded to nearest, ties to even.

    Overflow gives infinity; NaN stays NaN (sign and upper payload kept, quiet bit set). float64
    (and float16) is converted to float32 first, as ``torch.Tensor.to(torch.bfloat16)`` does.
    """
    xp = array_module(x)
    if xp is not np:
        single = xp.ascontiguousarray(x, dtype=xp.float32)
        bits = single.view(xp.uint32)
        rounded = ((bits >> 16) & 1) + 0x7FFF + bits
        out = (rounded >> 16).astype(xp.uint16)
        nan = xp.isnan(single)
        return xp.where(nan, ((bits >> 16) | _BF16_QUIET_BIT).astype(xp.uint16), out)
    u = _as_float32_bits(x)
    out = np.empty(u.size, np.uint16)
    scratch = _Scratch(u.size, np.uint32, np.bool_)
    for lo, hi in _steps(u.size):
        _narrow_bf16(u[lo:hi], out[lo:hi], *scratch.take(hi - lo))
    return out.reshape(np.shape(x))


def bf16_bits_to_float32(bits, out=None):
    """float32 values of bfloat16 bit patterns (exact), into ``out`` (C-contiguous float32) if
    given. Works on NumPy and CuPy arrays."""
    xp = array_module(bits)
    if out is None:
        out = xp.empty(bits.shape, xp.float32)
    wide = out.view(xp.uint32)
    wide[...] = bits
    wide <<= 16
    return out


# ---------------------------------------------------------------------------------------------
# The pairwise sums (NumPy, in place)


def add_fp16_(total, other):
    """``total = fp16(float32(total) + float32(other))`` in place, on float16 arrays."""
    t16, o16 = total.reshape(-1).view(np.uint16), other.reshape(-1).view(np.uint16)
    table = _fp16_table()
    scratch = _Scratch(t16.size, np.float32, np.float32, *[np.uint32] * 4, np.bool_)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow gives infinity, as intended
        for lo, hi in _steps(t16.size):
            x, y, a, b, c, d, flag = scratch.take(hi - lo)
            np.take(table, t16[lo:hi], out=x, mode="clip")  # uint16 indices: always in range
            np.take(table, o16[lo:hi], out=y, mode="clip")
            x += y
            _narrow_fp16(x.view(np.uint32), t16[lo:hi], a, b, c, d, flag)


def add_bf16_(total, other):
    """``total = bf16(float32(total) + float32(other))`` in place, on bfloat16 bits (uint16)."""
    t16, o16 = total.reshape(-1), other.reshape(-1)
    scratch = _Scratch(t16.size, np.uint32, np.uint32, np.uint32, np.bool_)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow gives infinity, as intended
        for lo, hi in _steps(t16.size):
            x, y, t, flag = scratch.take(hi - lo)
            np.copyto(x, t16[lo:hi])
            x <<= 16
            np.copyto(y, o16[lo:hi])
            y <<= 16
            np.add(x.view(np.float32), y.view(np.float32), out=x.view(np.float32))
            _narrow_bf16(x, t16[lo:hi], t, flag)


def _widen_fp16_into(bits, out):
    np.take(_fp16_table(), bits, out=out, mode="clip")


def _widen_bf16_into(bits, out):
    wide = out.view(np.uint32)
    np.copyto(wide, bits)
    wide <<= 16


def sum_rows_16(rows, op, out):
    """``out = round16(rows[0] + rows[1] + ...)``: the rows (16-bit, shape (k, n)) widened exactly
    to float32, added in row order in float32, and the total rounded once to 16 bits (``op``'s
    format) into ``out`` (n elements, the buffer dtype of ``op``). How every backend combines the
    ranks' contributions of a 16-bit sum, so they all give the same bits."""
    widen = _widen_fp16_into if op == "sum_fp16" else _widen_bf16_into
    bits = rows.view(np.uint16)
    target = out.reshape(-1).view(np.uint16)
    n = target.size
    scratch = _Scratch(n, np.float32, np.float32, *[np.uint32] * 4, np.bool_)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow gives infinity, as intended
        for lo, hi in _steps(n):
            total, term, a, b, c, d, flag = scratch.take(hi - lo)
            widen(bits[0, lo:hi], total)
            for row in bits[1:]:
                widen(row[lo:hi], term)
                total += term
            if op == "sum_fp16":
                _narrow_fp16(total.view(np.uint32), target[lo:hi], a, b, c, d, flag)
            else:
                _narrow_bf16(total.view(np.uint32), target[lo:hi], a, flag)
    return out


PAIRWISE_SUMS = {
    "sum_fp16": (np.dtype(np.float16), add_fp16_),
    "sum_bf16": (np.dtype(np.uint16), add_bf16_),
}
"""allreduce op -> (the buffer dtype it takes, how two ranks' buffers combine, in place)."""
