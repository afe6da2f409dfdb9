"""Resolving a run's configuration: budget YAML <- task-family defaults <- --set overrides.

The resolved config is one nested dict, saved with every run and hashed into every record:
  budget, params, arch, train, eval, throughput, seeds   from the budget YAML
  task      {family, subtasks, <subtask>: {...}, ...}    from the family's defaults for the budget
  models    {<model>: {option: value}}                   registered defaults of the chosen models
A task family may set its own training protocol for a budget (a `protocol:` mapping in its
defaults): its keys replace the budget's `train` keys of the same name (steps or epochs, batch,
warm-up, learning-rate grid, early stopping, the protocol's name and source), for every model
of the task alike. Parameters and depth stay the budget's; a family may choose only how the
budget's width is split into heads (an `arch: {n_heads: N}` mapping, TASK_ARCH_KEYS), alike for
every model of the task, and the records keep it in config.arch. A family may also give one subtask
its own steps, batch or stopping rule (`subtask_protocol: {SUBTASK: {train keys}}`, kept in the
task section and applied per cell by `subtask_train`), never its own learning rates: a grid is
chosen, and compared across models, within one protocol per subtask. --set applies after all
of these: a train key given on the command line wins over a subtask's protocol too.
Overrides address any leaf with a dotted key (`train.steps=100`,
`models.bimix.tv_lambda=0.1`); the value is parsed as YAML and must keep the leaf's type;
unknown keys are rejected with the list of valid ones. The budget sections are read through
typed views (config.sections: train_config(cfg) and the like), which state each key's type,
range and default once and check them; the dict itself is what a run saves and hashes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from bimix_bench.config.sections import check_sections
from bimix_bench.errors import UsageError

BUDGET_DIR = Path(__file__).parent / "budgets"
BUDGET_SECTIONS = ("params", "arch", "train", "eval", "throughput", "seeds")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `base` with `update` merged in recursively (update wins)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def budget_names() -> list[str]:
    order = {"tiny": 0, "cpu": 1, "small": 2, "medium": 3, "large": 4}
    names = [p.stem for p in BUDGET_DIR.glob("*.yaml")]
    return sorted(names, key=lambda n: (order.get(n, 99), n))


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UsageError(f"malformed YAML in {what} {path}{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must be a YAML mapping")
    return data


def load_budget(name_or_path: str) -> dict[str, Any]:
    """A built-in budget by name, or a budget YAML file given by path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = BUDGET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UsageError(
                f"unknown budget {name_or_path!r}; valid: {', '.join(budget_names())} "
                "(or a path to a budget .yaml)"
            )
    data = load_yaml(path, "budget")
    missing = [s for s in BUDGET_SECTIONS if s not in data]
    if missing:
        raise UsageError(f"budget {path} lacks section(s): {', '.join(missing)}")
    _check_budget_types(data, f"budget {path}")
    return data


def _check_budget_types(data: dict[str, Any], where: Any) -> None:
    """Every budget section passes its typed view's checks (config.sections); seeds are
    integers >= 0."""
    check_sections(data, str(where))
    if not (isinstance(data["seeds"], list) and data["seeds"]
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in data["seeds"])):
        raise UsageError(f"{where}: seeds must be a non-empty list of integers >= 0")


# Backbone keys a task family may set for a budget: the head count alone. Parameters and depth
# are the budget's for every task; how one layer's width is split into heads decides whether
# a task is learnable at all at a small width (at cpu, one head of 64 never copied a needle
# out of 256 bytes in 20,000 steps, two heads of 32 copied every one: docs/protocols.md).
TASK_ARCH_KEYS = frozenset({"n_heads"})


def apply_task_arch(cfg: dict[str, Any]) -> None:
    """Move the task family's `arch` mapping (if any) into cfg["arch"], in place; it may set
    only TASK_ARCH_KEYS."""
    arch = cfg["task"].pop("arch", None) or {}
    family = cfg["task"]["family"]
    if not isinstance(arch, dict):
        raise UsageError(f"task {family}: arch must be a mapping (it may set "
                         f"{', '.join(sorted(TASK_ARCH_KEYS))})")
    refused = sorted(set(arch) - TASK_ARCH_KEYS)
    if refused:
        raise UsageError(f"task {family}: arch may set only {', '.join(sorted(TASK_ARCH_KEYS))}, "
                         f"not {', '.join(refused)} (parameters and depth are the budget's)")
    cfg["arch"] = {**cfg["arch"], **arch}


def apply_protocol(cfg: dict[str, Any]) -> None:
    """Move the task family's `protocol` (if any) into cfg["train"], in place, and check the
    keys of its per-subtask protocols (task.subtask_protocol, which stays in the task section)."""
    protocol = cfg["task"].pop("protocol", None) or {}
    if not isinstance(protocol, dict):
        raise UsageError(f"task {cfg['task']['family']}: protocol must be a mapping of train keys")
    unknown = sorted(set(protocol) - set(cfg["train"]))
    if unknown:
        raise UsageError(f"task {cfg['task']['family']}: protocol sets unknown train key(s) "
                         f"{', '.join(unknown)}; valid: {', '.join(cfg['train'])}")
    cfg["train"] = deep_merge(cfg["train"], protocol)
    per_subtask = cfg["task"].get("subtask_protocol") or {}
    if not isinstance(per_subtask, dict) or not all(isinstance(v, dict) for v in per_subtask.values()):
        raise UsageError(f"task {cfg['task']['family']}: subtask_protocol must map each subtask "
                         "to a mapping of train keys")
    for subtask, keys in per_subtask.items():
        unknown = sorted(set(keys) - (set(cfg["train"]) - SHARED_TRAIN_KEYS))
        if unknown:
            raise UsageError(f"task {cfg['task']['family']}: subtask_protocol of {subtask} sets "
                             f"{', '.join(unknown)}; it may set only train keys other than "
                             f"{', '.join(sorted(SHARED_TRAIN_KEYS))}")


# Train keys that one subtask may not set for itself: the learning rates every subtask's grid
# shares (the selection must stay one protocol per task and budget).
SHARED_TRAIN_KEYS = frozenset({"lr", "lr_grid"})


def subtask_train(cfg: dict[str, Any], subtask: str) -> dict[str, Any]:
    """The train section a cell of `subtask` trains with: the run's, with the subtask's own
    protocol keys (task.subtask_protocol) over it."""
    keys = ((cfg.get("task") or {}).get("subtask_protocol") or {}).get(subtask) or {}
    return {**cfg["train"], **keys}


def _command_line_wins(cfg: dict[str, Any], overrides: list[str]) -> None:
    """A train key given with --set drops out of every subtask's protocol, in place."""
    given = {key.removeprefix("train.") for key in map(override_key, overrides)
             if key.startswith("train.")}
    for keys in (cfg["task"].get("subtask_protocol") or {}).values():
        for key in given & set(keys):
            del keys[key]


# Train keys that a --set may change without the protocol's name saying so: the learning
# rates (every record names its own under `learning_rate`), the name itself, and how batches
# are built (the same batches either way).
UNNAMED_TRAIN_KEYS = frozenset({"lr", "lr_grid", "protocol", "data_workers"})


def _changes_the_protocol(key: str) -> bool:
    """Whether a --set of `key` changes what the protocol's name must say: a train key of the
    protocol, or the head count a family may set."""
    section, _, name = key.partition(".")
    if section == "train":
        return name not in UNNAMED_TRAIN_KEYS
    return section == "arch" and name in TASK_ARCH_KEYS


def _name_the_changes(cfg: dict[str, Any], overrides: list[str]) -> None:
    """Where --set changes the protocol (_changes_the_protocol), its name (and each subtask
    protocol's) says so, in place: the record then names the protocol a cell really trained
    under, not the one the task family wrote down."""
    keys = [override_key(item) for item in overrides]
    if "train.protocol" in keys:
        return  # the user named the protocol
    changed = [item.strip() for item, key in zip(overrides, keys) if _changes_the_protocol(key)]
    if not changed:
        return
    suffix = f"; changed by --set: {', '.join(changed)}"
    cfg["train"]["protocol"] = f"{cfg['train']['protocol']}{suffix}"
    for keys_of_subtask in (cfg["task"].get("subtask_protocol") or {}).values():
        if "protocol" in keys_of_subtask:
            keys_of_subtask["protocol"] = f"{keys_of_subtask['protocol']}{suffix}"


def resolve_config(
    budget: str,
    task_family: str,
    task_defaults: dict[str, Any],
    model_defaults: dict[str, dict[str, Any]],
    overrides: list[str] = (),
) -> dict[str, Any]:
    raw = load_budget(budget)
    cfg: dict[str, Any] = {
        "budget": {"name": raw.get("name", Path(budget).stem), "description": raw.get("description", "")},
        **{s: copy.deepcopy(raw[s]) for s in BUDGET_SECTIONS},
        "task": deep_merge({"family": task_family}, task_defaults),
        "models": copy.deepcopy(model_defaults),
    }
    apply_protocol(cfg)
    apply_task_arch(cfg)
    for item in overrides:
        apply_override(cfg, item)
    _command_line_wins(cfg, list(overrides))
    _name_the_changes(cfg, list(overrides))
    _check_budget_types(cfg, "the resolved config (budget, task protocol and --set)")
    for subtask in cfg["task"].get("subtask_protocol") or {}:
        check_sections({**cfg, "train": subtask_train(cfg, subtask)},
                       f"the protocol of subtask {subtask}")
    check_task_sizes(cfg["task"])
    return cfg


# Sizes in a task section, wherever they sit (`task.n_train`, `task.listops.n_train`): example
# counts may be 0 (real data sets: "all of it"), never negative (a negative count would slice
# from the end, e.g. train examples taken from the test examples); lengths must be positive.
_COUNT_KEYS = ("n_train", "n_val", "n_test")
_LENGTH_KEYS = ("context", "min_len", "max_len", "image_size")


def check_task_sizes(task: dict[str, Any], prefix: str = "task") -> None:
    """Range checks of every example count and length in a resolved task section."""
    for key, value in task.items():
        where = f"{prefix}.{key}"
        if isinstance(value, dict):
            check_task_sizes(value, where)
        elif isinstance(value, bool) or not isinstance(value, int):
            continue
        elif key in _COUNT_KEYS and value < 0:
            raise UsageError(f"{where} must be >= 0 (0: every example), got {value}")
        elif key in _LENGTH_KEYS and value <= 0:
            raise UsageError(f"{where} must be > 0, got {value}")
    lo, hi = task.get("min_len"), task.get("max_len")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        raise UsageError(f"{prefix}.min_len ({lo}) must not exceed {prefix}.max_len ({hi})")


def leaf_keys(cfg: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys.extend(leaf_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def override_key(item: str) -> str:
    """The dotted key of one `--set key=value`."""
    if "=" not in item:
        raise UsageError(f"--set expects key=value, got {item!r}")
    return item.split("=", 1)[0].strip()


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` in place; the value keeps the type of the existing leaf."""
    key, text = override_key(item), item.split("=", 1)[1]
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            valid = ", ".join(leaf_keys(cfg))
            raise UsageError(f"unknown config key {key!r}; valid keys: {valid}")
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if isinstance(old, dict):
        raise UsageError(f"config key {key!r} is a section; set one of its keys")
    node[parts[-1]] = coerce_value(key, text, old)


def coerce_value(key: str, text: str, old: Any) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if old is None:
        return value
    if isinstance(old, bool):
        ok = isinstance(value, bool)
    elif isinstance(old, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(old, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(old, list):
        if not isinstance(value, list):
            value = [value]  # `seeds=3` means [3]
        value = [_number_or_text(v) for v in value]  # YAML 1.1 reads "1e-3" as a string
        ok = all(isinstance(v, type(old[0])) for v in value) if old else True
    elif isinstance(old, str):
        ok = value is not None and not isinstance(value, (dict, list))
        value = str(value) if ok else value
    else:
        ok = isinstance(value, type(old))
    if not ok:
        raise UsageError(f"{key} expects {type(old).__name__}, got {text!r}")
    return value


def _number_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
