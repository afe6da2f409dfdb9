"""The task-plugin interface.

A task family (``lra``, ``long_code``, ...) is a `Task` registered under its name. It lists its
subtasks, ships YAML defaults per budget beside its code, and for one subtask, config and seed
returns a `TaskData`: the three splits as token ids plus how to score a model on them.

Two objectives cover the suite:
  "classify"  one label per sequence (LRA); examples are (token ids, label)
  "lm"        next-byte prediction over a token stream (long code, QA with answer spans)
The engine batches, trains and scores through `TaskData`, so a new family needs no engine
changes. Third-party families register through the ``bimix_bench.tasks`` entry point; see
docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
import yaml

from bimix_bench.models.tokenizer import PAD, VOCAB_SIZE
from bimix_bench.registry import TASKS


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) int64, right-padded with PAD
    targets: torch.Tensor  # "classify": (B,) labels; "lm": (B, T) next ids, -100 = ignored
    lengths: torch.Tensor  # (B,) valid length of each row

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        """The batch with `fn` applied to each of its tensors."""
        return Batch(fn(self.tokens), fn(self.targets), fn(self.lengths))

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":  # called by DataLoader(pin_memory=True)
        return self.map(torch.Tensor.pin_memory)

    @property
    def n_tokens(self) -> int:  # tokens the model actually reads (padding excluded)
        return int(self.lengths.sum())


PAD_MULTIPLE = 128  # padded batch widths of variable-length classification data


@dataclass
class ClassificationSplit:
    sequences: list[torch.Tensor]  # each (L,) int64, L <= context
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.sequences)

    def batch(self, indices: list[int], context: int) -> Batch:
        seqs = [self.sequences[i][:context] for i in indices]
        # Round the padded width up to a multiple of PAD_MULTIPLE: with variable lengths
        # (ListOps: 500-2000) every new width makes Triton kernels (fla, mamba_ssm, ours)
        # autotune again; rounding keeps the shapes to a few. Padding sits after each row's
        # end, so causal mixers and the length-masked pooling give the same logits.
        width = max(len(s) for s in seqs)
        width = min(context, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE)
        tokens = torch.full((len(seqs), width), PAD, dtype=torch.long)
        for row, s in enumerate(seqs):
            tokens[row, : len(s)] = s
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return Batch(tokens, self.labels[indices], lengths)


@dataclass
class StreamSplit:
    """A token stream cut into windows of `context` + 1 ids (inputs and shifted targets)."""

    stream: torch.Tensor  # (N,) int64
    # Optional per-position weights mask: ids of positions that count as targets (-100 masks).
    loss_mask: torch.Tensor | None = None  # (N,) bool, True where the target counts

    def n_windows(self, context: int) -> int:
        return max(0, (len(self.stream) - 1) // context)

    def window(self, start: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.stream[start : start + context + 1]
        inputs, targets = chunk[:-1].clone(), chunk[1:].clone()
        if self.loss_mask is not None:
            targets[~self.loss_mask[start + 1 : start + context + 1]] = -100
        return inputs, targets

    def batch(self, starts: list[int], context: int) -> Batch:
        pairs = [self.window(s, context) for s in starts]
        tokens = torch.stack([p[0] for p in pairs])
        targets = torch.stack([p[1] for p in pairs])
        lengths = torch.full((len(starts),), context, dtype=torch.long)
        return Batch(tokens, targets, lengths)


class ExampleSplit:
    """LM examples that each fill one row on their own (a question with its documents and
    answer, an associative-recall sequence). Rows are never cut or packed together, so every
    scored target is predicted with its whole example in view; they are batched by example
    index, like ClassificationSplit, and right-padded with PAD (targets -100).

    `fetch(i)` returns example i as (inputs (L,), targets (L,)) integer tensors, L <= context,
    targets -100 where nothing is scored. It may build the example on demand, so a split can
    hold more examples than would fit in memory."""

    def __init__(self, n: int, fetch: Callable[[int], tuple[torch.Tensor, torch.Tensor]]):
        self.n = n
        self.fetch = fetch

    def __len__(self) -> int:
        return self.n

    def n_windows(self, context: int) -> int:
        return self.n

    def batch(self, indices: list[int], context: int) -> Batch:
        pairs = [self.fetch(i) for i in indices]
        width = max(len(x) for x, _ in pairs)
        if width > context:
            raise ValueError(f"an example of {width} tokens does not fit the context of {context}")
        tokens = torch.full((len(pairs), width), PAD, dtype=torch.long)
        targets = torch.full((len(pairs), width), -100, dtype=torch.long)
        for row, (x, y) in enumerate(pairs):
            tokens[row, : len(x)] = x
            targets[row, : len(y)] = y
        lengths = torch.tensor([len(x) for x, _ in pairs], dtype=torch.long)
        return Batch(tokens, targets, lengths)


def _by_index(objective: str, split: Any) -> bool:
    """Classification splits and ExampleSplit are batched by example index, streams by window."""
    return objective == "classify" or isinstance(split, ExampleSplit)


@dataclass
class TaskData:
    """One subtask, ready to train on: splits, objective and scoring."""

    task: str
    subtask: str
    objective: str  # "classify" or "lm"
    context: int  # training context length (tokens)
    train: Any
    val: Any
    test: Any
    n_classes: int = 0
    # Facts about the data that go into the record (source, sizes, length bounds, notes).
    meta: dict[str, Any] = field(default_factory=dict)
    # Optional extra metrics: fn(model, split_name, split, device) -> dict (e.g. bpb by position).
    extra_metrics: Callable[..., dict[str, float]] | None = None
    # Token ids the model embeds and predicts: the byte vocabulary unless the task defines its
    # own (MQAR uses Zoology's 8,192 ids).
    vocab_size: int = VOCAB_SIZE
    # "lm" tasks whose scored targets are answers (not a text stream) also report the argmax
    # accuracy over those targets as "accuracy".
    answer_accuracy: bool = False
    # Tasks that can generate longer inputs: factor -> the test split at factor x context (the
    # same kind of examples, only longer), for the length-generalization evaluation.
    longer_test: Callable[[int], Any] | None = None

    def at_length(self, factor: int) -> "TaskData":
        """This task with its test split `factor` times as long (needs longer_test)."""
        if self.longer_test is None:
            raise ValueError(f"{self.task}/{self.subtask} cannot generate longer inputs")
        return dataclasses.replace(self, test=self.longer_test(factor), context=factor * self.context,
                                   extra_metrics=None)

    @property
    def selection_metric(self) -> str:
        """The validation metric that picks the best checkpoint and learning rate, and that
        early stopping watches."""
        if self.objective == "classify" or self.answer_accuracy:
            return "accuracy"
        return "bits_per_byte"

    # --- batching ------------------------------------------------------------------------
    def train_index_stream(self, batch_size: int, seed: int) -> Iterator[list[int]]:
        """Endless, seeded stream of what each training batch holds (example indices, or window
        starts in the token stream): identical for every model, and cheap to skip ahead in."""
        gen = torch.Generator().manual_seed(seed)
        if _by_index(self.objective, self.train):
            n = len(self.train)
            if n < batch_size:
                raise ValueError(f"{self.task}/{self.subtask}: {n} training examples cannot fill a "
                                 f"batch of {batch_size}")
            while True:
                order = torch.randperm(n, generator=gen).tolist()
                for i in range(0, n - batch_size + 1, batch_size):
                    yield order[i : i + batch_size]
        else:
            high = len(self.train.stream) - self.context - 1
            if high <= 0:
                raise ValueError(f"{self.task}/{self.subtask}: training stream shorter than context")
            while True:
                yield torch.randint(0, high + 1, (batch_size,), generator=gen).tolist()

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """Endless, seeded stream of training batches, built in this process (the trainer
        builds them ahead in workers: engine/batch_workers.py)."""
        return (self.train.batch(indices, self.context)
                for indices in self.train_index_stream(batch_size, seed))

    def eval_batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Deterministic batches covering a split (first `limit` examples / windows)."""
        data = getattr(self, split)
        if _by_index(self.objective, data):
            n = len(data) if limit is None else min(limit, len(data))
            for i in range(0, n, batch_size):
                yield data.batch(list(range(i, min(n, i + batch_size))), self.context)
        else:
            n = data.n_windows(self.context)
            n = n if limit is None else min(limit, n)
            starts = [w * self.context for w in range(n)]
            for i in range(0, n, batch_size):
                yield data.batch(starts[i : i + batch_size], self.context)


def scored_positions(objective: str, batch: Batch) -> torch.Tensor | None:
    """(B, T) bool: the positions whose next-token prediction is scored ("lm"); None for
    "classify". Passed to the model as `scored`, it computes logits only there."""
    return None if objective == "classify" else batch.targets != -100


def sequence_loss(objective: str, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean loss of a batch: cross-entropy over labels ("classify") or over target bytes.
    "lm" logits are either every position's, (B, T, V), or the scored positions', (n, V)."""
    if objective == "classify":
        return F.cross_entropy(logits.float(), batch.targets)
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), batch.targets[batch.targets != -100])
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), ignore_index=-100
    )


@torch.no_grad()
def evaluate_split(model, data: TaskData, split: str, device, batch_size: int,
                   limit: int | None = None, autocast=None) -> dict[str, float]:
    """Standard metrics of a split: accuracy + loss ("classify"), bits per byte ("lm")."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in data.eval_batches(split, batch_size, limit):
        batch = batch.to(device)
        mask = scored_positions(data.objective, batch)
        with autocast() if autocast else _null():
            scored = model(batch.tokens, batch.lengths, scored=mask).float()  # (B, C) or (n, V)
        targets = batch.targets if mask is None else batch.targets[mask]  # (B,) or (n,)
        total_loss += F.cross_entropy(scored, targets, reduction="sum").item()
        correct += (scored.argmax(-1) == targets).sum().item()
        count += len(targets)
    if count == 0:
        return {}
    mean = total_loss / count
    if data.objective == "classify":
        return {"accuracy": correct / count, "loss": mean, "n": count}
    if data.answer_accuracy:
        return {"accuracy": correct / count, "loss": mean, "n": count}
    return {"bits_per_byte": mean / math.log(2), "loss": mean, "n_bytes": count}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@dataclass(frozen=True)
class SubtaskInfo:
    name: str
    description: str


@dataclass(frozen=True)
class Chance:
    """What a model scores without learning the task: the line a result must clear to say
    anything. `basis` says how it was obtained (majority class, 1/N values, ...)."""

    metric: str
    value: float
    basis: str


@dataclass(frozen=True)
class Anchor:
    """A published result the suite should reproduce: `model` on `subtask` reaches `metric`
    `published` in `source`; the suite counts it reproduced when every seed reaches
    `reproduced_at` (higher-is-better metrics; at most, for lower-is-better ones). `budgets`
    lists the budgets at which the reproduction is expected."""

    subtask: str
    model: str
    metric: str
    published: float
    reproduced_at: float
    source: str
    budgets: tuple[str, ...] = ()


class Task:
    """Base class of a task family. Subclasses set `name`, `description`, `defaults_path`
    and implement `subtasks` and `load`."""

    name: str = ""
    description: str = ""
    defaults_path: Path | None = None  # YAML: {common: {...}, budgets: {tiny: {...}, ...}}

    def subtasks(self) -> list[SubtaskInfo]:
        raise NotImplementedError

    def defaults(self, budget: str) -> dict[str, Any]:
        """The family's config section for a budget: `common` updated by `budgets[budget]`."""
        if self.defaults_path is None:
            return {}
        raw = yaml.safe_load(Path(self.defaults_path).read_text()) or {}
        from bimix_bench.config import deep_merge  # local import: config imports registries

        return deep_merge(raw.get("common", {}), raw.get("budgets", {}).get(budget, {}))

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        """The chance level of a subtask, from the record's data facts where it depends on the
        data (a majority class). None where the family declares none."""
        return None

    def informative(self) -> dict[str, str]:
        """Per subtask, where it has been seen to separate models: the `informative:` mapping
        of the family's YAML (shown by `bimix-bench list`)."""
        if self.defaults_path is None:
            return {}
        raw = yaml.safe_load(Path(self.defaults_path).read_text()) or {}
        return {str(k): str(v) for k, v in (raw.get("informative") or {}).items()}

    def anchors(self) -> list[Anchor]:
        """Published results to reproduce: the `anchors:` list of the family's YAML."""
        if self.defaults_path is None:
            return []
        raw = yaml.safe_load(Path(self.defaults_path).read_text()) or {}
        return [Anchor(**{**a, "budgets": tuple(a.get("budgets", ()))}) for a in raw.get("anchors", [])]

    def check_options(self, cfg: dict[str, Any], subtasks: list[str]) -> None:
        """Raise UsageError for a bad option of the task section `cfg` before the run writes
        anything (its folder, config.yaml); what `load` would refuse, checked without building
        data. The default checks nothing beyond the config schema."""

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        """Build the splits. Raise bimix_bench.errors.SkipCell(reason) when the data is absent."""
        raise NotImplementedError


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a Task subclass under its `name`."""
    TASKS.register(cls.name, cls.description)(cls())
    return cls
