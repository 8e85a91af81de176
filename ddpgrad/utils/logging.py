"""Logs fit for a cluster: the ``ddpgrad`` logger speaks from rank 0 only (by default), every
line prefixed with its rank, on stderr; ``log_once`` keeps a repeated message to one line.

    from ddpgrad.utils.logging import ALL_RANKS, get_logger, log_once

    log = get_logger()                                   # or get_logger(__name__): a child
    log.info("epoch %d: loss %.4f", epoch, loss)         # "[rank 0] epoch 1: loss 0.3120", once
    log.warning("rank-local problem", extra=ALL_RANKS)   # from every rank that hits it
    log_once(log, "no GPU: training on the CPU")         # the first call only

The rank is the process group's once ``init_process_group`` ran, else the launcher's (RANK,
PMI_RANK, ...), so lines logged before initialisation are attributed and filtered correctly.
``DDPGRAD_LOG_LEVEL`` (default INFO) and ``DDPGRAD_LOG_RANKS`` ("0", default, or "all") set the
defaults; ``configure()`` sets them in code. It is stdlib ``logging``: an application that
configures the "ddpgrad" logger itself keeps its own handlers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..launch.environment import launcher_rank

ROOT_NAME = "ddpgrad"
LEVEL_VAR, RANKS_VAR = "DDPGRAD_LOG_LEVEL", "DDPGRAD_LOG_RANKS"
DEFAULT_LEVEL, DEFAULT_RANKS = "INFO", "0"
ALL_RANKS: Mapping[str, Any] = {"all_ranks": True}
"""``extra=ALL_RANKS`` on a call: this record is shown by every rank, not rank 0 only."""
_PROCESS_GROUP = "ddpgrad.distributed.process_group"
_seen: set[tuple[str, int, str]] = set()


def current_rank() -> int:
    """This process's (or thread-rank's) rank: the process group's if initialised, else the launcher's."""
    # Looked up, not imported: the distributed layer sits above this one and may not be loaded.
    group = sys.modules.get(_PROCESS_GROUP)
    if group is not None and group.is_initialized():
        return group.get_rank()
    return launcher_rank()


class RankFilter(logging.Filter):
    """Adds ``record.rank``; passes records of rank 0 only unless ``all_ranks`` (or the record's)."""

    def __init__(self, all_ranks: bool = False):
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = current_rank()
        return self.all_ranks or getattr(record, "all_ranks", False) or record.rank == 0


class RankFormatter(logging.Formatter):
    """``[rank N] message``, with the level named for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        prefix = f"[rank {getattr(record, 'rank', current_rank())}] {level}"
        return "\n".join(prefix + line for line in text.split("\n"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a redirect or a test's capture included)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_handler: _StderrHandler | None = None


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def configure(level: int | str | None = None, all_ranks: bool | None = None) -> logging.Logger:
    """Set up the "ddpgrad" logger: ``level`` (default $DDPGRAD_LOG_LEVEL or INFO) and whether
    every rank logs (default: $DDPGRAD_LOG_RANKS == "all", else rank 0 only). Returns it."""
    global _handler
    logger = logging.getLogger(ROOT_NAME)
    if level is None:
        level = os.environ.get(LEVEL_VAR, DEFAULT_LEVEL)
    if all_ranks is None:
        ranks = os.environ.get(RANKS_VAR, DEFAULT_RANKS)
        if ranks not in ("0", "all"):
            raise ValueError(f'{RANKS_VAR}={ranks!r}: use "0" (rank 0 only) or "all"')
        all_ranks = ranks == "all"
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(RankFormatter())
        logger.addHandler(_handler)
        logger.propagate = False  # a root handler would print each line a second time
    _handler.filters = [RankFilter(all_ranks)]
    logger.setLevel(_level(level))
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """The "ddpgrad" logger (or its child ``name``), set up by ``configure()`` on first use unless
    the application gave "ddpgrad" handlers of its own."""
    root = logging.getLogger(ROOT_NAME)
    if _handler is None and not root.handlers:
        configure()
    if not name or name == ROOT_NAME:
        return root
    return logging.getLogger(name if name.startswith(ROOT_NAME + ".") else f"{ROOT_NAME}.{name}")


def log_once(logger: logging.Logger, msg: str, *args: object, level: int = logging.INFO, **kwargs: Any) -> bool:
    """Log ``msg % args`` the first time this process asks for it, never again; returns whether
    it was logged now (by this call, before the rank filter)."""
    key = (logger.name, level, msg % args if args else msg)
    if key in _seen:
        return False
    _seen.add(key)
    logger.log(level, msg, *args, **kwargs)
    return True
