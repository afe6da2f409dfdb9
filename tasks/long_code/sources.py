"""Source files for long-code modelling: the Python standard library that ships with the running
interpreter, or a code data set (the-stack / codeparrot style, one file per row in a `content`
column) read through `datasets`; a deterministic split by file; the byte stream a split becomes.

Splitting is by file, never inside one: a file goes to test, val or train by a hash of its key
(its path relative to the library root, or the data set's repository/path columns), so the
split depends neither on the seed nor on the order in which files are listed, and a file keeps
its split across Python versions for as long as its path exists.
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from bimix_bench.errors import SkipCell
from bimix_bench.models.tokenizer import SEP

SPLITS = ("train", "val", "test")
# Folder names left out of the standard library at any depth: third-party packages installed
# into it, and the test suites (they hold deliberately malformed sources, bad encodings and
# large generated data files, so they are not representative library code).
STDLIB_EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idle_test")


@dataclass(frozen=True)
class CodeFile:
    key: str  # what the split hashes: relative posix path, or repository/path
    data: bytes  # the file's bytes (valid UTF-8)


def unit_hash(key: str) -> float:
    """The first 64 bits of sha256(key) as a number in [0, 1): a split rule that depends on
    the key alone (not on seeds, Python's hash randomization or listing order)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" from u = unit_hash(key):
    test if u < test_fraction, val if u < test_fraction + val_fraction, else train."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    u = unit_hash(key)
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path, excluded_dirs: Iterable[str] = STDLIB_EXCLUDED_DIRS
                 ) -> tuple[list[CodeFile], int]:
    """Every .py file under `root` outside `excluded_dirs`, sorted by relative path, and the
    number of files skipped because they are not valid UTF-8."""
    excluded = set(excluded_dirs)
    paths: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in excluded and d != "__pycache__"]
        paths.extend(Path(folder) / n for n in names if n.endswith(".py"))
    files, skipped = [], 0
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        if not _is_utf8(data):
            skipped += 1
            continue
        files.append(CodeFile(path.relative_to(root).as_posix(), data))
    return files, skipped


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def python_description() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


# --- code data sets through `datasets` ------------------------------------------------------
_LOCAL_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def local_data_files(pattern: str, data_dir: Path | None) -> list[Path]:
    """Files named by `pattern` (a folder, file or glob; relative paths are under --data-dir):
    a folder means every .parquet / .jsonl / .json(.gz) file below it, sorted."""
    if not pattern:
        return []
    base = Path(pattern)
    if not base.is_absolute():
        if data_dir is None:
            return []
        base = Path(data_dir) / pattern
    if base.is_dir():
        found = [p for p in base.rglob("*") if p.is_file() and _builder_for(p)]
    else:
        found = [Path(p) for p in glob.glob(str(base), recursive=True) if Path(p).is_file()]
    return sorted(found)


def _builder_for(path: Path) -> str | None:
    if path.name.endswith((".jsonl.gz", ".json.gz")):
        return "json"
    return _LOCAL_SUFFIXES.get(path.suffix)


def dataset_rows(cfg: dict[str, Any], data_dir: Path | None) -> tuple[Iterable[dict[str, Any]], str]:
    """Rows of the configured code data set (streamed: nothing is copied into a cache) and a
    description of where they come from. Raises SkipCell when the data is not available."""
    files = local_data_files(str(cfg.get("data_files") or ""), data_dir)
    how_to = (
        "put the data set's .parquet or .jsonl files (one source file per row, text in column "
        f"{cfg['text_column']!r}) under --data-dir/{cfg.get('data_files') or 'long_code'}, or set "
        f"task.hf.from_hub=true to stream {cfg['hub_id']!r} from the Hugging Face hub (needs network "
        "or a local hub cache)"
    )
    try:
        import datasets  # noqa: F401  (heavy import: only when a real data set is asked for)
    except ImportError as err:
        raise SkipCell(f"the `datasets` package is not installed ({err}); pip install datasets") from None
    from datasets import load_dataset

    if files:
        builders = {_builder_for(p) for p in files}
        if len(builders) != 1:
            raise SkipCell(f"mixed file types in {cfg['data_files']!r}: use only parquet or only json(l)")
        rows = load_dataset(builders.pop(), data_files=[str(p) for p in files], split="train",
                            streaming=True)
        names = sorted({p.name for p in files})
        return rows, f"local files ({len(files)}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})"
    if not cfg.get("from_hub"):
        raise SkipCell(f"no local code data set found; {how_to}")
    try:
        rows = load_dataset(cfg["hub_id"], cfg.get("hub_config") or None, split=cfg["hub_split"],
                            streaming=True)
    except Exception as err:  # offline, unknown id, gated data set ...
        raise SkipCell(f"cannot open {cfg['hub_id']!r} from the hub ({type(err).__name__}: {err}); "
                       f"{how_to}") from None
    return rows, f"hub {cfg['hub_id']}" + (f"/{cfg['hub_config']}" if cfg.get("hub_config") else "")


def dataset_files(rows: Iterable[dict[str, Any]], cfg: dict[str, Any]) -> tuple[list[CodeFile], int]:
    """CodeFiles from data set rows (at most cfg max_files; 0 = all), keyed by the configured
    path columns when the rows have them, else by a hash of the content; rows whose text is
    missing or empty are skipped and counted. Sorted by key, so the stream does not depend on
    the order the rows arrive in."""
    text_col, path_cols = cfg["text_column"], list(cfg.get("path_columns") or [])
    limit = int(cfg.get("max_files") or 0)
    files: dict[str, bytes] = {}
    skipped = 0
    for row in rows:
        if text_col not in row:
            raise SkipCell(f"the code data set has no column {text_col!r} (columns: {', '.join(row)}); "
                           "set task.hf.text_column")
        text = row[text_col]
        if not isinstance(text, str) or not text:
            skipped += 1
            continue
        data = text.encode("utf-8")
        if path_cols and all(isinstance(row.get(c), str) for c in path_cols):
            key = "/".join(row[c] for c in path_cols)
        else:
            key = "sha256:" + hashlib.sha256(data).hexdigest()
        files.setdefault(key, data)  # duplicates of one key keep the first
        if limit and len(files) >= limit:
            break
    return [CodeFile(k, files[k]) for k in sorted(files)], skipped


# --- streams ------------------------------------------------------------------------------
def split_files(files: list[CodeFile], val_fraction: float, test_fraction: float
                ) -> dict[str, list[CodeFile]]:
    out: dict[str, list[CodeFile]] = {s: [] for s in SPLITS}
    for f in files:
        out[split_of(f.key, val_fraction, test_fraction)].append(f)
    return out


def join_files(files: list[CodeFile]) -> tuple[torch.Tensor, np.ndarray]:
    """The stream of a split: each file's bytes followed by one SEP id.
    Returns the stream (N,) int64 and each file's start offset (n_files,) int64."""
    lengths = np.array([len(f.data) for f in files], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    raw = b"\0".join(f.data for f in files) + (b"\0" if files else b"")
    stream = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).astype(np.int64))
    stream[torch.from_numpy(starts + lengths)] = SEP  # the placeholder after every file
    return stream, starts
