"""Name -> plugin registries for models (token mixers) and tasks.

Built-in plugins register themselves with a decorator when their module is imported;
third-party plugins are discovered through the entry-point groups ``bimix_bench.models`` and
``bimix_bench.tasks`` (the entry point loads a module or object whose import registers it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from bimix_bench.errors import UsageError

T = TypeVar("T")

# Modules whose import registers the built-in plugins. Kept in one place so that `list`
# shows everything without importing torch-heavy code paths twice.
BUILTIN_MODELS = (
    "bimix_bench.baselines.transformer",
    "bimix_bench.bimix.mixer",
    "bimix_bench.baselines.mamba2",
    "bimix_bench.baselines.linear_attention",
    "bimix_bench.baselines.gla",
    "bimix_bench.baselines.multistate",
    "bimix_bench.baselines.loglinear",
    "bimix_bench.baselines.hsa",
)
BUILTIN_TASKS = (
    "bimix_bench.tasks.lra",
    "bimix_bench.tasks.mqar",
    "bimix_bench.tasks.long_code",
    "bimix_bench.tasks.multidoc_qa",
    "bimix_bench.tasks.state_tracking",
    "bimix_bench.tasks.babilong",
)


@dataclass
class Entry(Generic[T]):
    name: str
    description: str
    obj: T
    source: str = "builtin"  # "builtin" or the entry point's distribution
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str, builtin_modules: tuple[str, ...]):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False
        self._current_source = "builtin"
        self.load_errors: dict[str, str] = {}

    def register(self, name: str, description: str, **extra: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, description, obj, self._current_source, dict(extra))
            return obj

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                # A built-in plugin whose module is absent from this checkout; report, don't die.
                if err.name and module.startswith(err.name):
                    self.load_errors[module] = str(err)
                else:
                    raise
        for ep in entry_points(group=self.entry_point_group):
            self._current_source = f"plugin:{ep.value}"
            try:
                ep.load()
            except Exception as err:  # a broken third-party plugin must not break the CLI
                self.load_errors[ep.name] = f"{type(err).__name__}: {err}"
            finally:
                self._current_source = "builtin"

    def get(self, name: str) -> Entry[T]:
        self._load()
        if name not in self._entries:
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {valid}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load()
        return iter(list(self._entries.values()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


MODELS: Registry[Any] = Registry("model", "bimix_bench.models", BUILTIN_MODELS)
TASKS: Registry[Any] = Registry("task", "bimix_bench.tasks", BUILTIN_TASKS)
