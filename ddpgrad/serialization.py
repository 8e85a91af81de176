"""``ddpgrad.save`` / ``ddpgrad.load``: checkpoints that cannot run code.

A checkpoint is one ``.npz`` file: every array is an entry of its own, and the nesting (dicts,
lists, numbers, strings, which entry is a tensor) is JSON in the entry ``__ddpgrad__``. Loading
uses ``numpy.load(allow_pickle=False)``, so a file holding pickled objects is refused. Saving to a
path is atomic: a temporary file in the same directory, fsync, rename.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile

import numpy as np

from . import backend
from .tensor import Tensor

FORMAT = "ddpgrad-checkpoint"
VERSION = 1
META_KEY = "__ddpgrad__"


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
    try:
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
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
            odd = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
            if odd:
                raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: entries {odd} are not NumPy arrays")
    except CheckpointError:
        raise
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
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{name} is not a readable ddpgrad checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{name} is not a ddpgrad checkpoint (format {found!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{name} was written by a newer ddpgrad (format version {meta['version']}); upgrade ddpgrad"
        )
    device = _placement(map_location)
    try:
        return _decode(meta["root"], arrays, device)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{name} is a damaged ddpgrad checkpoint: {type(exc).__name__}: {exc}") from None


def _encode(obj, arrays, where):
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
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {"t": kind, "items": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
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


def _decode(node, arrays, device):
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
        return {k: _decode(v, arrays, device) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, device) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    raise CheckpointError(f"unknown entry kind {kind!r} in checkpoint")


def _create_temporary(directory, base):
    """A new file beside the target, created with the mode a plain ``open`` would give it (the
    umask applies; ``tempfile.mkstemp`` would make it private to its owner)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
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

