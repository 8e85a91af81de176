"""ddprun's per-rank bootstrap: mpiexec starts ``python rank.py [options] -- script args`` on every rank.

Before the user's script runs it

- sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE from the MPI launcher's variables (what
  torchrun sets, and what ported PyTorch scripts read before they initialise anything);
- routes the rank's stdout and stderr (file descriptors 1 and 2, so C libraries and child
  processes too) through a small prefixer process that writes each line as ``[rank N] line``:
  whole lines in one write each, so ranks never interleave mid-line, and the prefixer outlives
  the rank, so a dying rank's last words still come through;
- tells ddprun that this rank has started (the start-up deadline).

It runs the script as ``python script.py`` would (``__main__``, ``sys.argv``, ``sys.path[0]``).
A ``SystemExit`` with a message (a user error, usually found alike on every rank) and errors
marked ``ddpgrad_user_error`` go to ddprun, which prints each distinct message once.

Run by path, never imported through the ``ddpgrad`` package: it uses the standard library only,
so nothing (NumPy, BLAS) is imported before the script has set up its environment. ddprun's
side of the conversation (``CONTROL`` lines, ``split_lines``) is imported from here by ``job``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import selectors
import signal
import subprocess
import sys
import traceback

CONTROL = b"\x1eddprun "
"""Starts a line meant for ddprun, not for the user: ddprun consumes it and never shows it."""
STARTED, MESSAGE = "started", "message"
LINE_END = re.compile(rb"\r\n|\r|\n")
MAX_PARTIAL_LINE = 1 << 16
"""A line longer than this (bytes, no newline yet) is passed on in pieces rather than held."""
READ_CHUNK = 1 << 16
PARTIAL_LINE_WAIT_S = 0.2
"""How long the prefixer holds an unfinished line for the rest of it before passing it on: long
enough that a line written in pieces stays whole, short enough that a progress bar looks live."""
OUTPUT_MODES = ("all", "rank0")


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """(complete lines with their ending, the unfinished rest). "\\r" ends a line too, so that a
    progress bar's redraws pass through as they happen."""
    lines, start = [], 0
    for match in LINE_END.finditer(buffer):
        lines.append(buffer[start:match.end()])
        start = match.end()
    rest = buffer[start:]
    if len(rest) > MAX_PARTIAL_LINE:
        lines.append(rest)
        rest = b""
    return lines, rest


def control_line(kind: str, rank: int, text: str = "") -> bytes:
    return CONTROL + f"{kind} {rank} {text}".rstrip(" ").encode() + b"\n"


def parse_control(line: bytes) -> tuple[str, int, str] | None:
    """(kind, rank, text) of a control line, else None."""
    if not line.startswith(CONTROL):
        return None
    kind, rank, *text = line[len(CONTROL):].decode(errors="replace").rstrip("\r\n").split(" ", 2)
    return kind, int(rank), text[0] if text else ""


def _write_all(fd: int, data: bytes):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the reader went away (launcher stopped): keep draining, drop the output
        pass


def prefix_output(rank: int, mode: str, sources: dict[int, int]):
    """The prefixer: copy each ``source fd -> destination fd`` line by line with ``[rank N] ``
    in front, until every source is closed (the rank and its children exited). A line still
    unfinished after ``PARTIAL_LINE_WAIT_S`` (a prompt, a progress bar) is passed on as it is."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # outlive the rank: drain its pipes to the end
    prefix = f"[rank {rank}] ".encode()
    drop = {fd for fd, dest in sources.items() if dest == 1 and mode == "rank0" and rank != 0}
    pending = dict.fromkeys(sources, b"")
    mid_line = dict.fromkeys(sources, False)  # the start of this line has been passed on already
    selector = selectors.DefaultSelector()
    for fd in sources:
        selector.register(fd, selectors.EVENT_READ)

    def emit(fd, pieces, finished=True):
        for piece in pieces:
            if fd in drop or not piece:
                continue
            bare_return = piece == b"\r"  # moves the cursor back, nothing to attribute
            if not (mid_line[fd] or bare_return or piece.startswith(CONTROL) or piece.startswith(prefix)):
                piece = prefix + piece
            _write_all(sources[fd], piece)
            mid_line[fd] = not finished

    while pending:
        waiting = any(pending.values())
        events = selector.select(PARTIAL_LINE_WAIT_S if waiting else None)
        if not events:
            for fd in pending:
                emit(fd, [pending[fd]], finished=False)
                pending[fd] = b""
        for key, _ in events:
            fd = key.fd
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                selector.unregister(fd)
                rest = pending.pop(fd)
                emit(fd, [rest + b"\n"] if rest or mid_line[fd] else [])
                continue
            lines, pending[fd] = split_lines(pending[fd] + chunk)
            emit(fd, lines)


def _environment_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "environment.py")
    spec = importlib.util.spec_from_file_location("_ddprun_environment", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def rank_variables(environ, world_size: int) -> dict[str, str]:
    """RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE for this rank, from the MPI launcher's
    variables; raises SystemExit if they are missing or disagree with ``world_size``."""
    env = _environment_module()
    mpi_view = {k: v for k, v in environ.items() if k not in env.RANK_ENV_VARS}
    launched = env.launcher_world_size(mpi_view)
    if launched != world_size:
        raise SystemExit(
            f"ddprun: asked mpiexec for {world_size} ranks, but this rank's launcher variables say "
            f"{launched}: the mpiexec ddprun ran sets none of {', '.join(env.MPI_SIZE_VARS)}; "
            "pass the one that belongs to mpi4py's MPI with --mpiexec"
        )
    out = {
        "RANK": env.launcher_rank(mpi_view),
        "LOCAL_RANK": env.local_rank(mpi_view),
        "WORLD_SIZE": world_size,
        "LOCAL_WORLD_SIZE": env.local_world_size(mpi_view),
    }
    return {name: str(value) for name, value in out.items() if value is not None}


def _start_prefixer(rank: int, mode: str):
    """Point fds 1 and 2 at pipes read by a prefixer process that writes to the old 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import rank; rank.prefix_output({rank}, {mode!r}, {{{out_r}: 1, {err_r}: 2}})")
    subprocess.Popen([sys.executable, "-I", "-S", "-c", code], pass_fds=(out_r, err_r),
                     stdin=subprocess.DEVNULL)
    for fd, target in ((out_w, 1), (err_w, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.close(out_r)
    os.close(err_r)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)


def _report_once(rank: int, text: str) -> int:
    """Hand a user-error message to ddprun (which prints each distinct one once); status 1."""
    sys.stderr.flush()
    for line in text.rstrip("\n").split("\n"):
        _write_all(2, control_line(MESSAGE, rank, line))
    return 1


def _argparse_errors_once(rank: int):
    """argparse prints its usage error itself, on every rank: send it to ddprun instead, which
    shows it once. Same text, same exit status 2; a parser class with its own ``error`` keeps it."""
    import argparse  # noqa: PLC0415 - only the bootstrap, never the prefixer, needs it

    def error(parser, message):
        _report_once(rank, f"{parser.format_usage()}{parser.prog}: error: {message}")
        sys.exit(2)

    argparse.ArgumentParser.error = error


def _script_traceback(exc: BaseException, script: str):
    """The exception's traceback from the script's first frame on (no bootstrap or runpy frames)."""
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return tb or exc.__traceback__


def run_script(script: str, args: list[str], rank: int) -> int:
    """Run ``script`` as ``__main__``; the exit status a plain ``python script.py`` would give."""
    sys.argv = [script, *args]  # as given, like python script.py
    script = os.path.abspath(script)
    sys.path[0] = os.path.dirname(script)
    _argparse_errors_once(rank)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return _report_once(rank, str(exc.code))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # noqa: BLE001 - hand every error to the hook a script would get
        if getattr(exc, "ddpgrad_user_error", False):
            return _report_once(rank, f"{type(exc).__name__}: {exc}")
        sys.excepthook(type(exc), exc, _script_traceback(exc, script))
        return 1
    return 0


def main(argv: list[str]) -> int:
    world_size, mode = 1, "all"
    while argv and argv[0] != "--":
        option, value, *argv = argv
        if option == "--world-size":
            world_size = int(value)
        elif option == "--output" and value in OUTPUT_MODES:
            mode = value
        else:
            raise SystemExit(f"ddprun bootstrap: unknown option {option} {value}")
    script, *args = argv[1:]
    for name, value in rank_variables(os.environ, world_size).items():
        os.environ[name] = value
    rank = int(os.environ["RANK"])
    _start_prefixer(rank, mode)
    _write_all(2, control_line(STARTED, rank))
    try:
        status = run_script(script, args, rank)
    except BaseException:  # noqa: BLE001 - the bootstrap itself failed: say so, as Python would
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if status == 130:
        os._exit(status)  # interrupted: leave at once, without MPI_Finalize waiting for the others
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
