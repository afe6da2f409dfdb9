"""Batches built ahead in worker processes are the batches built in-process, in the same order,
and a resumed run skips exactly the steps it trained."""

from __future__ import annotations

import itertools

import pytest
import torch

from bimix_bench.config import load_budget
from bimix_bench.config.sections import train_config
from bimix_bench.engine.batch_workers import batches_of, skipped
from bimix_bench.engine.trainer import data_workers
from bimix_bench.tasks.mqar import load_mqar
from bimix_bench.task import StreamSplit, TaskData

MQAR = dict(power_a=0.01, random_non_queries=True, vocab_size=256, n_train=512, n_val=8, n_test=8)


def _take(data: TaskData, workers: int, steps: int, skip: int = 0) -> list:
    stream = skipped(data.train_index_stream(16, seed=3), skip)
    batches = batches_of(data.train, data.context, stream, workers)
    out = list(itertools.islice(batches, steps))
    batches.close()
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)
               and torch.equal(x.lengths, y.lengths) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_build_the_in_process_batches_in_order(workers):
    data = load_mqar("T64_kv4", MQAR, seed=0)
    here = _take(data, 0, 40)  # 40 steps of 16 cross the 32-step epoch boundary
    assert _same(here, _take(data, workers, 40))
    assert not torch.equal(here[0].tokens, here[1].tokens)


def test_the_old_batch_stream_is_the_index_stream_built_in_process():
    data = load_mqar("T64_kv4", MQAR, seed=0)
    assert _same(list(itertools.islice(data.train_batches(16, seed=3), 5)), _take(data, 0, 5))


def test_skipping_steps_continues_the_stream_where_it_stopped():
    data = load_mqar("T64_kv4", MQAR, seed=0)
    whole = _take(data, 0, 12)
    assert _same(whole[7:], _take(data, 0, 5, skip=7))
    assert _same(whole[7:], _take(data, 2, 5, skip=7))


def test_stream_windows_come_through_workers_too():
    stream = StreamSplit(torch.arange(5000) % 251)
    data = TaskData(task="t", subtask="s", objective="lm", context=64, train=stream, val=stream,
                    test=stream, meta={})
    assert _same(_take(data, 0, 6), _take(data, 2, 6))


def test_workers_serve_gpu_training_only():
    tiny = load_budget("tiny")["train"]
    four = train_config({"train": {**tiny, "data_workers": 4}})
    assert data_workers(four, torch.device("cpu")) == 0
    assert data_workers(four, torch.device("cuda")) == 4
    unset = train_config({"train": {k: v for k, v in tiny.items() if k != "data_workers"}})
    assert data_workers(unset, torch.device("cuda")) == 0
