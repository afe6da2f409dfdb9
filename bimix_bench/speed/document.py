"""The speed document: what `speed --out` writes and what `check --reference` reads.

One JSON object (format "bimix-bench-speed", version 1):
  device       {type, name, class, threads}; `class` decides which references compare
  environment  bimix_bench.env.environment_info()
  settings     budget, shape (tokens_per_batch, contexts, kinds, decode_tokens), precision,
               warmup, repeats, interleave
  calibration  {bulk|steps: CalibrationSpec fields + seconds_median}
  injected_slowdown  {model: factor} when the test-only hook was active, else {}
  models       {name: {options, cells: [{context, status, reason, arch, params_non_embedding,
               batch_rows, peak_memory_bytes, figures: {kind: {tokens_per_s, ratio,
               ratio_samples, seconds_samples, calibration_seconds_samples, backend, method}},
               unavailable: {kind: reason}}]}}   (the two raw-time lists are absent in
               documents written before they were added)
A figure's `ratio` is the median over rounds of tokens processed in the time of one call of its
calibration; `tokens_per_s` is the plain median rate, for people.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Iterator

import torch

from bimix_bench.errors import UsageError
from bimix_bench.files import write_text_atomic

FORMAT = "bimix-bench-speed"
VERSION = 1
CELL_STATUSES = ("ok", "oom", "failed", "skipped")


def device_class(device: torch.device, threads: int | None = None) -> str:
    """Machines whose ratios are comparable: the GPU's name, or CPU architecture and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads() if threads is None else threads
    return f"{device.type}-{platform.machine()}-{threads}threads"


def is_speed_document(path: Path) -> bool:
    """True when `path` is a JSON file holding a speed document (cheap check of the header)."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_document(path: Path, what: str = "speed file") -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no such {what}: {path}") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from None
    problems = validate_document(data)
    if problems:
        raise UsageError(f"{what} {path} is not a valid speed document: {problems[0]}")
    return data


def validate_document(data: Any) -> list[str]:
    """Problems with the structure that readers rely on (empty when none)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return [f"format is not {FORMAT!r}"]
    if data.get("version") != VERSION:
        return [f"version {data.get('version')!r} is not {VERSION}"]
    problems = []
    for key in ("device", "settings", "calibration", "models"):
        if not isinstance(data.get(key), dict):
            problems.append(f"{key} must be an object")
    if problems:
        return problems
    if not isinstance(data["device"].get("class"), str):
        problems.append("device.class must be a string")
    for name, model in data["models"].items():
        cells = model.get("cells") if isinstance(model, dict) else None
        if not isinstance(cells, list):
            problems.append(f"models.{name}.cells must be a list")
            continue
        for i, cell in enumerate(cells):
            where = f"models.{name}.cells[{i}]"
            if not isinstance(cell, dict) or not isinstance(cell.get("context"), int):
                problems.append(f"{where}.context must be an integer")
            elif cell.get("status") not in CELL_STATUSES:
                problems.append(f"{where}.status must be one of {', '.join(CELL_STATUSES)}")
            else:
                for kind, fig in (cell.get("figures") or {}).items():
                    if not (isinstance(fig, dict) and _positive(fig.get("ratio"))
                            and _positive(fig.get("tokens_per_s"))):
                        problems.append(f"{where}.figures.{kind} needs positive ratio and tokens_per_s")
    return problems


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def write_document(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader sees the old file or the new one), strict JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n"
    write_text_atomic(path, text)


def iter_cells(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(model, cell) for every cell, models in document order, contexts ascending."""
    for name, model in doc["models"].items():
        for cell in sorted(model["cells"], key=lambda c: c["context"]):
            yield name, cell
