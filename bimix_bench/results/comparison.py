"""The `compare` table: models x tasks with quality (mean +- 95% CI over seeds), speeds and
parameters, each also relative to the Transformer of the same (task, subtask, budget), and flags
wherever a comparison is not like for like.

Relative figures: speeds and parameters as ratios ("1.8x" = 1.8 times the Transformer's); the
headline metric as a difference in its own units (+0.031 accuracy, -0.05 bits per byte), since
ratios of accuracies or of bits per byte read poorly.

Flags (per row, and table-wide notes):
  - runs that did not finish ok (failed / skipped / diverged / oom), or no seed that did;
  - non-embedding parameters more than 5% away from the Transformer's (or, without a
    Transformer, from the group's median);
  - kernels of different kinds in one group: a fused GPU kernel against a torch reference
    path, or CPU figures against GPU figures (speeds are then not comparable);
  - seeds trained at different fixed rates that share no seed, pooled as one cell (where
    they share one, validation chooses among them: lr_selection.at_chosen_fixed_rates);
  - different budgets in one table, and groups without a Transformer to relate to.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bimix_bench.results.tables import aggregate, counted_records, records_frame
from bimix_bench.results.verdicts import mark_chance, test_counts

BASELINE = "transformer"
PARAM_MISMATCH = 0.05
KEY = ["task", "subtask", "budget"]

# Backend names (or the parts of a composite such as "dct=fla,cheb=triton") that are fused GPU
# kernels; everything else is torch code. "sdpa" on a GPU dispatches to fused kernels, but
# "sdpa-math" is torch's unfused fallback.
_FUSED = ("fla", "triton", "mamba_ssm", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient",
          "cuda", "cublas")

RELATIVE = {
    "train_tokens_per_s": "train_vs_transformer",
    "inference_tokens_per_s": "inference_vs_transformer",
    "decode_tokens_per_s": "decode_vs_transformer",
    "params_non_embedding": "params_vs_transformer",
}
COMPARE_COLUMNS = [
    "task", "subtask", "budget", "model", "metric", "direction", "n_seeds", "n_ok", "mean",
    "std", "ci95", "lr", "chance", "chance_basis", "above_chance", "informative",
    "quality_vs_transformer", "train_tokens_per_s", "train_vs_transformer",
    "inference_tokens_per_s", "inference_vs_transformer", "decode_tokens_per_s",
    "decode_vs_transformer", "params_non_embedding", "params_vs_transformer", "peak_memory_bytes",
    "context", "backend", "backend_kind", "device", "processor", "not_ok", "flags",
]
# The relative speeds (RELATIVE less parameters): left out where a model's speeds come from
# another processor than the Transformer's (a ratio across machines measures the machines).
_SPEED_RATIOS = tuple(rel for column, rel in RELATIVE.items() if column.endswith("_tokens_per_s"))


def record_device(rec: dict) -> str | None:
    """"cpu" or "cuda": where a record's speeds were measured. Throughput methods name the CPU
    when it was one ("...; CPU, 2 torch threads, ..."); otherwise the environment says whether
    the run had CUDA."""
    for fig in (rec.get("throughput") or {}).values():
        text = f"{(fig or {}).get('method') or ''} {(fig or {}).get('backend') or ''}".lower()
        if "cpu" in text:
            return "cpu"
    return (rec.get("environment") or {}).get("device_type")


def record_processor(rec: dict) -> str | None:
    """The processor a record's speeds came from, as its environment names it ("AMD EPYC",
    "NVIDIA H100 80GB HBM3", ...); None for records that do not say."""
    env = rec.get("environment") or {}
    names = sorted({d for d in env.get("devices") or [] if isinstance(d, str) and d})
    return ", ".join(names) or env.get("cpu") or None


def same_processor(a: Any, b: Any) -> bool:
    """Whether speeds measured on processors `a` and `b` (record_processor's names, or their
    "; "-joined sets) may be related; a side that does not say counts as the same."""
    return not (isinstance(a, str) and a and isinstance(b, str) and b) or a == b


def backend_kind(backend: str | None, device: str | None) -> str:
    """"cpu", "gpu-fused", "gpu-torch" or "gpu-mixed" (some parts fused, some torch)."""
    if device == "cpu":
        return "cpu"
    if not backend:
        return "unknown"
    parts = {p.split("=", 1)[-1].strip() for p in backend.replace(";", ",").split(",") if p.strip()}
    fused = {p in _FUSED for p in parts}
    where = "gpu" if device == "cuda" else "unknown-device"
    if fused == {True}:
        return f"{where}-fused"
    if fused == {False}:
        return f"{where}-torch"
    return f"{where}-mixed"


def _per_group_facts(records: list[dict]) -> pd.DataFrame:
    """Per (task, subtask, budget, model): median parameters and context over ok seeds, the
    devices and backend kinds its records ran on."""
    rows = []
    for rec in records:
        device = record_device(rec)
        backend = (rec.get("backends") or {}).get("mixer") or next(
            (f["backend"] for f in (rec.get("throughput") or {}).values() if f and f.get("backend")), None)
        rows.append({
            "task": rec["task"], "subtask": rec["subtask"], "budget": rec["budget"],
            "model": rec["model"], "ok": rec["status"] == "ok",
            "params": (rec.get("params") or {}).get("non_embedding"),
            "context": (rec.get("arch") or {}).get("max_seq_len"),
            "device": device, "processor": record_processor(rec),
            "kind": backend_kind(backend, device) if rec["status"] == "ok" else None,
        })
    frame = pd.DataFrame(rows)
    out = []
    for key, group in frame.groupby(KEY + ["model"], sort=False, dropna=False):
        ok = group[group["ok"]]
        use = ok if len(ok) else group
        out.append({
            **dict(zip(KEY + ["model"], key)),
            "params_non_embedding": _median(use["params"]),
            "context": _median(use["context"]),
            "device": ", ".join(sorted({d for d in use["device"] if isinstance(d, str)})),
            "processor": "; ".join(sorted({p for p in use["processor"] if isinstance(p, str)})),
            "backend_kind": ", ".join(sorted({k for k in ok["kind"] if isinstance(k, str)})),
        })
    return pd.DataFrame(out)


def comparison_frame(records: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """(one row per task x subtask x budget x model with COMPARE_COLUMNS, table-wide notes)."""
    summary = aggregate(records_frame(records))
    if summary.empty:
        return pd.DataFrame(columns=COMPARE_COLUMNS), ["no records"]
    counted, notes = counted_records(records)
    # The row's facts come from the records its figures come from (not from a grid's other
    # rates, or an earlier record of a seed that was run again).
    table = summary.merge(_per_group_facts(counted), on=KEY + ["model"], how="left")
    for column in RELATIVE.values():
        table[column] = math.nan
    table["quality_vs_transformer"] = math.nan
    table["flags"] = ""

    for _, index in table.groupby(KEY, sort=False, dropna=False).groups.items():
        group = table.loc[index]
        base = group[group["model"] == BASELINE]
        name = "/".join(str(v) for v in group.iloc[0][["task", "subtask", "budget"]] if v)
        if base.empty:
            notes.append(f"{name}: no {BASELINE} to relate to; parameters checked against the "
                         "group median")
        else:
            b = base.iloc[0]
            for column, rel in RELATIVE.items():
                table.loc[index, rel] = group[column] / b[column] if b[column] else math.nan
            apart = [i for i in index
                     if not same_processor(table.at[i, "processor"], b["processor"])]
            table.loc[apart, list(_SPEED_RATIOS)] = math.nan
            table.loc[index, "quality_vs_transformer"] = group["mean"] - b["mean"]
        _flag_group(table, index, base)
    table = mark_chance(table, records, test_counts(records))
    for i in table.index[table["informative"] == False]:  # noqa: E712 (None = no chance level)
        flag = f"uninformative: no model beats chance ({table.at[i, 'chance']:.4g})"
        table.at[i, "flags"] = "; ".join(f for f in (table.at[i, "flags"], flag) if f)

    budgets = sorted({str(b) for b in table["budget"]})
    if len(budgets) > 1:
        notes.append(f"budgets differ in this table ({', '.join(budgets)}): compare rows within "
                     "one budget only")
    devices = sorted({d for v in table["device"] if isinstance(v, str) for d in v.split(", ") if d})
    if len(devices) > 1:
        notes.append(f"speeds were measured on different devices ({', '.join(devices)})")
    return table[COMPARE_COLUMNS].reset_index(drop=True), notes


def _flag_group(table: pd.DataFrame, index, base: pd.DataFrame) -> None:
    group = table.loc[index]
    if base.empty:
        ref_params, ref_name = _median(group["params_non_embedding"]), "the group median"
    else:
        ref_params, ref_name = base.iloc[0]["params_non_embedding"], BASELINE
    kinds = {k for v in group["backend_kind"] if isinstance(v, str) and v for k in v.split(", ")}
    ref_kind = base.iloc[0]["backend_kind"] if not base.empty else None
    ref_processor = base.iloc[0]["processor"] if not base.empty else None
    for i in index:
        row, flags = table.loc[i], []
        if row["not_ok"]:
            flags.append(f"not ok: {row['not_ok']}")
        if row["n_ok"] == 0:
            flags.append("no seed finished ok")
        p = row["params_non_embedding"]
        if _number(p) and _number(ref_params) and ref_params > 0:
            off = p / ref_params - 1.0
            if abs(off) > PARAM_MISMATCH:
                flags.append(f"params {off:+.1%} vs {ref_name}")
        rates = row.get("lr")
        if isinstance(rates, str) and ", " in rates:
            # Fixed-rate runs of one protocol at different rates (probes, say) are pooled as
            # seeds of one cell; the row is then no model's result at one rate.
            flags.append(f"seeds trained at different rates ({rates}): not one cell")
        own = row["backend_kind"] if isinstance(row["backend_kind"], str) else ""
        if ", " in own:
            flags.append(f"seeds ran on different kernel kinds ({own})")
        elif len(kinds) > 1 and own and own != ref_kind:
            # Against the Transformer's kind where there is one, else against the others.
            other = f"{ref_kind} ({BASELINE})" if ref_kind else ", ".join(sorted(kinds - {own}))
            flags.append(f"kernels not like for like: {own} ({row['backend']}) vs {other}")
        if not same_processor(row["processor"], ref_processor):
            flags.append(f"speeds from another processor ({row['processor']}) than "
                         f"{BASELINE}'s ({ref_processor}): no speed ratio")
        table.at[i, "flags"] = "; ".join(flags)


def _median(column: pd.Series) -> float:
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


# ---------------------------------------------------------------------------------------------
# Display


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: "0.612 ± 0.021 (n=3)", "12,345 (1.8x)", flags joined."""
    rows = []
    for _, r in table.iterrows():
        is_base = r["model"] == BASELINE
        rows.append({
            "task": f"{r['task']}/{r['subtask']}" if r["subtask"] else r["task"],
            "budget": r["budget"],
            "model": r["model"],
            "metric": r["metric"] if isinstance(r["metric"], str) else "-",
            "quality": _quality(r),
            "lr": r["lr"] or "-",
            "vs chance": _vs_chance(r),
            f"Δ vs {BASELINE}": "" if is_base else _signed(r["quality_vs_transformer"]),
            "train tok/s": _with_ratio(r["train_tokens_per_s"], r["train_vs_transformer"], is_base),
            "infer tok/s": _with_ratio(r["inference_tokens_per_s"], r["inference_vs_transformer"], is_base),
            "decode tok/s": _with_ratio(r["decode_tokens_per_s"], r["decode_vs_transformer"], is_base),
            "params": _with_ratio(r["params_non_embedding"], r["params_vs_transformer"], is_base),
            "backend": f"{r['backend']} [{r['backend_kind']}]" if r["backend"] else "-",
            "flags": r["flags"] or "",
        })
    return pd.DataFrame(rows)


def terminal_view(table: pd.DataFrame, shown: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """What a terminal shows: the rows of cells that produced a number, without the flags
    column; and below it, one line per flag (a flag that every model of a cell shares is said
    once for the cell; a cell is one task at one budget, named with its budget where the table
    has several) and one line that counts the rows left out (skipped or failed cells)."""
    ran = table["n_ok"] > 0
    lines: list[str] = []
    several_budgets = shown[ran.values]["budget"].nunique() > 1
    for (task, budget), group in shown[ran.values].groupby(["task", "budget"], sort=False):
        name = f"{task} at {budget}" if several_budgets else task
        per_row = [(row["model"], [f for f in row["flags"].split("; ") if f]) for _, row in group.iterrows()]
        shared = set.intersection(*(set(flags) for _, flags in per_row)) if len(per_row) > 1 else set()
        lines += [f"{name}: {flag}" for flag in sorted(shared)]
        lines += [f"{name} {model}: {flag}" for model, flags in per_row for flag in flags
                  if flag not in shared]
    left_out = shown[~ran.values]
    if len(left_out):
        reasons = sorted({str(r) for r in table.loc[~ran, "not_ok"] if r})
        cells = sorted(set(left_out["task"]))
        lines.append(f"{len(left_out)} rows without a result ({', '.join(reasons) or 'no records ok'}) "
                     f"left out here: {', '.join(cells)} (--markdown, --csv, --json keep them)")
    return shown[ran.values].drop(columns=["flags"]), lines


def _quality(r: pd.Series) -> str:
    if not _number(r["mean"]):
        return f"- (n={int(r['n_ok'])})"
    ci = f" ± {r['ci95']:.2g}" if _number(r["ci95"]) else ""
    return f"{r['mean']:.4g}{ci} (n={int(r['n_ok'])})"


def _vs_chance(r: pd.Series) -> str:
    if r["above_chance"] is None or not _number(r["chance"]):
        return "-"
    return f"{'above' if r['above_chance'] else 'AT'} {r['chance']:.3g}"


def _signed(value: float) -> str:
    return f"{value:+.3g}" if _number(value) else "-"


def _with_ratio(value: float, ratio: float, is_base: bool) -> str:
    if not _number(value):
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if _number(ratio) and not is_base:
        text += f" ({ratio:.2f}x)"
    return text


def json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with NaN as None (strict JSON)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else
                 v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]
