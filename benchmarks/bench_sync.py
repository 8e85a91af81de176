"""Figure 4: gradient synchronisation of the 784-1024-1024-10 MLP on 2 ranks.

Part 1, the reduction alone: ddpgrad's bucketed reduction (the reducer's own hooks, launch, wait
and averaging, driven as if every gradient became ready at once) vs one raw blocking
``MPI.Allreduce`` of the same bytes in one buffer (the target's reference), plus, for diagnosis,
a raw ``Iallreduce`` + ``Wait``, ddpgrad's communicator ``allreduce`` of the single buffer, and
the bucketed reduction with ``Work.wait`` yielding instead of sleeping between tests.

Part 2, overlap inside the real step: for each variant, the step time, the backward time and the
*exposed* communication (from the last gradient-ready hook, i.e. the end of backward's compute,
to the return of ``loss.backward()``, i.e. the end of the last bucket's reduction and the
averaging), next to ``Reducer.comm_wait_s``. Variants (numbers only; the library is unchanged):

- ``ddp``: DistributedDataParallel as it is (25 MB buckets, 1 MB first bucket, polling from hooks);
- ``ddp_nosync``: the same inside ``no_sync()``: backward with no communication at all;
- ``ddp_yield``: ``Work.wait`` re-tests after ``os.sched_yield()`` instead of its sleep back-off;
- ``ddp_b1``: ``bucket_cap_mb=1``, so every large layer is its own bucket and starts earlier;
- ``ddp_b1_yield``: both;
- ``ddp_b1_thread``: 1 MB buckets plus a progress thread that pokes MPI's progress engine
  (``Iprobe`` on a private communicator, then sleeps ``--poll-us``) while buckets are in flight;
- ``ddp_b1_thread_yield``: all three;
- ``floor``: NumPy step + one raw Allreduce, for scale.

    python benchmarks/bench_sync.py                      # mpiexec -n 2, as the reducer is today
    python benchmarks/bench_sync.py --async-progress     # MPICH's own progress thread
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time

import common

TARGET_BUCKETED_VS_RAW = 1.10


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="per-rank batch")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=10, help="steps per timed run in part 2 (seven "
                   "models take turns, so a run's first step finds the caches cold)")
    p.add_argument("--poll-us", type=float, default=100.0, help="progress thread's pause between pokes")
    p.add_argument("--async-progress", action="store_true",
                   help="run with MPIR_CVAR_ASYNC_PROGRESS=1 (MPICH's progress thread); part 2 only")
    return p.parse_args(argv)


class ProgressThread:
    """Pokes MPI's progress engine from a side thread while collectives are in flight.

    MPICH advances a non-blocking collective only inside MPI calls; the main thread makes none
    while it is inside a BLAS call. ``Iprobe`` on a private communicator runs the progress engine
    without touching the reducer's requests (testing the same request from two threads is not
    allowed).
    """

    def __init__(self, MPI, comm, pause_s):
        self.side = MPI.COMM_WORLD.Dup()
        self.pause_s = pause_s
        self.active = threading.Event()
        self.stopped = False
        self.pokes = 0
        original = comm._iallreduce

        def iallreduce(buf, op, describe):  # wraps this communicator instance only
            work = original(buf, op, describe)
            self.active.set()
            return work

        comm._iallreduce = iallreduce
        self.thread = threading.Thread(target=self._run, daemon=True, name="mpi-progress")
        self.thread.start()

    def _run(self):
        while True:
            self.active.wait()
            if self.stopped:
                return
            self.side.Iprobe()
            self.pokes += 1
            time.sleep(self.pause_s)

    def idle(self):
        self.active.clear()

    def stop(self):
        self.stopped = True
        self.active.set()
        self.thread.join()


@contextlib.contextmanager
def yield_instead_of_sleep(work_cls):
    """Within: ``Work.wait`` re-tests after ``os.sched_yield()`` instead of sleeping 20 us..1 ms,
    so MPI's progress engine runs back to back (while still leaving the core to a waiting peer)."""
    saved = work_cls.__dict__.get("_pause")
    work_cls._pause = lambda self, seconds: os.sched_yield()
    try:
        yield
    finally:
        if saved is None:
            del work_cls._pause
        else:
            work_cls._pause = saved


def drive_reducer(reducer, engine):
    """One bucketed reduction through the reducer's own code path, all gradients ready at once:
    its post-accumulate hooks in ready order inside a backward pass's callback scope, then the
    end-of-backward callback (launch the rest, wait, average)."""
    state = engine._state
    state.callbacks = callbacks = []
    try:
        for i in reducer._order:
            p = reducer.params[i]
            for hook in p._post_hooks:
                hook(p)
        while callbacks:
            callbacks.pop(0)()
    finally:
        state.callbacks = None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if not common.under_mpi():
        if a.async_progress:
            os.environ["MPIR_CVAR_ASYNC_PROGRESS"] = "1"
        return common.relaunch_under_mpi(os.path.abspath(__file__), a.np, argv)
    common.set_blas_threads(1)

    import numpy as np
    from mpi4py import MPI

    import ddpgrad
    import ddpgrad.distributed as dist
    import ddpgrad.nn.functional as F
    import workloads as wl
    from ddpgrad.autograd import engine
    from ddpgrad.distributed.comm.mpi import _MPIWork
    from ddpgrad.distributed.process_group import get_comm
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    world = MPI.COMM_WORLD.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    dist.init_process_group()
    comm = get_comm()
    async_progress = os.environ.get("MPIR_CVAR_ASYNC_PROGRESS") == "1"
    tag = " [MPIR_CVAR_ASYNC_PROGRESS=1]" if async_progress else ""
    if rank == 0:
        rec = common.machine_record()
        rec["MPIR_CVAR_ASYNC_PROGRESS"] = os.environ.get("MPIR_CVAR_ASYNC_PROGRESS")
        common.emit(rec)
    barrier = world.Barrier
    slowest = lambda t: world.allreduce(t, op=MPI.MAX)  # noqa: E731

    weights = wl.make_weights(wl.MLP_SIZES)
    global_batches = wl.make_classification_batches(a.batch * size)
    lo, hi = rank * a.batch, (rank + 1) * a.batch
    batches = [(x[lo:hi].copy(), y[lo:hi].copy()) for x, y in global_batches]

    # ---------------------------------------------------------------- part 1: the reduction alone
    if not async_progress:
        model = DDP(wl.ddpgrad_mlp(weights))
        x, y = wl.ddpgrad_tensors(batches)[0]
        F.cross_entropy(model(x), y).backward()  # first iteration: buckets rebuilt in ready order
        reducer = model.reducer
        flat = np.ones(wl.n_params(), np.float32)
        assert flat.nbytes == sum(b.buffer.nbytes for b in reducer.buckets)
        def bucketed_yield():
            with yield_instead_of_sleep(_MPIWork):
                drive_reducer(reducer, engine)

        stats = common.interleaved(
            {"bucketed": lambda: drive_reducer(reducer, engine),
             "bucketed_yield": bucketed_yield,
             "raw_allreduce": lambda: world.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM),
             "raw_iallreduce_wait": lambda: world.Iallreduce(MPI.IN_PLACE, flat, op=MPI.SUM).Wait(),
             "comm_allreduce_1buf": lambda: comm.allreduce(flat)},
            rounds=max(a.rounds, 9), inner=10, warmup=1, before=barrier, combine=slowest)
        if rank == 0:
            common.emit(common.result(
                "sync", "gradient sync, 2 ranks: bucketed reduction/raw Allreduce of the same bytes",
                stats, "bucketed", "raw_allreduce", TARGET_BUCKETED_VS_RAW, ranks=size,
                bytes=int(flat.nbytes), buckets_mb=[round(b.buffer.nbytes / 1e6, 3) for b in reducer.buckets]))
            common.emit(common.result(
                "sync", "gradient sync, 2 ranks: bucketed, Work.wait yielding instead of sleeping/raw Allreduce",
                stats, "bucketed_yield", "raw_allreduce", None, ranks=size))
            common.emit(common.result(
                "sync", "gradient sync, 2 ranks: ddpgrad comm.allreduce (1 buffer)/raw Allreduce",
                stats, "comm_allreduce_1buf", "raw_allreduce", None, ranks=size))
            common.emit(common.result(
                "sync", "gradient sync, 2 ranks: raw Iallreduce+Wait/raw Allreduce",
                stats, "raw_iallreduce_wait", "raw_allreduce", None, ranks=size))

    # ---------------------------------------------------------------- part 2: overlap in the step
    timeline = {}

    def build(name, bucket_cap_mb=None, thread=False, yields=False):
        model = DDP(wl.ddpgrad_mlp(weights), bucket_cap_mb=bucket_cap_mb)
        opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        marks = timeline[name] = {"last_ready": 0.0, "exposed": [], "backward": [], "wait0": None}

        def mark(_):
            marks["last_ready"] = time.perf_counter()

        for p in model.parameters():  # registered after the reducer's: runs after its hook
            p.register_post_accumulate_grad_hook(mark)
        progress = ProgressThread(MPI, model.reducer.comm, a.poll_us * 1e-6) if thread else None
        nosync = name.endswith("nosync")
        data = wl.Cycle(wl.ddpgrad_tensors(batches))

        def step():
            with yield_instead_of_sleep(_MPIWork) if yields else contextlib.nullcontext():
                one_step()

        def one_step():
            x, y = data()
            opt.zero_grad()
            with model.no_sync() if nosync else contextlib.nullcontext():  # forward decides
                loss = F.cross_entropy(model(x), y)
                t0 = time.perf_counter()
                loss.backward()
                t1 = time.perf_counter()
            if progress is not None:
                progress.idle()
            opt.step()
            marks["backward"].append(t1 - t0)
            marks["exposed"].append(t1 - marks["last_ready"])

        return model, step, progress

    variants = {"ddp": {}, "ddp_nosync": {}, "ddp_yield": {"yields": True},
                "ddp_b1": {"bucket_cap_mb": 1.0}, "ddp_b1_yield": {"bucket_cap_mb": 1.0, "yields": True}}
    if MPI.Query_thread() == MPI.THREAD_MULTIPLE and not async_progress:
        variants["ddp_b1_thread"] = {"bucket_cap_mb": 1.0, "thread": True}
        variants["ddp_b1_thread_yield"] = {"bucket_cap_mb": 1.0, "thread": True, "yields": True}
    built = {name: build(name, **kw) for name, kw in variants.items()}
    floor_allreduce = []

    def timed_allreduce(g):
        t0 = time.perf_counter()
        world.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
        floor_allreduce.append(time.perf_counter() - t0)

    floor = wl.NumpyMLP(weights, a.batch, world_size=size, allreduce=timed_allreduce)
    fdata = wl.Cycle(batches)
    candidates = {"floor": lambda: floor.step(*fdata())}
    candidates.update((name, b[1]) for name, b in built.items())
    for name, (model, _, _) in built.items():
        timeline[name]["wait0"] = (model.reducer.comm_wait_s, model.reducer.step)
    stats = common.interleaved(candidates, rounds=a.rounds, inner=a.inner, warmup=1,
                               before=barrier, combine=slowest)
    for _, _, progress in built.values():
        if progress is not None:
            progress.stop()

    def across_ranks(samples_s):
        """This rank's median (dropping the warm-up run), then its min and max over ranks, in ms.
        The rank that reaches the collective last sees the communication alone (min); the other
        also waits for it (max - min is the skew between ranks)."""
        kept = sorted(samples_s[a.inner:])
        mine = kept[len(kept) // 2] * 1e3
        return [round(world.allreduce(mine, op=MPI.MIN), 3), round(world.allreduce(mine, op=MPI.MAX), 3)]

    per_variant = {"floor": {"allreduce_ms_min_max_rank": across_ranks(floor_allreduce)}}
    for name, (model, _, progress) in built.items():
        marks = timeline[name]
        w0, s0 = marks["wait0"]
        steps = max(1, model.reducer.step - s0)
        info = {
            "exposed_comm_ms_min_max_rank": across_ranks(marks["exposed"]),
            "backward_ms_min_max_rank": across_ranks(marks["backward"]),
            "comm_wait_ms_max_rank": round(world.allreduce((model.reducer.comm_wait_s - w0) / steps * 1e3,
                                                           op=MPI.MAX), 3),
            "buckets_mb": [round(b.buffer.nbytes / 1e6, 3) for b in model.reducer.buckets],
        }
        if progress is not None:
            info["progress_pokes_per_step"] = round(world.allreduce(progress.pokes / steps, op=MPI.MAX), 1)
        per_variant[name] = info
    if rank == 0:
        common.emit(common.result(
            "sync_overlap", f"DDP step with sync variants, 2 ranks x {a.batch}{tag}: ddp/floor",
            stats, "ddp", "floor", None, ranks=size, variants=per_variant,
            step_ratio_vs_floor={k: round(v["median_s"] / stats["floor"]["median_s"], 4) for k, v in stats.items()},
            note="exposed_comm: last gradient-ready hook -> loss.backward() returns; floor: its Allreduce call"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
