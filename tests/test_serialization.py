"""ddpgrad.save / ddpgrad.load: exact round trips, no unpickling ever, atomic writes, clear errors."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import ddpgrad
import ddpgrad.nn as nn
from ddpgrad.serialization import CheckpointError

SUBPROCESS_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------- round trips
def _nested():
    return {
        "model": {
            "0.weight": ddpgrad.tensor(np.arange(12, dtype=np.float32).reshape(3, 4)),
            "0.bias": ddpgrad.tensor(np.array([0.5, -1.25], dtype=np.float64), requires_grad=True),
            "steps": ddpgrad.tensor(np.array(7, dtype=np.int64)),  # 0-d
            "empty": ddpgrad.zeros(0, 5),
            "mask": ddpgrad.tensor(np.array([True, False, True])),
        },
        "arrays": [
            np.arange(6, dtype=np.int16).reshape(2, 3),
            np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            np.arange(20, dtype=np.float32)[::3],  # not contiguous
            np.array([1.5, np.nan, -np.inf], dtype=np.float16),
            np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
            np.array(["a", "bcd"]),
            np.zeros(3, dtype=[("x", np.int32), ("y", np.float64)]),
        ],
        "numbers": (0, -1, 2**80, 1.0 / 3.0, -0.0, float("inf"), True, False, np.float32(0.25), np.int64(-3)),
        "strings": ["", "ünïcödé ✓", "with \"quotes\" and \n newline"],
        "none": None,
        "dtypes": [ddpgrad.float32, np.dtype("int64"), np.dtype("bool")],
        7: "int key",
        "7": "str key that looks like an int",
        "nested": {"a": [{"b": ({"c": []},)}], "empty_dict": {}, "empty_tuple": ()},
    }


def _assert_same(a, b, where="obj"):
    assert type(a) is type(b) or (isinstance(a, np.generic) and type(b) in (int, float, bool)), \
        f"{where}: {type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} came back as {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, ddpgrad.Tensor):
        assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), where
        assert a.requires_grad == b.requires_grad, f"{where}: requires_grad"
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    elif isinstance(a, float):
        assert a == b and np.copysign(1, a) == np.copysign(1, b), f"{where}: {a!r} came back as {b!r}"
    else:
        assert a == b, f"{where}: {a!r} came back as {b!r}"


def test_nested_containers_round_trip_exactly_through_a_path(tmp_path):
    obj = _nested()
    ddpgrad.save(obj, tmp_path / "ckpt.npz")
    _assert_same(obj, ddpgrad.load(tmp_path / "ckpt.npz"))


def test_nested_containers_round_trip_exactly_through_a_file_object():
    obj = _nested()
    buf = io.BytesIO()
    ddpgrad.save(obj, buf)
    buf.seek(0)
    _assert_same(obj, ddpgrad.load(buf))


def test_load_gives_independent_writable_tensors(tmp_path):
    ddpgrad.save({"w": ddpgrad.ones(3)}, tmp_path / "c.npz")
    first, second = ddpgrad.load(tmp_path / "c.npz"), ddpgrad.load(tmp_path / "c.npz")
    first["w"]._data += 1
    np.testing.assert_array_equal(second["w"].numpy(), np.ones(3, np.float32))


def _model_and_adam():
    ddpgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, ddpgrad.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)


def _adam_steps(model, opt, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = ddpgrad.tensor(rng.standard_normal((5, 4)).astype(np.float32))
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_model_and_optimizer_state_resume_bitwise(tmp_path):
    """int keys (parameter indices), tuples (betas) and step counts survive, and training goes
    on exactly as if it never stopped."""
    model, opt = _model_and_adam()
    _adam_steps(model, opt, 3, seed=1)
    ddpgrad.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.npz")
    _adam_steps(model, opt, 4, seed=2)

    state = ddpgrad.load(tmp_path / "c.npz")
    assert sorted(state["optimizer"]["state"]) == list(range(4))
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)
    model2, opt2 = _model_and_adam()
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    _adam_steps(model2, opt2, 4, seed=2)

    for (name, p), p2 in zip(model.named_parameters(), model2.parameters()):
        assert np.array_equal(p.detach().numpy(), p2.detach().numpy()), name
    for i, (p, p2) in enumerate(zip(model.parameters(), model2.parameters())):
        for key, value in opt.state[p].items():
            assert np.array_equal(np.asarray(value.numpy()), np.asarray(opt2.state[p2][key].numpy())), (i, key)


def test_rng_state_round_trips(tmp_path):
    ddpgrad.manual_seed(3)
    ddpgrad.randn(10)
    ddpgrad.save({"rng": ddpgrad.get_rng_state()}, tmp_path / "c.npz")
    expected = ddpgrad.randn(5).numpy()
    ddpgrad.manual_seed(99)
    ddpgrad.set_rng_state(ddpgrad.load(tmp_path / "c.npz")["rng"])
    np.testing.assert_array_equal(ddpgrad.randn(5).numpy(), expected)


def test_saved_file_gets_the_usual_permissions(tmp_path):
    """Not the owner-only mode of a temporary file: a checkpoint in a shared project directory
    must be as readable as anything else written there."""
    umask = os.umask(0o022)
    os.umask(umask)
    ddpgrad.save({"x": 1}, tmp_path / "c.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "c.npz").st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------------------- never unpickle
class _Payload:
    """Unpickling this creates the file ``path``: the stand-in for arbitrary code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _object_array(marker):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _Payload(marker), "x"
    return arr


def _plain_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(marker)}, f)


def _npy_object_array(path, marker):
    with open(path, "wb") as f:
        np.save(f, _object_array(marker), allow_pickle=True)


def _npz_object_array(path, marker):
    with open(path, "wb") as f:
        np.savez(f, X=np.ones(3), evil=_object_array(marker))


def _checkpoint_with_object_entry(path, marker):
    """A genuine ddpgrad checkpoint with one more entry: an object array (pickled inside)."""
    ddpgrad.save({"w": ddpgrad.ones(2)}, path)
    member = io.BytesIO()
    np.save(member, _object_array(marker), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("evil.npy", member.getvalue())


def _npz_whose_entry_is_pickled(path, marker):
    """An entry of the archive that is a bare pickle rather than an .npy."""
    ddpgrad.save({"w": ddpgrad.ones(2)}, path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("evil.npy", pickle.dumps(_Payload(marker)))


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: without this, the refusal tests below could pass with a harmless payload."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("write,message", [
    (_plain_pickle, "unpickling"),
    (_npy_object_array, "pickled"),
    (_npz_object_array, "not a ddpgrad checkpoint"),  # refused before any entry is read
    (_checkpoint_with_object_entry, "pickled"),
    (_npz_whose_entry_is_pickled, "not NumPy arrays"),
])
@pytest.mark.parametrize("weights_only", [True, False])
def test_pickled_content_is_refused_without_running_it(tmp_path, write, message, weights_only):
    path, marker = tmp_path / "untrusted.bin", tmp_path / "code_ran"
    write(path, marker)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        ddpgrad.load(path, weights_only=weights_only)
    assert not marker.exists(), "loading the file ran code from it"
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_pytorch_checkpoint_is_refused_with_advice(tmp_path):
    torch = pytest.importorskip("torch", reason="needs PyTorch to write a torch.save file")
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="PyTorch"):
        ddpgrad.load(tmp_path / "model.pt")


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable"),
    (b"hello, not a checkpoint", "neither an .npz nor an .npy"),
    (b"PK\x03\x04 truncated zip", "not a readable"),
])
def test_garbage_files_give_checkpoint_errors(tmp_path, content, message):
    (tmp_path / "c.npz").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        ddpgrad.load(tmp_path / "c.npz")


def test_npy_and_foreign_npz_are_refused_clearly(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(CheckpointError, match="single NumPy array"):
        ddpgrad.load(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", X=np.ones(3))
    with pytest.raises(CheckpointError, match="not a ddpgrad checkpoint"):
        ddpgrad.load(tmp_path / "b.npz")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ddpgrad.load(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------- unsupported objects
class _Custom:
    pass


@pytest.mark.parametrize("obj,where,what", [
    ({"model": {"layer": {"w": _Custom()}}}, "obj['model']['layer']['w']", "_Custom"),
    ({"opt": [1, 2, {3, 4}]}, "obj['opt'][2]", "set"),
    ({"x": [lambda: 0]}, "obj['x'][0]", "function"),
    ({"a": np.array([object()], dtype=object)}, "obj['a']", "object array"),
    ({"b": {(1, 2): 3}}, "obj['b']", "(1, 2)"),
    ({"c": {1.5: 3}}, "obj['c']", "1.5"),
    ({"d": 1 + 2j}, "obj['d']", "complex"),
    ({"e": np.datetime64("2024-01-01")}, "obj['e']", "datetime64"),
])
def test_unsupported_objects_raise_type_error_naming_where(tmp_path, obj, where, what):
    with pytest.raises(TypeError) as info:
        ddpgrad.save(obj, tmp_path / "c.npz")
    assert where in str(info.value) and what in str(info.value), str(info.value)
    assert os.listdir(tmp_path) == [], "a failed save left a file behind"


# ---------------------------------------------------------------------------------- atomic writes
def _only(directory):
    return sorted(os.listdir(directory))


def test_failed_write_keeps_the_old_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "last.npz"
    ddpgrad.save({"generation": 1, "w": ddpgrad.ones(1000)}, target)

    def fail_midway(file, **arrays):
        file.write(b"PK\x03\x04 the first bytes of a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ddpgrad.serialization.np.savez", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        ddpgrad.save({"generation": 2, "w": ddpgrad.zeros(1000)}, target)
    assert _only(tmp_path) == ["last.npz"]
    assert ddpgrad.load(target)["generation"] == 1


def test_interrupted_write_keeps_the_old_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "last.npz"
    ddpgrad.save({"generation": 1}, target)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("ddpgrad.serialization.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ddpgrad.save({"generation": 2}, target)
    monkeypatch.undo()
    assert _only(tmp_path) == ["last.npz"]
    assert ddpgrad.load(target)["generation"] == 1


def test_failed_rename_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "last.npz"

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr("ddpgrad.serialization.os.replace", refuse)
    with pytest.raises(PermissionError):
        ddpgrad.save({"generation": 1}, target)
    assert _only(tmp_path) == []


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import ddpgrad

    path, mode, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    big = np.random.default_rng(0).standard_normal(mb * 2**20 // 8)
    generation = 0
    while True:
        generation += 1
        obj = {"generation": generation, "big": big, "tail": ddpgrad.full((100,), float(generation))}
        if mode == "atomic":
            ddpgrad.save(obj, path)
        else:  # the naive way, to show that this test catches it
            with open(path, "wb") as f:
                ddpgrad.save(obj, f)
        print(generation, flush=True)
""")
CHECKPOINT_MB = 32
KILLS = 6


def _kill_while_saving(tmp_path, mode, seed):
    """Start a process that saves a large checkpoint in a loop and SIGKILL it at random moments.

    Returns, per kill: (what ``load`` gave or the exception it raised, temporary files left).
    """
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / "ckpt" / "last.npz"
    target.parent.mkdir()
    ddpgrad.save({"generation": 0, "big": np.zeros(1), "tail": ddpgrad.zeros(100)}, target)
    rng = random.Random(seed)
    outcomes = []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(script), str(target), mode, str(CHECKPOINT_MB)],
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], SUBPROCESS_TIMEOUT_S)
            assert ready, "the writer did not finish its first save"
            start = time.perf_counter()
            proc.stdout.readline()
            ready, _, _ = select.select([proc.stdout], [], [], SUBPROCESS_TIMEOUT_S)
            assert ready, "the writer did not finish its second save"
            one_save = time.perf_counter() - start
            time.sleep(rng.uniform(0, 2 * one_save))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.stdout.close()
            proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
        leftovers = [name for name in _only(target.parent) if name != "last.npz"]
        try:
            outcomes.append((ddpgrad.load(target), leftovers))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes.append((exc, leftovers))
        if mode == "direct":
            for name in leftovers:
                os.unlink(target.parent / name)
        else:  # the load removed what the killed save left behind
            assert _only(target.parent) == ["last.npz"], _only(target.parent)
    return outcomes


@pytest.mark.slow
def test_killing_a_save_midway_leaves_the_previous_checkpoint_loadable(tmp_path):
    outcomes = _kill_while_saving(tmp_path, "atomic", seed=1)
    expected_big = np.random.default_rng(0).standard_normal(CHECKPOINT_MB * 2**20 // 8)
    for loaded, leftovers in outcomes:
        assert isinstance(loaded, dict), f"the checkpoint could not be loaded after a kill: {loaded}"
        generation = loaded["generation"]
        assert generation >= 1
        np.testing.assert_array_equal(loaded["big"], expected_big)
        np.testing.assert_array_equal(loaded["tail"].numpy(), np.full(100, generation, np.float32))
        assert all(name.endswith(".tmp") and name.startswith(".last.npz.") for name in leftovers), leftovers
    # The kills must have hit saves in progress, or this test proved nothing.
    assert any(leftovers for _, leftovers in outcomes), "no kill landed in the middle of a save"


@pytest.mark.slow
def test_kill_test_catches_a_non_atomic_writer(tmp_path):
    """Control for the test above: writing straight into the target does get caught."""
    outcomes = _kill_while_saving(tmp_path, "direct", seed=2)
    assert any(not isinstance(loaded, dict) for loaded, _ in outcomes)


# ---------------------------------------------------------------------------------- stale temporaries
def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)
    return int(proc.stdout)


@pytest.mark.parametrize("trigger", ["save", "load"])
def test_temporaries_of_killed_saves_are_removed_and_live_ones_kept(tmp_path, trigger):
    from ddpgrad.serialization import STALE_TEMPORARY_S, _host_tag

    target = tmp_path / "last.npz"
    ddpgrad.save({"generation": 0}, target)
    host, old = _host_tag(), time.time() - 2 * STALE_TEMPORARY_S
    files = {
        f".last.npz.{host}.{_dead_pid()}.0123456789ab.tmp": "removed",  # its writer is gone
        f".last.npz.{host}.{os.getppid()}.0123456789ab.tmp": "kept",  # its writer still runs
        ".last.npz.otherhost.1.0123456789ab.tmp": "kept",  # another host's, recent: maybe saving
        ".last.npz.otherhost.2.0123456789ab.tmp": "removed",  # another host's, untouched for 2 days
        ".last.npz.00112233aabb.tmp": "removed",  # the older naming, untouched for 2 days
        f".other.npz.{host}.{_dead_pid()}.0123456789ab.tmp": "kept",  # another checkpoint's
        "last.npz.backup": "kept",
    }
    for name in files:
        (tmp_path / name).write_bytes(b"partial")
    for name in (".last.npz.otherhost.2.0123456789ab.tmp", ".last.npz.00112233aabb.tmp"):
        os.utime(tmp_path / name, (old, old))
    if trigger == "save":
        ddpgrad.save({"generation": 1}, target)
    else:
        assert ddpgrad.load(target) == {"generation": 0}
    kept = sorted(name for name, fate in files.items() if fate == "kept")
    assert _only(tmp_path) == sorted([*kept, "last.npz"])


# ---------------------------------------------------------------------------------- hostile files
def _npz_with(path, meta=None, members=None):
    """A zip laid out as ddpgrad.save lays it out, with metadata and members as given."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        if meta is not None:
            text = meta if isinstance(meta, str) else json.dumps(meta)
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.frombuffer(text.encode(), np.uint8))
            archive.writestr("__ddpgrad__.npy", buf.getvalue())
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return path


def _npy_header(shape, dtype, body=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                "fortran_order": False, "shape": shape})
    return buf.getvalue() + body


GOOD_ROOT = {"t": "tensor", "a": "a0"}
HOSTILE = {
    "version_a_string": (dict(format="ddpgrad-checkpoint", version="1", root=GOOD_ROOT), None, "format version '1'"),
    "version_a_float": (dict(format="ddpgrad-checkpoint", version=1.5, root=GOOD_ROOT), None, "format version 1.5"),
    "version_true": (dict(format="ddpgrad-checkpoint", version=True, root=GOOD_ROOT), None, "format version True"),
    "version_zero": (dict(format="ddpgrad-checkpoint", version=0, root=GOOD_ROOT), None, "format version 0"),
    "version_missing": (dict(format="ddpgrad-checkpoint", root=GOOD_ROOT), None, "format version None"),
    "no_root": (dict(format="ddpgrad-checkpoint", version=1), None, "no root entry"),
    "json_nested_5000_deep": ('{"format": "ddpgrad-checkpoint", "version": 1, "root": ' + "[" * 5000 + "]" * 5000 + "}",
                              None, "damaged"),
    "containers_nested_5000_deep": (
        '{"format": "ddpgrad-checkpoint", "version": 1, "root": ' + '{"t": "list", "items": [' * 5000
        + '{"t": "value", "v": 1}' + "]}" * 5000 + "}", None, "damaged"),
    "containers_nested_150_deep": (
        '{"format": "ddpgrad-checkpoint", "version": 1, "root": ' + '{"t": "list", "items": [' * 150
        + '{"t": "value", "v": 1}' + "]}" * 150 + "}", None, "nested more than 100 deep"),
    "root_a_list": (dict(format="ddpgrad-checkpoint", version=1, root=[1, 2]), None, "damaged"),
    "unknown_kind": (dict(format="ddpgrad-checkpoint", version=1, root={"t": "eval", "v": "1"}), None, "unknown entry kind"),
    "dict_items_not_pairs": (dict(format="ddpgrad-checkpoint", version=1, root={"t": "dict", "items": [[1, 2, 3]]}),
                             None, "damaged"),
    "unhashable_key": (dict(format="ddpgrad-checkpoint", version=1,
                            root={"t": "dict", "items": [[[1], {"t": "value", "v": 1}]]}), None, "damaged"),
    "missing_array": (dict(format="ddpgrad-checkpoint", version=1, root=GOOD_ROOT), {}, "damaged"),
    "array_declaring_8_tib": (dict(format="ddpgrad-checkpoint", version=1, root=GOOD_ROOT),
                              {"a0.npy": _npy_header((2**40,), np.float64, b"\0" * 64)},
                              "declares a float64 array of shape (1099511627776,) (8796093022208 bytes) but holds 64"),
    "array_short_by_one_element": (dict(format="ddpgrad-checkpoint", version=1, root=GOOD_ROOT),
                                   {"a0.npy": _npy_header((10,), np.float32, b"\0" * 36)}, "but holds 36 bytes"),
    "metadata_declaring_8_tib": (None, {"__ddpgrad__.npy": _npy_header((2**43,), np.uint8, b"{}")},
                                 "declares a uint8 array of shape (8796093022208,)"),
    "array_header_garbage": (dict(format="ddpgrad-checkpoint", version=1, root=GOOD_ROOT),
                             {"a0.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': os.sys}  \n"}, "no readable array header"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_give_checkpoint_errors_before_any_large_allocation(tmp_path, case):
    import tracemalloc

    meta, members, message = HOSTILE[case]
    if members is None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.arange(3, dtype=np.float32))
        members = {"a0.npy": buf.getvalue()}
    path = _npz_with(tmp_path / "hostile.npz", meta, members)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=re.escape(message)):
            ddpgrad.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"loading a {path.stat().st_size}-byte file allocated {peak} bytes"


def test_deeply_nested_objects_are_refused_at_save_naming_the_limit(tmp_path):
    deep = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        ddpgrad.save(deep, tmp_path / "deep.npz")
    nested = []
    for _ in range(90):
        nested = [nested]
    ddpgrad.save(nested, tmp_path / "ok.npz")
    assert ddpgrad.load(tmp_path / "ok.npz") == nested
