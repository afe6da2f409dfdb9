"""Typed, checked views of a config's budget sections: train, eval, throughput, params, arch.

The resolved config stays one nested dict: that dict is what config.yaml saves and what
config_hash hashes, and `--resume` compares them, so it must not change. The frozen
dataclasses here are read-only views built from it where a value is used, through
train_config(cfg), eval_config(cfg), throughput_config(cfg), params_config(cfg) and
arch_config(cfg) (a budget dict has the same sections, so they take one too). Each key's type,
range and default are written once, here:

- a field without a default is a key every budget must set (all have since the first
  version): a config without it is refused, naming the key;
- a field with a default may be absent (a config.yaml saved before the key existed): the
  default is the value the code has always used without it.

Keys a section holds beyond its fields are left alone (views read, never reject).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from bimix_bench.errors import UsageError


class _Invalid(ValueError):
    """A value outside its key's type or range; the message says what it must be."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Checks: each takes the raw value and returns the typed one, or raises _Invalid. Integers read
# from YAML stand for floats where a float is meant (`lr: 3`), so float checks convert them.

def _positive_int(value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise _Invalid(f"must be a positive number, got {value!r}")
    return value


def _positive_float(value: Any) -> float:
    if not _is_number(value) or not value > 0:
        raise _Invalid(f"must be a positive number, got {value!r}")
    return float(value)


def _int_at_least(low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _is_int(value) or value < low:
            raise _Invalid(f"must be an integer >= {low}, got {value!r}")
        return value
    return check


def _float_at_least_zero(value: Any) -> float:
    if not _is_number(value) or not value >= 0:
        raise _Invalid(f"must be a number >= 0, got {value!r}")
    return float(value)


def _fraction(value: Any) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise _Invalid(f"must be a number from 0 to 1, got {value!r}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a non-empty string, got {value!r}")
    return value


def _adam_betas(value: Any) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in value)):
        raise _Invalid(f"must be two numbers in [0, 1), got {value!r}")
    return float(value[0]), float(value[1])


def _rate_grid(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) and v > 0 for v in value):
        raise _Invalid(f"must be a list of positive numbers, got {value!r}")
    if len(set(value)) != len(value):  # a repeated rate would train the same cell twice
        raise _Invalid(f"repeats a rate: {value!r}")
    return tuple(float(v) for v in value)


def _length_factors(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(_is_int(f) and f >= 2 for f in value):
        raise _Invalid(f"must be a list of integers >= 2, got {value!r}")
    return tuple(value)


def _key(check: Callable[[Any], Any], default: Any = MISSING) -> Any:
    """A section field checked by `check`; without `default`, every config must set it."""
    return field(default=default, metadata={"check": check})


Section = TypeVar("Section", bound="_SectionView")


class _SectionView:
    """Builds a view from its dict section, checking every key once."""

    NAME: ClassVar[str]

    @classmethod
    def of(cls: type[Section], cfg: Mapping[str, Any], where: str = "") -> Section:
        """The view of cfg[NAME]; `where` (e.g. "budget tiny.yaml") prefixes error messages."""
        prefix = f"{where}: " if where else ""
        section = cfg.get(cls.NAME)
        if not isinstance(section, Mapping):
            raise UsageError(f"{prefix}{cls.NAME} must be a mapping of keys, got {section!r}")
        values = {}
        for f in fields(cls):
            dotted = f"{cls.NAME}.{f.name}"
            if f.name not in section:
                if f.default is MISSING:
                    raise UsageError(f"{prefix}{dotted} is missing (every budget sets it)")
                continue
            try:
                values[f.name] = f.metadata["check"](section[f.name])
            except _Invalid as err:
                raise UsageError(f"{prefix}{dotted} {err}") from None
        return cls(**values)


# The protocol name of a run whose task family sets no protocol of its own for the budget.
BUDGET_PROTOCOL = "budget default"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_SectionView):
    """How every model of a run is trained: the same steps, batch, optimizer and schedule."""

    NAME: ClassVar[str] = "train"

    steps: int = _key(_positive_int)  # optimizer steps (unless `epochs` is set)
    batch_tokens: int = _key(_positive_int)  # tokens per step: batch_tokens // context sequences
    optimizer: str = _key(_text, "adamw")  # the only one engine.optim builds (it refuses others)
    lr: float = _key(_positive_float)  # peak learning rate, after linear warm-up
    betas: tuple[float, float] = _key(_adam_betas, (0.9, 0.95))  # AdamW's moment decays
    weight_decay: float = _key(_float_at_least_zero)  # AdamW's, on matrices only
    warmup_frac: float = _key(_fraction, 0.0)  # share of the steps warming up linearly
    min_lr_frac: float = _key(_fraction, 0.0)  # the cosine decays to lr * min_lr_frac
    grad_clip: float = _key(_positive_float)  # max global gradient norm per step
    eval_every: int | None = _key(_positive_int, None)  # steps between validations; None: at the end only
    # auto, bf16 or fp32; engine.device.resolved_precision checks which, for `speed --precision` too
    precision: str = _key(_text, "auto")
    batch_sequences: int = _key(_int_at_least(0), 0)  # > 0: sequences per step, instead of batch_tokens
    data_workers: int = _key(_int_at_least(0), 0)  # processes building batches ahead on a GPU; 0: none
    lr_grid: tuple[float, ...] = _key(_rate_grid, ())  # rates tried on the first seed; (): just lr
    epochs: int = _key(_int_at_least(0), 0)  # > 0: passes over the training set instead of steps
    early_stop_at: float = _key(_float_at_least_zero, 0.0)  # > 0: stop once validation reaches it
    protocol: str = _key(_text, BUDGET_PROTOCOL)  # the training protocol's name and source

    def rates(self) -> list[float]:
        """The learning rates a run tries: the grid, or the one rate `lr`."""
        return list(self.lr_grid) or [self.lr]

    def validation_interval(self, total_steps: int) -> int:
        """Steps between validations; without eval_every, only after the last step."""
        return self.eval_every or total_steps


def sequences_per_step(batch_sequences: int, batch_tokens: int, context: int) -> int:
    """Sequences per optimizer step: batch_sequences where a protocol sets it (Zoology: 512),
    else the budget's tokens per step over the training context; at least one."""
    if batch_sequences > 0:
        return batch_sequences
    return max(1, batch_tokens // context)


@dataclass(frozen=True, kw_only=True)
class EvalConfig(_SectionView):
    """How much of the validation and test splits is scored, and in what batches."""

    NAME: ClassVar[str] = "eval"

    val_examples: int = _key(_positive_int)  # examples (classification) or windows (LM) per validation
    test_examples: int = _key(_positive_int)  # examples or windows scored on the test split
    batch_size: int = _key(_positive_int)  # sequences per evaluation batch at the training length
    length_factors: tuple[int, ...] = _key(_length_factors, ())  # also test at these multiples of the length
    length_examples: int = _key(_int_at_least(0), 0)  # test examples per longer length; 0: test_examples

    def longer_length_examples(self) -> int:
        """Test examples scored at each longer length."""
        return self.length_examples or self.test_examples


@dataclass(frozen=True, kw_only=True)
class ThroughputConfig(_SectionView):
    """How train, inference and decode tokens/s are timed (run records and `speed` alike)."""

    NAME: ClassVar[str] = "throughput"

    warmup: int = _key(_int_at_least(0))  # untimed calls before timing
    repeats: int = _key(_int_at_least(1))  # timed calls; the median is reported
    decode_tokens: int = _key(_int_at_least(0))  # greedy steps per decode call; 0: decode not timed


@dataclass(frozen=True, kw_only=True)
class ParamsConfig(_SectionView):
    """The parameter target every model is sized to."""

    NAME: ClassVar[str] = "params"

    non_embedding: int = _key(_positive_int)  # target non-embedding parameters, every model alike
    tolerance: float = _key(_positive_float)  # allowed relative deviation after solving the width


@dataclass(frozen=True, kw_only=True)
class ArchConfig(_SectionView):
    """The depth and shape every model shares; the width is solved for the parameter target."""

    NAME: ClassVar[str] = "arch"

    n_layers: int = _key(_positive_int)  # mixer + feed-forward blocks
    n_heads: int = _key(_positive_int)  # heads of the models that have heads
    ffn_ratio: float = _key(_positive_float)  # SwiGLU hidden / d_model before fine-matching


SECTION_VIEWS: tuple[type[_SectionView], ...] = (
    TrainConfig, EvalConfig, ThroughputConfig, ParamsConfig, ArchConfig)


def check_sections(cfg: Mapping[str, Any], where: str = "") -> None:
    """Raise UsageError (naming the dotted key) unless every section builds its view."""
    for view in SECTION_VIEWS:
        view.of(cfg, where)


def train_config(cfg: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig.of(cfg)


def eval_config(cfg: Mapping[str, Any]) -> EvalConfig:
    return EvalConfig.of(cfg)


def throughput_config(cfg: Mapping[str, Any]) -> ThroughputConfig:
    return ThroughputConfig.of(cfg)


def params_config(cfg: Mapping[str, Any]) -> ParamsConfig:
    return ParamsConfig.of(cfg)


def arch_config(cfg: Mapping[str, Any]) -> ArchConfig:
    return ArchConfig.of(cfg)
