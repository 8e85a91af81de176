"""PyTorch's basic DDP demo (the DDP tutorial's ToyModel), run with only its import lines changed.

The oracle is the same program on PyTorch in one process (gloo, world of one) on the global batch;
ddpgrad runs it under ``mpiexec -n 2``, each rank on its half: DDP must give PyTorch's parameters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from op_helpers import TORCH_REASON
from test_pytorch_programs import _for_ddpgrad

pytest.importorskip("torch", reason=TORCH_REASON)

DEMO = textwrap.dedent('''
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.optim as optim
    from torch.nn.parallel import DistributedDataParallel as DDP


    class ToyModel(nn.Module):
        def __init__(self):
            super(ToyModel, self).__init__()
            self.net1 = nn.Linear(10, 10)
            self.relu = nn.ReLU()
            self.net2 = nn.Linear(10, 5)

        def forward(self, x):
            return self.net2(self.relu(self.net1(x)))


    def demo_basic(out_path):
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        rng = np.random.default_rng(0)
        model = ToyModel()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
        ddp_model = DDP(model)
        loss_fn = nn.MSELoss()
        optimizer = optim.SGD(ddp_model.parameters(), lr=0.001)
        inputs = torch.from_numpy(rng.standard_normal((3, 20, 10)).astype(np.float32))
        labels = torch.from_numpy(rng.standard_normal((3, 20, 5)).astype(np.float32))
        share = 20 // world
        for step in range(3):
            optimizer.zero_grad()
            mine = slice(rank * share, (rank + 1) * share)
            outputs = ddp_model(inputs[step, mine])
            loss_fn(outputs, labels[step, mine]).backward()
            optimizer.step()
        if rank == 0:
            np.savez(out_path, *[p.detach().numpy() for p in model.parameters()])
        dist.destroy_process_group()


    if __name__ == "__main__":
        demo_basic(sys.argv[1])
''')


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "MPI_", "HYDRA", "OMPI_", "PMIX_"))} | {"OPENBLAS_NUM_THREADS": "1"}


def test_the_ddp_tutorial_demo_on_2_ranks_gives_pytorchs_parameters(tmp_path):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if mpiexec is None:
        pytest.skip("needs mpiexec (pip install 'ddpgrad[mpi]')")
    theirs, ours = tmp_path / "torch_demo.py", tmp_path / "ddpgrad_demo.py"
    theirs.write_text(DEMO)
    ours.write_text(_for_ddpgrad(DEMO))
    torch_env = _clean_env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                                "RANK": "0", "WORLD_SIZE": "1"}
    ran = subprocess.run([sys.executable, str(theirs), str(tmp_path / "torch.npz")], env=torch_env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    ran = subprocess.run([mpiexec, "-n", "2", sys.executable, str(ours), str(tmp_path / "ddpgrad.npz")],
                         env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    expected, got = np.load(tmp_path / "torch.npz"), np.load(tmp_path / "ddpgrad.npz")
    assert len(expected.files) == len(got.files) == 4
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)
    initial = np.random.default_rng(0).standard_normal((10, 10)).astype(np.float32)
    assert not np.allclose(expected["arr_0"], initial, rtol=1e-6, atol=0), "the demo took no step"
