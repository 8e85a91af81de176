"""``ddpgrad.backends``: PyTorch's feature queries (``backends.cuda.is_available()``, ``backends.mps``)."""

from __future__ import annotations

import types as _types

from .. import cuda as _cuda


def _flags(name, doc, **attrs):
    module = _types.ModuleType(f"{__name__}.{name}", doc)
    module.__dict__.update(attrs)
    return module


mps = _flags("mps", "Apple's Metal backend: never available in ddpgrad.",
             is_available=lambda: False, is_built=lambda: False)
cuda = _flags("cuda", "CUDA through CuPy (see ddpgrad.cuda).",
              is_available=_cuda.is_available, is_built=lambda: True)
cudnn = _flags("cudnn", "cuDNN: not used by ddpgrad (its ops are NumPy/CuPy array code).",
               is_available=lambda: False, enabled=False, deterministic=False, benchmark=False)
mkldnn = _flags("mkldnn", "oneDNN: not used by ddpgrad.", is_available=lambda: False)
