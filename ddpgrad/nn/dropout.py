"""``Dropout``: random zeroing during training, identity in eval mode."""

from __future__ import annotations

from . import functional as F
from .module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` while training and scale the rest by 1/(1-p).

    The mask comes from ``ddpgrad.random``, so ``ddpgrad.manual_seed`` makes it repeat.
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
