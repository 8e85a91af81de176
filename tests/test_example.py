"""examples/train_mlp.py and examples/quickstart.py, run as a user runs them: as subprocesses,
under ``mpiexec -n N`` for N in 1, 2, 4, and in one plain process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddpgrad

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_mlp.py"
QUICKSTART = ROOT / "examples" / "quickstart.py"
TIMEOUT_S = 120
MPI_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPIR_", "HYDRA_", "OMPI_")

SUMMARY_FIELDS = ["world_size", "global_batch", "epochs", "wall_s", "samples_per_s", "ms_per_step",
                  "comm_wait_share", "val_acc"]
METRIC_FIELDS = {"epoch", "train_loss", "val_loss", "val_acc", "epoch_s", "comm_wait_s"}

# Short runs on the digits: a larger learning rate than the default reaches >90% in 5 epochs.
EPOCHS = 5
TRAIN_OPTIONS = ["--epochs", str(EPOCHS), "--lr", "3e-3", "--batch-size", "64"]
STEPS_PER_EPOCH = 1438 // 64  # 1797 digits, 20% held out, drop_last


def _mpiexec():
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs an MPI launcher (pip install mpich)")


def _env():
    """This environment minus any MPI launcher's variables (pytest itself may run under one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MPI_PREFIXES)}
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def run_example(args, ranks=None, cwd=None, script=EXAMPLE):
    """Run the example in one plain process (``ranks=None``) or under ``mpiexec -n ranks``."""
    launcher = [] if ranks is None else [MPIEXEC, "-n", str(ranks)]
    return subprocess.run([*launcher, sys.executable, str(script), *map(str, args)], cwd=cwd or ROOT,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def summary(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("summary: ")]
    assert len(lines) == 1, f"expected one summary line, got {lines}"
    fields = dict(item.split("=", 1) for item in lines[0][len("summary: "):].split())
    assert list(fields) == SUMMARY_FIELDS
    return {k: (int(v) if k in ("world_size", "global_batch", "epochs") else float(v)) for k, v in fields.items()}


def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """Runs of the example with TRAIN_OPTIONS, made once each and shared by the tests below."""
    cache = {}

    def get(ranks):
        if ranks not in cache:
            out = tmp_path_factory.mktemp(f"ranks{ranks}")
            proc = run_example([*TRAIN_OPTIONS, "--metrics", out / "metrics.jsonl", "--plot", out / "curves.png"],
                               ranks=ranks)
            assert proc.returncode == 0, proc.stderr
            cache[ranks] = proc, out
        return cache[ranks]

    return get


# ---------------------------------------------------------------------------------- training
@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_example_trains_on_n_ranks_and_reports(example_runs, ranks):
    proc, out = example_runs(ranks)
    s = summary(proc.stdout)
    assert s["world_size"] == ranks and s["global_batch"] == 64 and s["epochs"] == EPOCHS
    assert s["val_acc"] >= 0.90, s
    steps = EPOCHS * STEPS_PER_EPOCH
    assert s["wall_s"] > 0 and s["samples_per_s"] > 0 and s["ms_per_step"] > 0
    assert s["samples_per_s"] * s["wall_s"] == pytest.approx(steps * 64, rel=0.02)
    assert s["ms_per_step"] * steps == pytest.approx(1000 * s["wall_s"], rel=0.02)
    assert 0 <= s["comm_wait_share"] <= 1
    if ranks == 1:
        assert s["comm_wait_share"] < 0.2  # nothing to wait for in a world of one

    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
    assert all(set(m) == METRIC_FIELDS for m in metrics)
    assert metrics[-1]["val_acc"] == s["val_acc"]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]

    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert png[12:16] == b"IHDR" and png.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")


@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_only_rank_0_logs(example_runs, ranks):
    proc, _ = example_runs(ranks)
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith(("[rank 0] ", "summary: ")) for line in lines), proc.stdout
    assert sum(line.startswith("[rank 0] epoch") for line in lines) == EPOCHS
    assert not re.search(r"\[rank [1-9]", proc.stdout + proc.stderr)
    pytest.importorskip("tqdm", reason="the progress bar needs tqdm")
    # Every progress bar starts by drawing "0%" once: once per epoch, from one rank only.
    assert len(re.findall(rf"epoch \d+/{EPOCHS}:\s+0%", proc.stderr)) == EPOCHS, proc.stderr


@needs_mpi
def test_one_process_and_four_ranks_follow_the_same_path(example_runs):
    """The global batch is split across ranks, so the optimisation path is the same: the metrics
    agree to float32 rounding (the gradient average is summed in another order)."""
    single, single_dir = example_runs(None)
    _, four_dir = example_runs(4)
    assert summary(single.stdout)["world_size"] == 1
    a, b = read_metrics(single_dir / "metrics.jsonl"), read_metrics(four_dir / "metrics.jsonl")
    assert len(a) == len(b) == EPOCHS
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5), (x, y)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5), (x, y)
        assert abs(x["val_acc"] - y["val_acc"]) <= 0.005, (x, y)


# ---------------------------------------------------------------------------------- --data
def _blobs(n=300, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = 4.0 * np.eye(classes, features)[y] + rng.standard_normal((n, features))
    return X.astype(np.float32), y.astype(np.int64)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


X_GOOD, Y_GOOD = _blobs()
BAD_DATA = {
    "missing_file": (None, "no such file"),
    "missing_array": (dict(X=X_GOOD, labels=Y_GOOD), "missing array(s) ['y']"),
    "float_labels": (dict(X=X_GOOD, y=Y_GOOD.astype(np.float64)), "y must be a 1-D integer array of class labels, got float64"),
    "2d_labels": (dict(X=X_GOOD, y=Y_GOOD[:, None]), "y must be a 1-D integer array"),
    "1d_features": (dict(X=X_GOOD[:, 0], y=Y_GOOD), "X must be a 2-D numeric array (samples, features), got float32 (300,)"),
    "no_features": (dict(X=np.zeros((300, 0), np.float32), y=Y_GOOD), "X must be a 2-D numeric array"),
    "text_features": (dict(X=np.array([["a"] * 8] * 300), y=Y_GOOD), "X must be a 2-D numeric array"),
    "length_mismatch": (dict(X=X_GOOD, y=Y_GOOD[:-1]), "X has 300 rows but y has 299 labels"),
    "negative_label": (dict(X=X_GOOD, y=np.where(np.arange(300) == 7, -1, Y_GOOD)), "labels must be 0..C-1, found -1"),
    "nan_features": (dict(X=np.where(np.arange(8) == 3, np.nan, X_GOOD), y=Y_GOOD), "NaN"),
    "object_array": (dict(X=X_GOOD, y=np.array(list(Y_GOOD), dtype=object)), "not a readable .npz"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_file_fails_with_a_clear_message(tmp_path, case):
    arrays, message = BAD_DATA[case]
    path = tmp_path / "data.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    proc = run_example(["--data", path, "--epochs", "1", "--quiet"])
    assert proc.returncode != 0
    assert "error: --data" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "summary:" not in proc.stdout


def test_good_data_file_trains(tmp_path):
    path = _write(tmp_path / "data.npz", X=X_GOOD, y=Y_GOOD)
    proc = run_example(["--data", path, "--epochs", "5", "--lr", "1e-2", "--batch-size", "32", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert "3 classes, model 8-128-128-3" in proc.stdout
    assert summary(proc.stdout)["val_acc"] >= 0.9


@needs_mpi
def test_batch_size_not_divisible_by_world_size_is_refused(tmp_path):
    path = _write(tmp_path / "data.npz", X=X_GOOD, y=Y_GOOD)
    proc = run_example(["--data", path, "--batch-size", "63", "--epochs", "1", "--quiet"], ranks=2)
    assert proc.returncode != 0
    assert "--batch-size 63 does not divide evenly over 2 ranks" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- --resume
def _assert_trees_bitwise_equal(a, b, where="checkpoint"):
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_trees_bitwise_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_trees_bitwise_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, ddpgrad.Tensor):
        x, y = a.detach().numpy(), b.detach().numpy()
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


RESUME_CASES = {
    "one_process_adam": (None, "adam"),
    "one_process_sgd_momentum": (None, "sgd"),
    "two_ranks_adam": (2, "adam"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path, case):
    ranks, optimizer = RESUME_CASES[case]
    if ranks and MPIEXEC is None:
        pytest.skip("needs an MPI launcher (pip install mpich)")
    common = ["--synthetic", "1200", "--hidden", "32", "32", "--epochs", "6", "--optimizer", optimizer,
              "--lr", "1e-2", "--quiet"]
    steps = [
        [*common, "--stop-after", "3", "--checkpoint-dir", tmp_path / "A"],
        [*common, "--resume", "--checkpoint-dir", tmp_path / "A"],
        [*common, "--checkpoint-dir", tmp_path / "B"],
    ]
    runs = [run_example(args, ranks=ranks) for args in steps]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    assert "stopping after epoch 3" in runs[0].stdout
    assert "resumed from" in runs[1].stdout and "after epoch 2" in runs[1].stdout

    resumed, straight = ddpgrad.load(tmp_path / "A" / "last.npz"), ddpgrad.load(tmp_path / "B" / "last.npz")
    assert resumed["epoch"] == straight["epoch"] == 5
    assert list(resumed["model"]) == list(straight["model"])
    for name in straight["model"]:
        assert np.array_equal(resumed["model"][name].numpy(), straight["model"][name].numpy()), name
    _assert_trees_bitwise_equal(resumed["optimizer"], straight["optimizer"], "optimizer")
    _assert_trees_bitwise_equal(resumed["rng"], straight["rng"], "rng")
    timing = ("epoch_s", "comm_wait_s")
    strip = [[{k: v for k, v in h.items() if k not in timing} for h in c["history"]] for c in (resumed, straight)]
    assert strip[0] == strip[1]
    assert summary(runs[1].stdout)["val_acc"] == summary(runs[2].stdout)["val_acc"]


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    proc = run_example(["--synthetic", "300", "--epochs", "2", "--resume", "--checkpoint-dir", tmp_path / "none",
                        "--quiet"])
    assert proc.returncode != 0
    assert "--resume needs an existing checkpoint" in proc.stderr


def test_resume_with_a_different_model_is_refused(tmp_path):
    common = ["--synthetic", "300", "--epochs", "2", "--checkpoint-dir", tmp_path / "A", "--quiet"]
    first = run_example([*common, "--stop-after", "1", "--hidden", "16"])
    assert first.returncode == 0, first.stderr
    proc = run_example([*common, "--resume", "--hidden", "16", "8"])
    assert proc.returncode != 0
    assert "--hidden was [16], now [16, 8]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- quickstart
def _quickstart_losses(stdout):
    return [float(m.group(2)) for m in re.finditer(r"^step\s+(\d+)\s+loss\s+([-\d.eE+]+)$", stdout, re.M)]


def test_quickstart_loss_goes_down():
    proc = run_example([], script=QUICKSTART)
    assert proc.returncode == 0, proc.stderr
    steps = [int(m) for m in re.findall(r"^step\s+(\d+)", proc.stdout, re.M)]
    assert steps == list(range(0, 1000, 100))
    losses = _quickstart_losses(proc.stdout)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0]


def test_quickstart_is_a_pytorch_script_with_two_import_lines_changed(tmp_path):
    pytest.importorskip("torch", reason="needs PyTorch to run the script as PyTorch")
    source = QUICKSTART.read_text()
    imports = ["import ddpgrad as torch\n", "import ddpgrad.nn as nn\n"]
    assert all(line in source for line in imports)
    as_pytorch = source.replace(imports[0], "import torch\n").replace(imports[1], "import torch.nn as nn\n")
    assert "ddpgrad" not in as_pytorch.split('"""')[-1]  # nothing else of ddpgrad in the code
    (tmp_path / "quickstart_torch.py").write_text(as_pytorch)
    proc = run_example([], script=tmp_path / "quickstart_torch.py")
    assert proc.returncode == 0, proc.stderr
    losses = _quickstart_losses(proc.stdout)
    assert len(losses) == 10 and losses[-1] < losses[0]
