"""Grad mode: whether operations record a graph. Thread-local, as in PyTorch."""

from __future__ import annotations

import functools
import threading


class _GradState(threading.local):
    enabled = True


state = _GradState()


def is_grad_enabled() -> bool:
    return state.enabled


class _GradModeContext:
    """Base for context managers that are also decorators."""

    mode: bool

    def __new__(cls, *args):
        self = super().__new__(cls)
        if len(args) == 1 and callable(args[0]) and cls.__init__ is object.__init__:
            return self(args[0])  # bare decorator: ``@no_grad`` as well as ``@no_grad()``
        return self

    def __enter__(self):
        self._prev = state.enabled
        state.enabled = self.mode

    def __exit__(self, *exc):
        state.enabled = self._prev
        return False

    def _fresh(self):
        return self.__class__()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    """Do not record operations (evaluation, optimizer updates)."""

    mode = False


class enable_grad(_GradModeContext):
    """Record operations again inside a ``no_grad`` region."""

    mode = True


class set_grad_enabled(_GradModeContext):
    """Turn recording on or off; takes effect at once, and also works as a context manager."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._prev = state.enabled
        state.enabled = self.mode

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        state.enabled = self._prev
        return False

    def __call__(self, fn):
        state.enabled = self._prev  # used as a decorator: take effect only inside calls
        return super().__call__(fn)

    def _fresh(self):
        return set_grad_enabled(self.mode)
