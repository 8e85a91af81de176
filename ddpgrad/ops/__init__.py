"""``ddpgrad.ops``: the functional API (``functional.py`` and ``extra.py``) over the op classes
(``arith``, ``elementwise``, ``reduce``, ``shape``, ...), and ``Tensor``'s methods (``methods.py``)."""

from __future__ import annotations

from . import extra as _extra
from . import functional as _functional
from . import methods as _methods
from .extra import *  # noqa: F401,F403
from .functional import *  # noqa: F401,F403

_methods.bind()

__all__ = _functional.__all__ + _extra.__all__
