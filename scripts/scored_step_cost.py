"""What the timed training step of earlier records cost against the step the trainer takes.

Records made before `engine.trainer.training_loss` was shared timed a step with logits at every
position; the trainer computes them only where a target is scored. This times both steps on
one full-length training batch of a task, per model, with the run's own sizing and timing
method (docs/perf.md reads the result):

    python scripts/scored_step_cost.py --task mqar --budget cpu --subtask T64_kv4 \
        --models transformer,bimix,mamba2
"""

from __future__ import annotations

import argparse

import torch

from bimix_bench.config import subtask_train
from bimix_bench.engine.optim import build_optimizer
from bimix_bench.engine.plan import timing_setup
from bimix_bench.engine.runner import RunRequest, prepare
from bimix_bench.engine.throughput import make_train_step
from bimix_bench.task import sequence_loss
from bimix_bench.timing import timed_median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--subtask", required=True)
    parser.add_argument("--models", required=True, help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    for name in args.models.split(","):
        request = RunRequest(task=args.task, budget=args.budget, models=[name],
                             subtasks=[args.subtask], seeds=[0])
        cfg, cells, task = prepare(request)
        data = task.load(args.subtask, cfg["task"], 0, None)
        setup = timing_setup(cells[0], data, {**cfg, "train": subtask_train(cfg, args.subtask)},
                             device)
        model, batch, train, autocast = setup.model, setup.batch, setup.train, setup.autocast
        scored_step = make_train_step(model, batch, data.objective, train, autocast)
        optimizer = build_optimizer(model, train)

        def every_position_step() -> None:  # the earlier timed step
            with autocast():
                loss = sequence_loss(data.objective, model(batch.tokens, batch.lengths), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        scored = timed_median(scored_step, device, 1, args.repeats)
        every = timed_median(every_position_step, device, 1, args.repeats)
        tokens = batch.tokens.numel()
        print(f"{name}: scored step {tokens / scored:,.0f} tokens/s, every-position step "
              f"{tokens / every:,.0f} tokens/s, {every / scored:.2f}x the time")


if __name__ == "__main__":
    main()
