"""A per-rank timeline of a DDP step, as Horovod's timeline: forward, backward, each bucket's
reduction (ready, in flight), the final wait, and what runs between backward and the next forward
(the optimizer step), written as Chrome trace / Perfetto JSON (open it at ui.perfetto.dev or
chrome://tracing).

Off by default and free when off (the reducer checks one attribute). On with
``DDPGRAD_TIMELINE=path`` or ``DistributedDataParallel(..., timeline=path)``: rank r writes
``path`` with ``{rank}`` replaced, or ``path.rank<r>.json`` when it has no ``{rank}``. Events are
buffered and appended every ``FLUSH_EVERY`` of them, so tracing does no I/O on most steps.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time

TIMELINE_ENV = "DDPGRAD_TIMELINE"

FLUSH_EVERY = 2000
"""Events buffered before they are appended to the file (about 100 steps of a 6-bucket model)."""

MAIN_ROW, BUCKET_ROW = 0, 100
"""Trace rows ("threads"): the training loop, then one row per bucket so flights can overlap."""


def timeline_path(path, rank):
    """Where rank ``rank`` writes the timeline asked for as ``path``."""
    path = os.fspath(path)
    return path.replace("{rank}", str(rank)) if "{rank}" in path else f"{path}.rank{rank}.json"


class Timeline:
    """Collects trace events of one rank and appends them to its JSON file."""

    def __init__(self, path, rank):
        self.path = timeline_path(path, rank)
        self.rank = rank
        self._t0 = time.perf_counter()
        self._open = {}
        self._events = []
        self._named_rows = set()
        self._lock = threading.Lock()
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("[\n")
        self._row(MAIN_ROW, "training loop")
        atexit.register(self.close)

    def _now_us(self):
        return (time.perf_counter() - self._t0) * 1e6

    def _row(self, tid, name):
        if tid not in self._named_rows:
            self._named_rows.add(tid)
            self._events.append({"ph": "M", "name": "thread_name", "pid": self.rank, "tid": tid,
                                 "args": {"name": name}})

    def _add(self, event):
        self._events.append(event)
        if len(self._events) >= FLUSH_EVERY:
            self.flush()

    def begin(self, key, name, args=None):
        """Open span ``key`` (a bucket index gets a row of its own)."""
        self._open[key] = (name, self._now_us(), args)

    def end(self, key):
        """Close span ``key`` opened by ``begin``; does nothing if it is not open."""
        opened = self._open.pop(key, None)
        if opened is None:
            return
        name, start, args = opened
        tid = MAIN_ROW
        if isinstance(key, int):
            tid = BUCKET_ROW + key
            self._row(tid, f"bucket {key}")
        event = {"ph": "X", "name": name, "pid": self.rank, "tid": tid, "ts": start,
                 "dur": self._now_us() - start}
        if args:
            event["args"] = args
        self._add(event)

    def instant(self, name, row="reducer"):
        self._add({"ph": "i", "s": "t", "name": name, "cat": row, "pid": self.rank, "tid": MAIN_ROW,
                   "ts": self._now_us()})

    def flush(self):
        with self._lock:
            events, self._events = self._events, []
            if not events or self.path is None:
                return
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(e) + ",\n" for e in events))

    def close(self):
        """Write what is buffered and end the JSON array (also run at exit)."""
        if self.path is None:
            return
        self.flush()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"ph": "M", "name": "process_name", "pid": self.rank,
                                "args": {"name": f"rank {self.rank}"}}) + "\n]\n")
        self.path = None


def timeline_from(argument, rank):
    """The ``Timeline`` asked for by a DDP argument or ``$DDPGRAD_TIMELINE``, else None."""
    path = argument if argument is not None else os.environ.get(TIMELINE_ENV) or None
    return Timeline(path, rank) if path else None
