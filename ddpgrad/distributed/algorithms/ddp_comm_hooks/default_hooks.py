"""The built-in DDP communication hooks: average each gradient bucket, optionally in 16 bits.

``DistributedDataParallel.register_comm_hook(state, hook)`` makes the reducer call
``hook(state, bucket)`` for each gradient bucket once its gradients are final; the hook starts the
bucket's collective and returns a handle whose ``wait()`` gives the gradient averaged over the
ranks. ``state`` is unused by these hooks (pass None), as in PyTorch's default hooks.

The compression hooks divide by the world size *before* summing (a sum of N float16 gradients
overflows 65504 where their mean does not), round to 16 bits and sum with a 16-bit allreduce
("sum_fp16" / "sum_bf16"): half the bytes of a float32 allreduce. Every partial sum is rounded to
16 bits, so the averaged gradient has 16-bit precision: about 3 significant digits for fp16, 2 for
bf16; bf16 keeps float32's range, fp16 rounds magnitudes below about 3e-8 to zero. The result is
widened back into the bucket's own buffer. A GPU (CuPy) bucket is compressed on the device, so
only the 16-bit payload crosses to the host.
"""

from __future__ import annotations

from ....backend import CPU, array_module, to_device
from ...comm.sum16 import bf16_bits_to_float32, float_to_bf16_bits, float_to_fp16, fp16_to_float32


class _ThenWork:
    """A started collective and what turns its result into the bucket's gradient, run once on
    ``wait()``: the handle a hook returns (PyTorch's ``Future.then``)."""

    def __init__(self, work, then):
        self._work = work
        self._then = then
        self._result = None

    def test(self) -> bool:
        return self._work.test()

    def wait(self, timeout=None):
        if self._then is not None:
            self._result = self._then(self._work.wait(timeout))
            self._then = None
        return self._result


def _allreduce(bucket, payload, op, then):
    """Sum ``payload`` (the bucket's buffer, or its compressed form) across ranks with ``op``;
    ``then`` gets the sum, on the buffer's device, and returns the averaged gradient."""
    host = to_device(payload, CPU)
    work = bucket.comm.iallreduce(host, op, describe=f"{bucket.describe} [{op}]")
    if host is payload:
        return _ThenWork(work, then)
    xp = array_module(payload)
    return _ThenWork(work, lambda total: then(xp.asarray(total)))


def _widen_into(buffer, total, widen):
    """The 16-bit ``total`` widened into the bucket's ``buffer`` (straight into it if float32)."""
    if buffer.dtype == "float32":
        widen(total, out=buffer)
    else:
        buffer[...] = widen(total)


def allreduce_hook(process_group, bucket):
    """Average the bucket with one allreduce of its own dtype, dividing by the world size first
    (PyTorch's ``allreduce_hook``; without a hook DDP sums first, then divides)."""
    buffer = bucket.buffer()
    array_module(buffer).divide(buffer, bucket.comm.size, out=buffer)

    def copy_back(total):
        if total is not buffer:
            buffer[...] = total
        return buffer

    return _allreduce(bucket, buffer, "sum", copy_back)


def fp16_compress_hook(process_group, bucket):
    """Average the bucket in float16 on the wire: half the bytes of float32 gradients."""
    return _compressed(bucket, float_to_fp16, fp16_to_float32, "sum_fp16")


def bf16_compress_hook(process_group, bucket):
    """Average the bucket in bfloat16 on the wire (float32's range, 8 significant bits): half the
    bytes of float32 gradients. NumPy has no bfloat16: the bits travel as uint16."""
    return _compressed(bucket, float_to_bf16_bits, bf16_bits_to_float32, "sum_bf16")


def _compressed(bucket, narrow, widen, op):
    """Divide by the world size, narrow to 16 bits, sum with ``op``, widen back into the bucket."""
    buffer = bucket.buffer()
    compressed = narrow(buffer / bucket.comm.size)

    def decompress(total):
        _widen_into(buffer, total, widen)
        return buffer

    return _allreduce(bucket, compressed, op, decompress)
