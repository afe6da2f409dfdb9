"""Long Range Arena (Tay et al., 2021) as a task family: `--task lra`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bimix_bench.task import ClassificationSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.lra.listops import (
    LISTOPS_N_CLASSES,
    ListOpsConfig,
    encode_listops,
    make_splits,
    parse_lra_tsv,
)

LRA_LISTOPS_BOUNDS = (500, 2000)


def _to_split(pairs: list[tuple[str, int]]) -> ClassificationSplit:
    return ClassificationSplit(
        [encode_listops(expr) for expr, _ in pairs], torch.tensor([y for _, y in pairs], dtype=torch.long)
    )


def find_listops_release(data_dir: Path | None) -> Path | None:
    """The folder holding LRA's basic_{train,val,test}.tsv, if the user has the release."""
    if data_dir is None:
        return None
    for candidate in (data_dir, data_dir / "listops-1000", data_dir / "lra_release" / "listops-1000"):
        if (candidate / "basic_train.tsv").exists():
            return candidate
    return None


def load_listops(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    release = find_listops_release(data_dir)
    if release is not None:
        splits = {s: parse_lra_tsv(release / f"basic_{s}.tsv") for s in ("train", "val", "test")}
        meta = {"source": f"LRA release ({release.name})", "standard_lengths": True}
        splits = {"train": splits["train"][: cfg["n_train"]] if cfg.get("n_train") else splits["train"],
                  "val": splits["val"], "test": splits["test"]}
    else:
        gen_cfg = ListOpsConfig(
            min_len=cfg["min_len"], max_len=cfg["max_len"], max_depth=cfg["max_depth"],
            max_args=cfg["max_args"], value_p=cfg["value_p"],
        )
        splits = make_splits(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed, gen_cfg)
        standard = (cfg["min_len"], cfg["max_len"]) == LRA_LISTOPS_BOUNDS
        meta = {
            "source": "generated offline with LRA's ListOps algorithm",
            "length_bounds": [cfg["min_len"], cfg["max_len"]],
            "standard_lengths": standard,
        }
        if not standard:
            meta["note"] = (f"length window {cfg['min_len']} < L < {cfg['max_len']} instead of "
                            f"LRA's {LRA_LISTOPS_BOUNDS[0]} < L < {LRA_LISTOPS_BOUNDS[1]}")
    meta["sizes"] = {k: len(v) for k, v in splits.items()}
    context = int(cfg["context"])
    return TaskData(
        task="lra", subtask="listops", objective="classify", context=context,
        train=_to_split(splits["train"]), val=_to_split(splits["val"]), test=_to_split(splits["test"]),
        n_classes=LISTOPS_N_CLASSES, meta=meta,
    )


@register_task
class LongRangeArena(Task):
    name = "lra"
    description = "Long Range Arena: ListOps (hierarchical reasoning over 500-2000 tokens)"
    defaults_path = Path(__file__).parent / "defaults.yaml"

    loaders = {"listops": load_listops}

    def subtasks(self) -> list[SubtaskInfo]:
        return [SubtaskInfo("listops", "nested MIN/MAX/MED/SUM-mod-10 expressions -> 10 classes")]

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return self.loaders[subtask](cfg[subtask], seed, data_dir)
