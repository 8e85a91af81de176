"""``ddpgrad.save`` / ``ddpgrad.load``: checkpoints that cannot run code.

A checkpoint is one ``.npz`` file: every array is an entry of its own, and the nesting (dicts,
lists, numbers, strings, which entry is a tensor) is JSON in the entry ``__ddpgrad__``. Loading
uses ``numpy.load(allow_pickle=False)``, so a file holding pickled objects is refused, and first
checks every size the file declares against the bytes it holds, so a hostile file gets a
``CheckpointError`` before any large allocation. Saving to a path is atomic: a temporary file in
the same directory, fsync, rename; temporary files left by a killed save are removed later.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import socket
import time
import zipfile

import numpy as np

from . import backend
from .tensor import Tensor

FORMAT = "ddpgrad-checkpoint"
VERSION = 1
META_KEY = "__ddpgrad__"

MAX_NESTING = 100
"""Containers inside containers a checkpoint may hold: far deeper than any state dict, far below
Python's recursion limit (a hostile file nested 5000 deep must not exhaust it)."""

DEFLATE_MAX_RATIO = 1032
"""The most a deflated zip member can expand (deflate's limit): a member declaring more is lying."""

STALE_TEMPORARY_S = 24 * 3600
"""A temporary file of another host (whose writer this host can not ask about) is stale once it
has not been written for a day: no save takes that long without writing."""

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class CheckpointError(ValueError):
    """The file is not a ddpgrad checkpoint, or holds something ddpgrad refuses to load."""


def save(obj, f):
    """Write nested dicts/lists/tuples of tensors, arrays, numbers, strings, dtypes and None to ``f``.

    ``f`` is a path (written atomically: a reader, or a job killed mid-save, sees the old file or
    the new one, never half of one) or a binary file object. Dict keys must be str or int.
    """
    arrays = {}
    meta = {"format": FORMAT, "version": VERSION, "root": _encode(obj, arrays, "obj")}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if not isinstance(f, (str, os.PathLike)):
        np.savez(f, **arrays)
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(f, map_location=None, weights_only=True):
    """Read a checkpoint written by ``save``; tensors land on ``map_location`` (default: CPU).

    Never unpickles, whatever ``weights_only`` says (it is accepted for PyTorch scripts): a file
    with pickled objects raises ``CheckpointError``.
    """
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "<stream>")
    if isinstance(f, (str, os.PathLike)):
        remove_stale_temporaries(f)
        try:
            stream = open(f, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise CheckpointError(f"{name} is not a readable ddpgrad checkpoint: {exc}") from None
        with stream:
            return _load_stream(stream, name, map_location)
    if not (hasattr(f, "seekable") and f.seekable()):
        f = io.BytesIO(f.read())
    return _load_stream(f, name, map_location)


def _load_stream(f, name, map_location):
    try:
        _check_declared_sizes(f, name)
        loaded = np.load(f, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(
                f"{name} is a single NumPy array (.npy), not a ddpgrad checkpoint: read it with "
                f"numpy.load, or write checkpoints with ddpgrad.save"
            )
        with loaded as npz:
            if META_KEY not in npz.files:
                if any(k == "data.pkl" or k.endswith("/data.pkl") for k in npz.files):
                    raise CheckpointError(
                        f"{name} looks like a PyTorch torch.save file: it holds pickled objects, "
                        f"which ddpgrad never loads. Load it with PyTorch, turn the tensors into "
                        f"NumPy arrays (t.numpy()) and write them with ddpgrad.save"
                    )
                raise CheckpointError(
                    f"{name} is an .npz file but not a ddpgrad checkpoint (no {META_KEY} entry)"
                )
            meta = json.loads(npz[META_KEY].tobytes().decode())
            _check_meta(meta, name)
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
            odd = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
            if odd:
                raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: entries {odd} are not NumPy arrays")
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: its metadata is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: metadata is not UTF-8 ({exc})") from None
    except ValueError as exc:
        text = str(exc).lower()
        if "object arrays" in text:
            raise CheckpointError(
                f"refusing to load {name}: it holds arrays of Python objects, stored pickled, "
                f"which could run code when loaded. ddpgrad checkpoints hold only arrays and JSON "
                f"(write them with ddpgrad.save)."
            ) from None
        if "pickle" in text:
            raise CheckpointError(
                f"refusing to load {name}: it is neither an .npz nor an .npy file, so reading it "
                f"would mean unpickling it (a pickle or an old torch.save file can run code when "
                f"loaded). ddpgrad checkpoints hold only arrays and JSON (write them with "
                f"ddpgrad.save)."
            ) from None
        raise CheckpointError(f"{name} is not a ddpgrad checkpoint: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, MemoryError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{name} is not a readable ddpgrad checkpoint: {type(exc).__name__}: {exc}") from None
    device = _placement(map_location)
    try:
        return _decode(meta["root"], arrays, device, 0)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: {type(exc).__name__}: {exc}") from None


def _check_meta(meta, name):
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{name} is not a ddpgrad checkpoint (format {found!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: format version {version!r} is not a "
                              f"positive integer")
    if version > VERSION:
        raise CheckpointError(f"{name} was written by a newer ddpgrad (format version {version}); upgrade ddpgrad")
    if "root" not in meta:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: its metadata has no root entry")


def _check_declared_sizes(f, name):
    """Refuse a file whose zip members or array headers declare more bytes than it holds, before
    numpy allocates what they declare. Leaves ``f`` at its start."""
    start = f.tell()
    head = f.read(len(_NPY_MAGIC))
    f.seek(start)
    if head.startswith(_NPY_MAGIC):
        raise CheckpointError(
            f"{name} is a single NumPy array (.npy), not a ddpgrad checkpoint: read it with "
            f"numpy.load, or write checkpoints with ddpgrad.save"
        )
    if not head.startswith(_ZIP_MAGIC):
        return  # numpy.load says what it is (a pickle, garbage)
    f.seek(0, os.SEEK_END)
    file_size = f.tell() - start
    f.seek(start)
    with zipfile.ZipFile(f) as archive:
        for info in archive.infolist():
            _check_member(archive, info, file_size, name)
    f.seek(start)


def _check_member(archive, info, file_size, name):
    def damaged(why):
        return CheckpointError(f"{name} is a damaged ddpgrad checkpoint: entry {info.filename!r} {why}")

    if info.header_offset + info.compress_size > file_size:
        raise damaged(f"declares {info.compress_size} bytes, more than the {file_size}-byte file holds")
    limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO)
    if info.file_size > limit:
        raise damaged(f"declares {info.file_size} bytes from {info.compress_size} stored")
    if not info.filename.endswith(".npy"):
        return
    with archive.open(info) as member:
        if member.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            return  # numpy.load gives its raw bytes: refused below as "not NumPy arrays"
        member.seek(0)
        try:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0), (3, 0)):  # 3.0 differs from 2.0 in field-name encoding only
                raise ValueError(f"unknown .npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        except Exception as exc:  # noqa: BLE001 - numpy parses the header; any failure means damaged
            raise damaged(f"has no readable array header ({type(exc).__name__}: {exc})") from None
        header_bytes = member.tell()
    if dtype.hasobject:
        return  # numpy.load refuses it, with the message about pickles
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header_bytes:
        raise damaged(f"declares a {dtype} array of shape {shape} ({declared} bytes) but holds "
                      f"{info.file_size - header_bytes} bytes of data")


def _encode(obj, arrays, where, depth=0):
    if depth > MAX_NESTING:
        raise ValueError(f"{where}: containers nested more than {MAX_NESTING} deep can not be saved")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"t": "value", "v": obj}
    if isinstance(obj, (np.bool_, np.integer, np.floating)):
        return {"t": "value", "v": obj.item()}
    if isinstance(obj, Tensor):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(backend.to_device(obj._data, backend.CPU))
        return {"t": "tensor", "a": key, "rg": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray) or backend.is_cuda_array(obj):
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
            raise TypeError(f"{where}: can't save an object array (it would need pickling)")
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(backend.to_device(obj, backend.CPU))
        return {"t": "ndarray", "a": key}
    if isinstance(obj, np.dtype):
        return {"t": "dtype", "v": obj.name}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: dict keys must be str or int to be saved, got {k!r}")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]", depth + 1)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {"t": kind, "items": [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]}
    raise TypeError(
        f"{where}: can't save an object of type {type(obj).__name__}; checkpoints hold tensors, "
        f"arrays, numbers, strings, None and dicts/lists/tuples of them"
    )


_SAVED_LOCATION = "cpu"  # checkpoints hold host arrays, whatever device the tensors were on


def _placement(map_location):
    """``map_location`` as a device or a function of a CPU tensor: PyTorch's forms (a device, a
    string, a dict from saved location to device, or ``fn(tensor, location)``)."""
    if map_location is None:
        return backend.CPU
    if isinstance(map_location, dict):
        target = map_location.get(_SAVED_LOCATION, _SAVED_LOCATION)
        return backend.as_device(target)
    if callable(map_location) and not isinstance(map_location, backend.device):
        def place(t):
            moved = map_location(t, _SAVED_LOCATION)
            if moved is None:
                return t
            if isinstance(moved, (str, backend.device)):
                return t.to(moved)
            return moved
        return place
    return backend.as_device(map_location)


def _decode(node, arrays, device, depth):
    if depth > MAX_NESTING:
        raise ValueError(f"containers nested more than {MAX_NESTING} deep")
    kind = node["t"]
    if kind == "value":
        return node["v"]
    if kind == "tensor":
        if callable(device) and not isinstance(device, backend.device):
            t = device(Tensor._make(arrays[node["a"]]))
        else:
            t = Tensor._make(backend.to_device(arrays[node["a"]], device))
        if node.get("rg"):
            t.requires_grad_(True)
        return t
    if kind == "ndarray":
        return arrays[node["a"]]
    if kind == "dtype":
        return np.dtype(node["v"])
    if kind == "dict":
        return {k: _decode(v, arrays, device, depth + 1) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, device, depth + 1) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    raise CheckpointError(f"unknown entry kind {kind!r} in checkpoint")


def _host_tag():
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _temporary_pattern(base):
    """Names of ``base``'s temporary files: ``.BASE.HOST.PID.TOKEN.tmp`` (older ones: no host, pid)."""
    return re.compile(rf"^\.{re.escape(base)}\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[0-9a-f]{{12}}\.tmp$")


def remove_stale_temporaries(path) -> list:
    """Remove the temporary files a killed save of ``path`` left behind; return their names.

    Only this checkpoint's: a file of this host is stale when the process that wrote it is gone,
    one of another host when it has not changed for ``STALE_TEMPORARY_S``. A save in progress
    elsewhere keeps its file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = _temporary_pattern(os.path.basename(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed, host, now = [], _host_tag(), time.time()
    for entry in names:
        match = pattern.match(entry)
        if match is None:
            continue
        full = os.path.join(directory, entry)
        try:
            if match["host"] == host:
                stale = not _process_alive(int(match["pid"]))
            else:
                stale = now - os.stat(full).st_mtime > STALE_TEMPORARY_S
            if stale:
                os.unlink(full)
                removed.append(entry)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_temporary(directory, base):
    """A new file beside the target, created with the mode a plain ``open`` would give it (the
    umask applies; ``tempfile.mkstemp`` would make it private to its owner)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {base} in {directory}")


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

