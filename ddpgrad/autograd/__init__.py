"""Reverse-mode automatic differentiation: ``backward``, ``grad``, ``gradcheck``, ``Function``."""

from __future__ import annotations

from .differentiate import backward, grad  # noqa: F401
from .engine import queue_callback, run_backward, unbroadcast  # noqa: F401
from .function import AccumulateGrad, Function  # noqa: F401
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from .gradcheck import gradcheck  # noqa: F401
