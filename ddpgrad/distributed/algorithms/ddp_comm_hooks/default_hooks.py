"""The built-in DDP communication hooks: average each gradient bucket, optionally in 16 bits.

``DistributedDataParallel.register_comm_hook(state, hook)`` makes the reducer call
``hook(state, bucket)`` for each gradient bucket once its gradients are final; the hook starts the
bucket's collective and returns a handle whose ``wait()`` gives the gradient averaged over the
ranks. ``state`` is unused by these hooks (pass None), as in PyTorch's default hooks.
``allreduce_hook`` is what DDP does when no hook is registered.

These hooks are ``prescaled``: the reducer hands them buckets already divided by the world size
(folded into the copy of each gradient into its bucket), so averaging costs no pass of its own; a
bucket that is not prescaled (a user's hook calling these) is divided here. Dividing before
summing also keeps a sum of N float16 gradients from overflowing 65504 where their mean does not.

The compression hooks round the bucket to 16 bits and sum with a 16-bit allreduce
("sum_fp16" / "sum_bf16"): half the bytes of a float32 allreduce. The communicator sums the
16-bit contributions in float32 and rounds once, so the averaged gradient is the 16-bit rounding
of the mean of 16-bit gradients: about 3 significant digits for fp16, 2 for bf16; bf16 keeps
float32's range, fp16 rounds magnitudes below about 3e-8 to zero. The result is widened back into
the bucket's own buffer. A GPU (CuPy) bucket is compressed on the device; the communicator moves
it to the host if MPI can not read device memory.
"""

from __future__ import annotations

from ....backend import array_module
from ...comm.base import Work
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


def _local_mean(bucket):
    """The bucket's buffer divided by the world size (in place, unless the reducer did it)."""
    buffer = bucket.buffer()
    if not bucket.is_prescaled() and bucket.comm.size > 1:
        array_module(buffer).divide(buffer, bucket.comm.size, out=buffer)
    return buffer


def allreduce_hook(process_group, bucket):
    """Average the bucket with one allreduce of its own dtype (PyTorch's ``allreduce_hook``, and
    DDP's default); in a world of one, the identity."""
    buffer = _local_mean(bucket)
    if bucket.comm.size == 1:
        return Work(bucket.comm, "allreduce", bucket.describe, result=buffer)  # already complete
    return bucket.comm.iallreduce(buffer, "sum", describe=bucket.describe)


def fp16_compress_hook(process_group, bucket):
    """Average the bucket in float16 on the wire: half the bytes of float32 gradients."""
    return _compressed(bucket, float_to_fp16, fp16_to_float32, "sum_fp16")


def bf16_compress_hook(process_group, bucket):
    """Average the bucket in bfloat16 on the wire (float32's range, 8 significant bits): half the
    bytes of float32 gradients. NumPy has no bfloat16: the bits travel as uint16."""
    return _compressed(bucket, float_to_bf16_bits, bf16_bits_to_float32, "sum_bf16")


def _compressed(bucket, narrow, widen, op):
    """Narrow the local mean to 16 bits, sum with ``op``, widen back into the bucket."""
    buffer = _local_mean(bucket)
    compressed = narrow(buffer)

    def decompress(total):
        if buffer.dtype == "float32":
            widen(total, out=buffer)
        else:
            buffer[...] = widen(total)
        return buffer

    work = bucket.comm.iallreduce(compressed, op, describe=f"{bucket.describe} [{op}]")
    return _ThenWork(work, decompress)


for _hook in (allreduce_hook, fp16_compress_hook, bf16_compress_hook):
    _hook.prescaled = True
