"""Learning-rate selection over a grid, the way Zoology and MAD compare mixers: every model is
trained at every rate of the grid on the run's first seed, the rate whose best validation
result ranks highest (metrics.selection.selection_key) is chosen per model, and the other seeds
train at that rate. The choice is a pure function of the records, so the runner (which rate
the later seeds get) and `compare` (which seed-0 record counts) cannot disagree, and a resumed
run chooses exactly as the first process would have. The test split is never read.

A record's "learning_rate" says {lr, grid, role[, chosen_from]}; records without it trained at
one fixed rate. Fixed-rate runs of one cell at several rates (probes, one rate per run folder)
are chosen among by the same rule where the rates share a seed (at_chosen_fixed_rates).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from bimix_bench.metrics.selection import headline_metric, selection_key

GridKey = tuple[Any, ...]  # (run_id, task, subtask, budget, model)


def grid_key(rec: dict[str, Any]) -> GridKey:
    return (rec.get("run_id"), rec["task"], rec["subtask"], rec["budget"], rec["model"])


def lr_role(rec: dict[str, Any]) -> str:
    return (rec.get("learning_rate") or {}).get("role", "fixed")


def record_lr(rec: dict[str, Any]) -> float | None:
    lr = (rec.get("learning_rate") or {}).get("lr")
    if lr is None:
        lr = ((rec.get("config") or {}).get("train") or {}).get("lr")
    return float(lr) if lr is not None else None


def validation_rank(rec: dict[str, Any]) -> tuple[float, float]:
    """Larger is better; a cell that did not finish ok ranks last."""
    val = (rec.get("metrics") or {}).get("val") or {}
    if rec.get("status") != "ok" or not val:
        return (-math.inf, -math.inf)
    metric = (rec.get("protocol") or {}).get("selection_metric") or headline_metric(val)
    return selection_key(metric, val) if metric else (-math.inf, -math.inf)


def selection_value(rec: dict[str, Any]) -> float | None:
    """The validation value the choice was made on (None for a cell that did not finish)."""
    rank = validation_rank(rec)[0]
    if not math.isfinite(rank):
        return None
    val = rec["metrics"]["val"]
    metric = (rec.get("protocol") or {}).get("selection_metric") or headline_metric(val)
    return float(val[metric])


def chosen_rates(records: Iterable[dict[str, Any]]) -> dict[GridKey, float]:
    """Per grid (run, task, subtask, budget, model): the rate of the best validation result
    among its grid cells that finished ok. Grids where none finished ok are absent. Ties keep
    the smaller rate (the more conservative choice)."""
    best: dict[GridKey, tuple[tuple[float, float], float]] = {}
    for rec in records:
        if lr_role(rec) != "grid":
            continue
        rank, lr = validation_rank(rec), record_lr(rec)
        if not math.isfinite(rank[0]) or lr is None:
            continue
        key = grid_key(rec)
        if key not in best or rank > best[key][0] or (rank == best[key][0] and lr < best[key][1]):
            best[key] = (rank, lr)
    return {key: lr for key, (_, lr) in best.items()}


def grid_results(records: Iterable[dict[str, Any]], key: GridKey) -> dict[str, float | None]:
    """{rate: validation value} of one grid's cells, for the record of a later seed."""
    return {f"{record_lr(r):g}": selection_value(r) for r in records
            if lr_role(r) == "grid" and grid_key(r) == key}


def at_chosen_rates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that count as results: every non-grid record, and of each grid the cell at
    its chosen rate (one seed); of a grid where no rate finished ok, its first cell, so that the
    failure shows. The other grid cells stay in records.jsonl as the evidence of the choice."""
    chosen = chosen_rates(records)
    kept, failed_grids = [], set()
    for r in records:
        key = grid_key(r)
        if lr_role(r) != "grid" or chosen.get(key) == record_lr(r):
            kept.append(r)
        elif key not in chosen and key not in failed_grids:  # no rate finished: show one failure
            failed_grids.add(key)
            kept.append(r)
    return kept


def at_chosen_fixed_rates(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Fixed-rate records of one (task, subtask, budget, model) at several rates, as probes
    run one rate per folder leave them, chosen among as a grid is: the rate whose record on the
    lowest seed that every rate has ranks best on validation (ties: the smaller rate); the
    records at the other rates are left out, with a note. Where the rates share no seed there is
    no like-for-like choice and every record is kept (`compare` flags the row: "seeds trained at
    different rates"). Returns (kept records, notes)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        if lr_role(rec) == "fixed" and record_lr(rec) is not None:
            key = (rec["task"], rec["subtask"], rec["budget"], rec["model"])
            groups.setdefault(key, []).append(rec)
    left_out: set[int] = set()
    notes = []
    for key, group in groups.items():
        seeds_at = {}
        for rec in group:
            seeds_at.setdefault(record_lr(rec), set()).add(rec["seed"])
        shared = set.intersection(*seeds_at.values())
        if len(seeds_at) < 2 or not shared:
            continue
        seed = min(shared)

        def rank(lr: float) -> tuple[tuple[float, float], float]:
            at_seed = [r for r in group if record_lr(r) == lr and r["seed"] == seed]
            return max(validation_rank(r) for r in at_seed), -lr

        chosen = max(seeds_at, key=rank)
        left_out |= {id(r) for r in group if record_lr(r) != chosen}
        rates = ", ".join(f"{lr:g}" for lr in sorted(seeds_at))
        notes.append(f"{key[0]}/{key[1]} ({key[2]}) {key[3]}: fixed-rate runs at {rates}; "
                     f"{chosen:g} counted, chosen on seed {seed}'s validation as a grid chooses")
    return [r for r in records if id(r) not in left_out], notes


def incomplete_grids(records: list[dict[str, Any]]) -> list[str]:
    """A line per grid that has not tried every rate yet (an interrupted run): its row is the
    best rate so far, not the chosen one."""
    tried: dict[GridKey, set[float]] = {}
    planned: dict[GridKey, list[float]] = {}
    for rec in records:
        if lr_role(rec) == "grid":
            key = grid_key(rec)
            tried.setdefault(key, set()).add(record_lr(rec))
            planned[key] = [float(r) for r in rec["learning_rate"]["grid"]]
    return [f"{key[1]}/{key[2]} ({key[3]}) {key[4]}: learning-rate grid incomplete, "
            f"{len(tried[key])} of {len(planned[key])} rates tried: its row is the best so far, "
            "not the chosen rate" for key in planned if len(tried[key]) < len(planned[key])]
