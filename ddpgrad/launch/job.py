"""One run of a launched job: start mpiexec, pass its output on, enforce the start-up deadline,
stop it cleanly on Ctrl-C.

The ranks' lines arrive already prefixed (``rank.py``'s prefixer); this side consumes the control
lines among them: which ranks have started, and user-error messages, each printed once however
many ranks stop with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .rank import CONTROL, MESSAGE, READ_CHUNK, STARTED, parse_control, split_lines

SHUTDOWN_GRACE_S = 10
"""After Ctrl-C (or a missed start-up deadline), how long the job gets to stop before SIGKILL."""
POLL_S = 0.05
"""How often the launcher looks at the start-up deadline and the job's exit."""
READER_JOIN_S = 5
"""After mpiexec exits, how long to wait for the last output (a stray child may hold the pipes)."""
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
START_TIMEOUT_EXIT = 124  # what timeout(1) returns


@dataclass
class Outcome:
    """How one run of the job ended."""

    status: int
    interrupted: bool = False
    user_error: bool = False
    started: set[int] = field(default_factory=set)


def _write(stream, data: bytes):
    try:
        stream.buffer.write(data)
        stream.buffer.flush()
    except (BrokenPipeError, ValueError):  # our own reader (| head) went away
        pass


def say(message: str):
    """One line from ddprun itself, on stderr."""
    _write(sys.stderr, f"ddprun: {message}\n".encode())


class Job:
    """Run ``command`` (mpiexec and its ranks) once; ``run()`` returns an ``Outcome``."""

    def __init__(self, command: list[str], env: dict[str, str], world_size: int, start_timeout: float):
        self.command, self.env = command, env
        self.world_size, self.start_timeout = world_size, start_timeout
        self.outcome = Outcome(status=0)
        self._stopping = threading.Event()  # once set, the ranks' output is no longer shown
        self._messages: dict[str, int] = {}  # user-error line -> first rank that said it
        self._lock = threading.Lock()

    def _forward(self, pipe, stream):
        pending, mid_line = b"", False
        while True:
            chunk = os.read(pipe.fileno(), READ_CHUNK)
            if not chunk:
                if pending:
                    self._line(pending, stream, mid_line)
                return
            lines, pending = split_lines(pending + chunk)
            for line in lines:
                self._line(line, stream, mid_line)
                mid_line = False
            if pending and not (pending.startswith(CONTROL) or CONTROL.startswith(pending)):
                self._line(pending, stream, mid_line)  # an unfinished line (a progress bar): show it now
                pending, mid_line = b"", True

    def _line(self, line: bytes, stream, mid_line: bool = False):
        control = None if mid_line else parse_control(line)
        if control is None:
            if not self._stopping.is_set():
                _write(stream, line)
            return
        kind, rank, text = control
        with self._lock:
            if kind == STARTED:
                self.outcome.started.add(rank)
            elif kind == MESSAGE:
                self.outcome.user_error = True
                if self._messages.setdefault(text, rank) == rank and not self._stopping.is_set():
                    _write(sys.stderr, f"[rank {rank}] {text}\n".encode())

    def _stop(self, proc):
        """End every process of the job: SIGTERM to its process group, SIGKILL after the grace."""
        self._stopping.set()
        for sig, wait_s in ((signal.SIGTERM, SHUTDOWN_GRACE_S), (signal.SIGKILL, SHUTDOWN_GRACE_S)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self) -> Outcome:
        stdin = subprocess.DEVNULL if sys.stdin is None or sys.stdin.isatty() else None
        # Its own session: a Ctrl-C at the terminal reaches ddprun alone, which then stops the
        # ranks quietly, instead of every rank printing a KeyboardInterrupt traceback.
        try:
            proc = subprocess.Popen(self.command, env=self.env, stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise SystemExit(f"ddprun: can not run {self.command[0]}: {exc.strerror}; pass an MPI "
                             "launcher that exists with --mpiexec") from None
        readers = [threading.Thread(target=self._forward, args=(pipe, stream), daemon=True)
                   for pipe, stream in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + self.start_timeout
        try:
            while proc.poll() is None:
                if len(self.outcome.started) < self.world_size and time.monotonic() > deadline:
                    self._start_failed(proc)
                    break
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            self._stop(proc)
            self.outcome.status = INTERRUPTED_EXIT
        for reader in readers:
            reader.join(READER_JOIN_S)
        if self.outcome.status == 0:
            self.outcome.status = proc.wait()
        return self.outcome

    def _start_failed(self, proc):
        missing = sorted(set(range(self.world_size)) - self.outcome.started)
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        say(f"only {len(self.outcome.started)} of {self.world_size} ranks started within "
            f"{self.start_timeout:g} s (missing: rank {shown}); stopping the job. A node that does "
            "not answer ssh or a stuck launcher does this; raise --start-timeout if starting is just slow")
        self._stop(proc)
        self.outcome.status = START_TIMEOUT_EXIT
