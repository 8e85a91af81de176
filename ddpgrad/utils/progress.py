"""Progress bars that appear on a terminal only, never in a Slurm log or a pipe.

    from ddpgrad.utils.progress import progress
    for x, y in progress(loader, desc="epoch 1", enabled=rank == 0):
        ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from ..launch.environment import TERMINAL_COLUMNS_VAR

T = TypeVar("T")


def terminal_columns() -> int | None:
    """Columns of the terminal stderr shows on: stderr's own, or (under ddprun, whose ranks write
    to pipes) ddprun's, less its ``[rank N]`` prefix. None when no terminal will show it."""
    if sys.stderr is not None and sys.stderr.isatty():
        try:
            return os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            return None
    value = os.environ.get(TERMINAL_COLUMNS_VAR, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None,
             enabled: bool = True, **tqdm_options: Any) -> Iterable[T]:
    """``iterable`` with a tqdm bar on stderr, when ``enabled``, a terminal shows stderr, and
    tqdm is installed (``pip install "ddpgrad[examples]"``); else ``iterable`` itself."""
    columns = terminal_columns() if enabled else None
    if columns is None:
        return iterable
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional, and only worth importing for a terminal
    except ImportError:
        return iterable
    size = {"dynamic_ncols": True} if sys.stderr.isatty() else {"ncols": columns}
    options = {"leave": False, "file": sys.stderr, **size, **tqdm_options}
    return tqdm(iterable, total=total, desc=desc, **options)
