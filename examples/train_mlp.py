"""Train an MLP classifier with DistributedDataParallel.

    mpirun -n 4 python examples/train_mlp.py          # 4 ranks (or: python launch/ddprun.py -n 4 ...)
    python examples/train_mlp.py                      # one process, same numbers, for debugging

Data: scikit-learn's bundled handwritten digits by default; ``--data FILE.npz`` (arrays X, y) or
``--synthetic N``. ``--batch-size`` is the global batch, split evenly across ranks, so one process
and N ranks with the same options follow the same optimisation path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import ddpgrad as torch
import ddpgrad.distributed as dist
import ddpgrad.nn as nn
import ddpgrad.nn.functional as F
from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
from ddpgrad.nn.parallel import DistributedDataParallel as DDP
from ddpgrad.utils.data import DataLoader, TensorDataset
from ddpgrad.utils.data.distributed import DistributedSampler


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", metavar="FILE.npz", help="your own data: arrays X (n, features) and y (n,) of class labels")
    p.add_argument("--synthetic", type=int, metavar="N", help="a generated data set of N samples instead")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size, split across ranks")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128], help="hidden layer widths")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--checkpoint-dir", help="write a checkpoint there after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's last checkpoint")
    p.add_argument("--stop-after", type=int, metavar="EPOCH", help="stop after this epoch (to test --resume)")
    p.add_argument("--metrics", metavar="FILE", help="append one JSON line per epoch")
    p.add_argument("--plot", metavar="FILE.png", help="loss and validation-accuracy curves")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compress", choices=["none", "fp16", "bf16"], default="none",
                   help="send gradients as 16-bit floats (DDP communication hook): half the bytes")
    return p.parse_args(argv)


RESUME_MUST_MATCH = ("data", "synthetic", "hidden", "optimizer", "batch_size", "seed", "val_fraction")
"""Options that shape the model, the data order or the optimizer state: --resume refuses a change
(--lr and --epochs may change)."""


class DataError(ValueError):
    """The data the user pointed at can not be trained on."""


def load_arrays(args):
    """(X float32 (n, d), y int64 (n,), number of classes) from --data, --synthetic or the digits."""
    if args.data:
        X, y = load_npz(args.data)
    elif args.synthetic:
        X, y = synthetic(args.synthetic, args.seed)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        X, y = digits.data / 16.0, digits.target
    return X.astype(np.float32), y.astype(np.int64), int(y.max()) + 1


def load_npz(path):
    if not os.path.isfile(path):
        raise DataError(f"--data {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                raise DataError(f"--data {path}: missing array(s) {missing}; found {f.files}. "
                                f"Save with np.savez(path, X=features, y=labels)")
            X, y = f["X"], f["y"]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise DataError(f"--data {path}: not a readable .npz file ({exc})") from None
    if X.ndim != 2 or X.dtype.kind not in "fiu" or X.shape[1] == 0:
        raise DataError(f"--data {path}: X must be a 2-D numeric array (samples, features), got {X.dtype} {X.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"--data {path}: y must be a 1-D integer array of class labels, got {y.dtype} {y.shape}")
    if len(X) != len(y):
        raise DataError(f"--data {path}: X has {len(X)} rows but y has {len(y)} labels")
    if len(y) < 2:
        raise DataError(f"--data {path}: need at least 2 samples, got {len(y)}")
    if y.min() < 0:
        raise DataError(f"--data {path}: labels must be 0..C-1, found {int(y.min())}")
    if not np.isfinite(X).all():
        raise DataError(f"--data {path}: X holds NaN or infinite values")
    return X, y


def synthetic(n, seed, features=64, classes=10):
    """Gaussian clusters, one per class: learnable, any size, deterministic in the seed."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 1.5
    y = rng.integers(0, classes, size=n)
    return centers[y] + rng.standard_normal((n, features)), y


def split(X, y, fraction, seed):
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(round(len(y) * fraction)))
    val, train = order[:n_val], order[n_val:]
    return X[train], y[train], X[val], y[val]


def build_model(in_features, hidden, classes):
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def evaluate(model, loader, device):
    """Exact loss and accuracy over the whole validation set: sums over ranks, then divide."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            totals += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(),
                                    (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
    dist.all_reduce(totals)
    model.train()
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, correct / count


def progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def save_plot(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend(), a.set_title("loss")
    b.plot(epochs, [100 * h["val_acc"] for h in history], color="tab:green")
    b.set_xlabel("epoch"), b.set_ylabel("%"), b.set_title("validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    log = (lambda msg: print(f"[rank {rank}] {msg}", flush=True)) if rank == 0 else (lambda msg: None)

    if args.batch_size % world:
        raise SystemExit(f"error: --batch-size {args.batch_size} does not divide evenly over {world} ranks; "
                         f"use a multiple of {world}")
    try:
        X, y, classes = load_arrays(args)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    device = torch.device(args.device)
    if device.type == "cuda" and ":" not in args.device:  # one GPU per rank on each node
        device = torch.device("cuda", dist.local_rank() % max(1, torch.cuda.device_count()))
    Xtr, ytr, Xva, yva = split(X, y, args.val_fraction, args.seed)
    train_set = TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(ytr))
    val_set = TensorDataset(torch.from_numpy(Xva), torch.from_numpy(yva))
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed)
    val_sampler = DistributedSampler(val_set, shuffle=False, pad=False)
    per_rank = args.batch_size // world
    train_loader = DataLoader(train_set, batch_size=per_rank, sampler=train_sampler, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=256, sampler=val_sampler)
    if len(train_loader) == 0:
        raise SystemExit(f"error: {len(Xtr)} training samples are fewer than one global batch of {args.batch_size}")

    torch.manual_seed(args.seed)
    model = DDP(build_model(X.shape[1], args.hidden, classes).to(device))
    if args.compress != "none":
        model.register_comm_hook(None, getattr(default_hooks, f"{args.compress}_compress_hook"))
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    start_epoch, history = 0, []
    ckpt_path = os.path.join(args.checkpoint_dir, "last.npz") if args.checkpoint_dir else None
    if args.resume:
        if not ckpt_path or not os.path.exists(ckpt_path):
            raise SystemExit(f"error: --resume needs an existing checkpoint; {ckpt_path or '--checkpoint-dir'} not found")
        state = torch.load(ckpt_path, map_location=device)
        changed = [f"--{k.replace('_', '-')} was {state['args'].get(k)!r}, now {getattr(args, k)!r}"
                   for k in RESUME_MUST_MATCH if state["args"].get(k) != getattr(args, k)]
        if changed:
            raise SystemExit(f"error: --resume from {ckpt_path}: the run's setup changed ({'; '.join(changed)}); "
                             f"resume with the options the checkpoint was written with")
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        log(f"resumed from {ckpt_path} after epoch {state['epoch']}")

    log(f"{world} rank(s), global batch {args.batch_size} ({per_rank} per rank), {len(Xtr)} train / "
        f"{len(Xva)} validation samples, {classes} classes, model {X.shape[1]}-{'-'.join(map(str, args.hidden))}-{classes}")
    steps = samples = 0
    train_time = comm_before = 0.0
    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)
        comm_before = model.reducer.comm_wait_s
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros(1, dtype=torch.float64)
        bar = progress(train_loader, len(train_loader), f"epoch {epoch + 1}/{args.epochs}", rank == 0 and not args.quiet)
        for x, target in bar:
            x, target = x.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), target)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            steps += 1
            samples += args.batch_size
        train_time += time.perf_counter() - epoch_start
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        val_loss, val_acc = evaluate(model, val_loader, device)
        record = {"epoch": epoch + 1, "train_loss": loss_sum.item() / len(train_loader), "val_loss": val_loss,
                  "val_acc": val_acc, "epoch_s": time.perf_counter() - epoch_start,
                  "comm_wait_s": model.reducer.comm_wait_s - comm_before}
        history.append(record)
        log(f"epoch {epoch + 1:>3}/{args.epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {val_loss:.4f}  val acc {100 * val_acc:.2f}%  ({record['epoch_s']:.2f} s)")
        if rank == 0 and args.metrics:
            with open(args.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        if ckpt_path:
            if rank == 0:
                os.makedirs(args.checkpoint_dir, exist_ok=True)
                torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                            "rng": torch.get_rng_state(), "epoch": epoch, "history": history,
                            "args": vars(args)}, ckpt_path)
            dist.barrier()
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            log(f"stopping after epoch {epoch + 1} as asked (--stop-after)")
            break

    if rank == 0 and args.plot and history:
        save_plot(history, args.plot)
        log(f"wrote {args.plot}")
    comm_share = model.reducer.comm_wait_s / train_time if train_time else 0.0
    summary = {
        "world_size": world, "global_batch": args.batch_size, "epochs": len(history),
        "wall_s": round(train_time, 3), "samples_per_s": round(samples / train_time, 1) if train_time else 0.0,
        "ms_per_step": round(1000 * train_time / steps, 3) if steps else 0.0,
        "comm_wait_share": round(comm_share, 4), "val_acc": history[-1]["val_acc"] if history else None,
    }
    if rank == 0:
        print("summary: " + "  ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return summary


if __name__ == "__main__":
    main()
