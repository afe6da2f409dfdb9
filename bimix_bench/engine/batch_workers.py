"""Training batches built ahead of the optimizer in worker processes.

Building a batch can cost more than the step that consumes it: MQAR makes every example on
demand (about 40 ms of NumPy for 256 sequences), while the GPU runs a 20M-parameter step in
about as long or less, so an in-process loader leaves the GPU idle for most of each step. Worker
processes (forked, so the task's splits and their example closures are inherited, not pickled)
build the batches of the same index stream in order, so training sees exactly the batches it
would see in-process.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from bimix_bench.task import Batch

PREFETCH_PER_WORKER = 4  # batches each worker keeps ready


class _BatchOfIndices(Dataset):
    """dataset[indices] -> the split's Batch of those examples (or window starts)."""

    def __init__(self, split: Any, context: int):
        self.split, self.context = split, context

    def __getitem__(self, indices: list[int]) -> Batch:
        return self.split.batch(indices, self.context)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker builds one batch at a time; leave the cores to training


def batches_of(split: Any, context: int, index_stream: Iterable[list[int]], workers: int = 0,
               pin_memory: bool = False) -> Iterator[Batch]:
    """Batch after batch of `index_stream`'s index lists, in order: built here when workers is
    0, else by that many forked worker processes, PREFETCH_PER_WORKER batches each ahead.
    Close the iterator (or let it go) to stop the workers."""
    if workers <= 0:
        yield from (split.batch(indices, context) for indices in index_stream)
        return
    loader = DataLoader(
        _BatchOfIndices(split, context), batch_size=None, sampler=index_stream,
        num_workers=workers, prefetch_factor=PREFETCH_PER_WORKER, pin_memory=pin_memory,
        worker_init_fn=_one_thread, multiprocessing_context="fork",
    )
    stream = iter(loader)
    try:
        yield from stream
    finally:
        del stream  # shuts the workers down


def skipped(index_stream: Iterator[list[int]], steps: int) -> Iterator[list[int]]:
    """The stream from step `steps` on: skipping costs index lists, not built batches."""
    return itertools.islice(index_stream, steps, None)
