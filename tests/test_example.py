"""examples/train_mlp.py and examples/quickstart.py, run as a user runs them: as subprocesses,
under ``mpiexec -n N`` for N in 1, 2, 4, and in one plain process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
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
METRIC_FIELDS = {"run_id", "epoch", "train_loss", "val_loss", "val_acc", "epoch_s", "comm_wait_s"}

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
    assert "%|" not in proc.stderr, "a progress bar was written to a pipe"


def test_progress_bar_is_drawn_on_a_terminal_only():
    pytest.importorskip("tqdm", reason="the progress bar needs tqdm")
    import pty
    import threading

    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # as a terminal window has
    drawn = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the process ended and its end of the terminal is closed
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, str(EXAMPLE), "--synthetic", "600", "--epochs", "2"], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=TIMEOUT_S)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    text = b"".join(drawn)
    assert proc.returncode == 0, text
    # Every progress bar starts by drawing "0%" once: once per epoch.
    assert len(re.findall(rb"epoch \d+/2:\s+0%", text)) == 2, text


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
    assert "resumed from" in runs[1].stdout and "after epoch 3\n" in runs[1].stdout

    resumed, straight = ddpgrad.load(tmp_path / "A" / "last.npz"), ddpgrad.load(tmp_path / "B" / "last.npz")
    assert resumed["epoch"] == straight["epoch"] == 5
    assert list(resumed["model"]) == list(straight["model"])
    for name in straight["model"]:
        assert np.array_equal(resumed["model"][name].numpy(), straight["model"][name].numpy()), name
    _assert_trees_bitwise_equal(resumed["optimizer"], straight["optimizer"], "optimizer")
    _assert_trees_bitwise_equal(resumed["rng"], straight["rng"], "rng")
    timing = ("epoch_s", "comm_wait_s", "run_id")  # run ids differ: two runs
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


# ---------------------------------------------------------------------------------- input checks
def run_without(modules, args, ranks=None):
    """Run the example as if ``modules`` were not installed (importing them fails)."""
    wrapper = ("import runpy, sys\n"
               f"for name in {list(modules)!r}:\n    sys.modules[name] = None\n"
               f"sys.argv = [{str(EXAMPLE)!r}, *sys.argv[1:]]\n"
               f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n")
    launcher = [] if ranks is None else [MPIEXEC, "-n", str(ranks)]
    return subprocess.run([*launcher, sys.executable, "-c", wrapper, *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def assert_refused(proc, message):
    """Non-zero exit, one error line (printed once), no traceback, no training."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Abort" not in proc.stderr, proc.stderr
    assert "epoch" not in proc.stdout and "summary:" not in proc.stdout, proc.stdout


BAD_OPTIONS = {
    "epochs_0": (["--epochs", "0"], "--epochs 0: must be at least 1"),
    "epochs_negative": (["--epochs", "-1"], "--epochs -1: must be at least 1"),
    "lr_nan": (["--lr", "nan"], "--lr nan: must be a positive finite number"),
    "lr_negative": (["--lr", "-1"], "--lr -1.0: must be a positive finite number"),
    "lr_infinite": (["--lr", "inf"], "--lr inf: must be a positive finite number"),
    "lr_not_a_number": (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    "batch_size_0": (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    "hidden_0": (["--hidden", "128", "0"], "--hidden 0: every hidden layer needs at least 1 unit"),
    "synthetic_0": (["--synthetic", "0"], "--synthetic 0: need at least 2 samples"),
    "data_and_synthetic": (["--data", "x.npz", "--synthetic", "100"], "--data and --synthetic both given"),
    "val_fraction_1": (["--val-fraction", "1"], "--val-fraction 1.0: must be between 0 and 1"),
    "stop_after_0": (["--stop-after", "0"], "--stop-after 0: must be at least 1"),
    "resume_without_dir": (["--resume"], "--resume needs --checkpoint-dir"),
    "unknown_device": (["--device", "tpu"], "--device tpu: unknown device 'tpu'"),
    "unknown_option": (["--learning-rate", "3"], "unrecognized arguments: --learning-rate 3"),
    "metrics_in_missing_directory": (["--metrics", "no/such/dir/metrics.jsonl"], "directory"),
    "too_few_samples_for_a_batch": (["--synthetic", "50"], "40 training samples are fewer than one global batch of 64"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_refused_before_training(case):
    args, message = BAD_OPTIONS[case]
    assert_refused(run_example([*args, "--quiet"]), message)


def test_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "ckpt").write_text("not a directory")
    proc = run_example(["--checkpoint-dir", tmp_path / "ckpt" / "run1", "--quiet"])
    assert_refused(proc, f"--checkpoint-dir {tmp_path / 'ckpt' / 'run1'}: {tmp_path / 'ckpt'} is a file")


def test_labels_far_beyond_the_sample_count_are_refused(tmp_path):
    path = _write(tmp_path / "data.npz", X=X_GOOD, y=np.where(np.arange(300) == 5, 10**9, Y_GOOD))
    assert_refused(run_example(["--data", path, "--quiet"]), "labels go up to 1000000000 for 300 samples")


def test_a_single_class_is_refused(tmp_path):
    path = _write(tmp_path / "data.npz", X=X_GOOD, y=np.full(300, 2))
    assert_refused(run_example(["--data", path, "--quiet"]), "every label is 2; a classifier needs at least 2 classes")


def test_plot_without_matplotlib_is_refused_before_training(tmp_path):
    proc = run_without(["matplotlib"], ["--plot", tmp_path / "curves.png", "--quiet"])
    assert_refused(proc, "--plot")
    assert "needs matplotlib" in proc.stderr


def test_cuda_without_cupy_is_refused_once_on_every_rank():
    proc = run_without(["cupy"], ["--device", "cuda", "--quiet"], ranks=4 if MPIEXEC else None)
    assert_refused(proc, '--device cuda: no GPU usable (needs CuPy and a CUDA device: pip install "ddpgrad[gpu]")')


def test_default_data_missing_is_refused(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "train_mlp.py")  # a copy without examples/data beside it
    proc = run_example(["--quiet"], script=tmp_path / "train_mlp.py")
    assert_refused(proc, "digits.npz is missing")


@needs_mpi
def test_a_bad_option_on_four_ranks_ends_every_rank_with_one_message():
    start = time.monotonic()
    proc = run_example(["--epochs", "0", "--quiet"], ranks=4)
    assert_refused(proc, "--epochs 0: must be at least 1")
    assert time.monotonic() - start < 30


def run_mpmd(parts):
    """One MPI job whose ranks run the example with different arguments: ``[(ranks, args), ...]``,
    the way a file present on some nodes' local disks only looks to the job."""
    command = [MPIEXEC]
    for i, (ranks, args) in enumerate(parts):
        command += ([":"] if i else []) + ["-n", str(ranks), sys.executable, str(EXAMPLE), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


@needs_mpi
@pytest.mark.parametrize("missing_on", ["rank_0", "rank_3"])
def test_a_data_file_missing_on_some_ranks_ends_every_rank_naming_them(tmp_path, missing_on):
    present = _write(tmp_path / "data.npz", X=X_GOOD, y=Y_GOOD)
    absent = tmp_path / "elsewhere" / "data.npz"
    common = ["--batch-size", "32", "--epochs", "1", "--quiet"]
    parts = [(1, ["--data", absent, *common]), (3, ["--data", present, *common])]
    if missing_on == "rank_3":
        parts = [(3, ["--data", present, *common]), (1, ["--data", absent, *common])]
    start = time.monotonic()
    proc = run_mpmd(parts)
    assert_refused(proc, f"--data {absent}: no such file (on rank(s) {missing_on[-1]})")
    assert time.monotonic() - start < 30


@needs_mpi
def test_a_checkpoint_missing_on_some_ranks_ends_every_rank_naming_them(tmp_path):
    common = ["--synthetic", "300", "--epochs", "2", "--quiet"]
    first = run_example([*common, "--stop-after", "1", "--checkpoint-dir", tmp_path / "A"], ranks=2)
    assert first.returncode == 0, first.stderr
    proc = run_mpmd([(1, [*common, "--resume", "--checkpoint-dir", tmp_path / "A"]),
                     (1, [*common, "--resume", "--checkpoint-dir", tmp_path / "B"])])
    assert_refused(proc, f"--resume needs an existing checkpoint; {tmp_path / 'B' / 'last.npz'} not found (on rank(s) 1)")


# ---------------------------------------------------------------------------------- the example's defaults
def test_the_shipped_digits_are_scikit_learns():
    with np.load(ROOT / "examples" / "data" / "digits.npz", allow_pickle=False) as f:
        X, y = f["X"], f["y"]
    # Facts of the UCI set scikit-learn ships: 1797 images of 8x8 pixels 0..16, these class sizes.
    assert X.shape == (1797, 64) and y.shape == (1797,) and X.min() == 0 and X.max() == 16
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    datasets = pytest.importorskip("sklearn.datasets", reason="compared with scikit-learn where installed")
    digits = datasets.load_digits()
    np.testing.assert_array_equal(X.astype(np.float64), digits.data)
    np.testing.assert_array_equal(y, digits.target)
    np.testing.assert_array_equal((X / 16.0).astype(np.float32), (digits.data / 16.0).astype(np.float32))


def test_the_examples_extra_does_not_need_scikit_learn():
    text = (ROOT / "pyproject.toml").read_text()
    examples = re.search(r"^examples = \[(.*)\]$", text, re.M)
    assert examples and "scikit-learn" not in examples.group(1)
    assert "sklearn" not in EXAMPLE.read_text().split('"""', 2)[2]  # the code never imports it


@pytest.mark.parametrize("optimizer,lr", [("adam", "0.001"), ("sgd", "0.1")])
def test_each_optimizer_gets_its_own_default_learning_rate(optimizer, lr):
    proc = run_example(["--synthetic", "600", "--epochs", "3", "--optimizer", optimizer, "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert f", {optimizer} lr {lr}\n" in proc.stdout, proc.stdout
    assert summary(proc.stdout)["val_acc"] >= 0.9


def test_every_run_appends_its_own_run_id_and_a_resumed_run_keeps_it(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    common = ["--synthetic", "300", "--epochs", "3", "--quiet", "--metrics", metrics]
    for args in ([], ["--stop-after", "2", "--checkpoint-dir", tmp_path / "A"],
                 ["--resume", "--checkpoint-dir", tmp_path / "A"]):
        proc = run_example([*common, *args])
        assert proc.returncode == 0, proc.stderr
    records = read_metrics(metrics)
    assert all(set(r) == METRIC_FIELDS for r in records)
    runs = {}
    for r in records:
        runs.setdefault(r["run_id"], []).append(r["epoch"])
    assert list(runs.values()) == [[1, 2, 3], [1, 2, 3]], runs  # the resumed run continues its own id


def test_plot_x_axis_shows_whole_epochs(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    import importlib.util as util

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    spec = util.spec_from_file_location("train_mlp_under_test", EXAMPLE)
    example = util.module_from_spec(spec)
    spec.loader.exec_module(example)
    saved = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), original(fig, *a, **k))[1])
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_acc": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    example.save_plot(history, tmp_path / "curves.png")
    (fig,) = saved
    for axis in fig.axes:
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


@needs_mpi
def test_a_checkpoint_resumed_on_another_world_size_says_so_in_one_line(tmp_path):
    common = ["--synthetic", "1200", "--hidden", "32", "--epochs", "4", "--lr", "1e-2", "--quiet"]
    first = run_example([*common, "--stop-after", "2", "--checkpoint-dir", tmp_path / "A"], ranks=4)
    assert first.returncode == 0, first.stderr
    resumed = run_example([*common, "--resume", "--checkpoint-dir", tmp_path / "A"], ranks=2)
    straight = run_example([*common, "--checkpoint-dir", tmp_path / "B"], ranks=4)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    notes = [line for line in resumed.stdout.splitlines() if "written by 4 rank(s), resumed on 2" in line]
    assert len(notes) == 1, resumed.stdout
    assert ddpgrad.load(tmp_path / "A" / "last.npz")["world_size"] == 2
    a, b = ddpgrad.load(tmp_path / "A" / "last.npz")["history"], ddpgrad.load(tmp_path / "B" / "last.npz")["history"]
    for x, y in zip(a, b):  # the same global batches: the same path, to rounding
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4), (x, y)


@needs_mpi
def test_help_is_printed_once_on_four_ranks():
    proc = run_example(["--help"], ranks=4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage:") == 1 and "--synthetic N" in proc.stdout, proc.stdout


@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install 'ddpgrad[mpi]')")
def test_uneven_shards_train_under_join_with_replicas_identical(tmp_path):
    # 1000 samples -> 800 train: shards of 267, 267, 266 and 2 per rank: 134, 134 and 133 batches
    proc = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, str(EXAMPLE), "--synthetic", "1000", "--uneven", "--batch-size", "6",
         "--epochs", "2", "--quiet", "--metrics", str(tmp_path / "m.jsonl")],
        env=dict(_env(), DDPGRAD_DEBUG="1"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not bitwise identical" not in proc.stderr  # DDPGRAD_DEBUG compares the replicas every step
    assert [r["epoch"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]
