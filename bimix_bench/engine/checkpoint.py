"""Model checkpoints kept in a run folder (best validation weights of each cell), so models can
be inspected after the run (e.g. `bimix-bench gates`) without retraining."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS

CHECKPOINT_DIR = "checkpoints"


def grid_tag(role: str, lr: float | None) -> str:
    """File-name suffix that keeps the cells of one learning-rate grid apart ("-lr0.001"); ""
    for a cell outside a grid."""
    return f"-lr{lr:g}" if role == "grid" else ""


def record_tag(record: dict[str, Any]) -> str:
    """grid_tag of the cell a record is of."""
    learning_rate = record.get("learning_rate") or {}
    return grid_tag(learning_rate.get("role", "fixed"), learning_rate.get("lr"))


def checkpoint_path(run_dir: Path, task: str, subtask: str, model: str, seed: int,
                    tag: str = "") -> Path:
    """`tag` keeps apart the cells of one learning-rate grid ("-lr0.001")."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{task}-{subtask}-{model}-seed{seed}{tag}.pt"


def save_checkpoint(path: Path, model_name: str, options: dict[str, Any], arch: Architecture,
                    state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"format": 1, "model": model_name, "options": options, "arch": asdict(arch),
         "state_dict": state_dict, "meta": meta},
        tmp,
    )
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[LanguageModel, dict[str, Any]]:
    blob = torch.load(path, map_location=device, weights_only=True)
    spec = MODELS.get(blob["model"]).obj
    model = LanguageModel(Architecture(**blob["arch"]), spec, blob["options"]).to(device)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}
