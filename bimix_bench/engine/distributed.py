"""Multi-process runs: data-parallel training through torchrun, and spreading independent
cells over GPUs.

`run --nproc N` re-launches the same command under torchrun; every rank builds the same data
and the same global batch, trains on its 1/N slice of it (DDP averages the gradients, so the
tokens, optimizer and schedule are those of the one-process run), and rank 0 alone evaluates,
measures and writes. `run --gpus 0,1,...` instead starts one worker per listed GPU (an index
may repeat, to train several cells at once on one GPU), each running every N-th cell of the
same run folder (records are appended atomically, so workers share it); their throughput is
measured afterwards, alone (engine/pending.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from bimix_bench.errors import UsageError
from bimix_bench.task import Batch


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_request: str) -> DistContext | None:
    """Join the process group torchrun describes in the environment; None when not launched."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return DistContext(torch_dist.get_rank(), world, local_rank, backend)


def device_for(ctx: DistContext) -> torch.device:
    return torch.device(f"cuda:{ctx.local_rank}") if ctx.backend == "nccl" else torch.device("cpu")


def shard(batch: Batch, ctx: DistContext | None) -> Batch:
    """This rank's rows of the global batch (rows rank, rank + N, ...)."""
    if ctx is None:
        return batch
    rows = slice(ctx.rank, None, ctx.world_size)
    return batch.map(lambda t: t[rows])


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        torch_dist.barrier()


def shutdown(ctx: DistContext | None) -> None:
    if ctx is not None and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def launch_torchrun(args: list[str], nproc: int) -> int:
    """Run `bimix-bench <args>` under torchrun with `nproc` processes on this host."""
    if nproc < 2:
        raise UsageError("--nproc must be at least 2 (leave it out for one process)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "bimix_bench", *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(command, env=env)


def launch_cell_workers(args: list[str], gpus: list[int]) -> int:
    """One `bimix-bench run --resume ... --shard k/N` worker per GPU; the worst exit status.
    An interrupted launcher interrupts its workers and waits for them (their cells stay
    resumable); workers also die with a killed launcher, so none trains on unseen."""
    procs = []
    try:
        for k, gpu in enumerate(gpus):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bimix_bench", *args, "--shard", f"{k}/{len(gpus)}"], env=env,
                preexec_fn=_die_with_parent))
        return max(p.wait() for p in procs)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the launching process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
