"""``Parameter``: a tensor that a ``Module`` registers as one of its learnable weights."""

from __future__ import annotations

from ..ops.creation import as_array
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad and registers itself when assigned to a ``Module``.

    ``Parameter(t)`` shares ``t``'s array (no copy), as in PyTorch; other data is copied.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            self._init(as_array([], dtype=None))
        elif isinstance(data, Tensor):
            self._init(data._data)
            self._vc = data._vc
        else:
            self._init(as_array(data))
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(Tensor._make(self._data.copy()), self.requires_grad)
        memo[id(self)] = result
        return result
