"""Where LRA's real data sets live under ``--data-dir``, and reading Hugging Face formats.

Layouts understood (``<d>`` is ``--data-dir``):
* the LRA release (https://storage.googleapis.com/long-range-arena/lra_release.gz, extracted):
  ``<d>/lra_release/<part>``, ``<d>/lra_release/lra_release/<part>`` or ``<d>/<part>``, where
  ``<part>`` is ``listops-1000``, ``tsv_data``, ``pathfinder32``, ``pathfinder128``, ...
* a Hugging Face dataset in ``<d>/<name>/``: a snapshot of the hub repository (parquet files
  named ``<split>-00000-of-00001.parquet``, e.g. under ``plain_text/``), the parquet-converter
  layout (``<split>/0000.parquet``), or a ``datasets`` ``save_to_disk`` folder
  (``dataset_dict.json`` + ``<split>/``).
* a hub id (``hf_id`` in the config): ``datasets.load_dataset(hf_id)``, which needs network
  access or the local Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LRA_RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def release_part(data_dir: Path | None, part: str) -> Path | None:
    """The folder of one part of the LRA release under `data_dir`, if present."""
    if data_dir is None:
        return None
    for root in (data_dir / "lra_release", data_dir / "lra_release" / "lra_release", data_dir):
        if (root / part).is_dir():
            return root / part
    return None


def hf_split_files(root: Path, split: str) -> list[Path]:
    """Parquet files of one split of a Hugging Face dataset folder (sorted; [] if none)."""
    if not root.is_dir():
        return []
    named = sorted(p for p in root.rglob(f"{split}-*.parquet") if p.is_file())
    if named:
        return named
    return sorted(p for p in root.rglob("*.parquet") if p.parent.name == split)


def read_hf_split(root: Path | None, hf_id: str, split: str, columns: list[str]) -> Any | None:
    """One split as a pyarrow Table holding `columns`, from local files under `root` or, when
    `hf_id` is set and nothing local exists, from the hub (or its cache). None if absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if root is not None:
        files = hf_split_files(root, split)
        if files:
            return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        if (root / "dataset_dict.json").is_file() and (root / split).is_dir():
            import datasets

            return _arrow_table(datasets.load_from_disk(str(root))[split], columns)
    if hf_id:
        import datasets

        try:
            return _arrow_table(datasets.load_dataset(hf_id, split=split), columns)
        except Exception as err:  # network or cache failure: report, let the caller skip
            raise FileNotFoundError(f"could not load {hf_id!r} split {split!r} from the Hugging "
                                    f"Face hub or cache: {type(err).__name__}: {err}") from err
    return None


def _arrow_table(dataset: Any, columns: list[str]) -> Any:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; has {dataset.column_names}")
    return dataset.select_columns(columns).with_format("arrow")[:]
