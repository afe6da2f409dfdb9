"""What BiMix's gates look like: record extras, static gate-map heatmaps, per-token gates.

gate_record(mixer)              JSON-able facts of one layer for the result record
render_static_gate_maps(...)    one PNG: layers x (head, branch x band) heatmaps of G
render_token_gates(...)         one PNG: per-token gates of every layer over a text, with its
                                structural boundaries (metrics/boundaries.py) marked
routing_measures(...)           how much the per-token gates move, at boundaries and elsewhere
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from bimix_bench.bimix.gate_solver import piecewise_segments, total_variation
from bimix_bench.metrics.boundaries import token_boundaries
from bimix_bench.models.tokenizer import SEP, encode

if TYPE_CHECKING:  # pragma: no cover
    from bimix_bench.bimix.mixer import BiMixMixer
    from bimix_bench.models.backbone import LanguageModel

PIECE_TOL = 1e-6  # fused gates of the exact prox are equal to the last bit; this is slack
BOUNDARY_STYLES = {  # kind -> (colour, line style)
    "blank_line": ("magenta", "--"),
    "def_class": ("red", "-"),
    "file_start": ("black", "-"),
    "boundary": ("red", ":"),
}


def gate_record(mixer: "BiMixMixer") -> dict[str, Any]:
    """Static gate map G (H x R x NB nested lists, R = branches in `branches` order), its total
    variation and number of constant pieces per (head, branch), its range, the schedule's phase,
    alpha, lambda, the gate step's travel and the ablation, and the learned DCT half-lives."""
    gates = mixer.gates
    g = gates.static_map().detach().float().cpu()  # (H, R, NB)
    record: dict[str, Any] = {
        "branches": list(mixer.settings.branches),
        "gate_map": g.tolist(),
        "gate_tv": total_variation(g).tolist(),
        "gate_pieces": piecewise_segments(g, PIECE_TOL).tolist(),
        "phase": gates.current_phase,
        "distill_alpha": gates.current_alpha,
        "tv_lambda": mixer.settings.tv_lambda,
        "gate_travel": mixer.settings.gate_travel,
        "gate_range": [float(g.min()), float(g.max())],
        "ablation": mixer.settings.ablation,
    }
    if mixer.dct_log_rate is not None:
        log_rho = mixer.log_rho().detach().double().cpu()
        record["dct_half_lives"] = (torch.log(torch.tensor(0.5, dtype=torch.float64)) / log_rho).tolist()
    return record


def _layer_map(entry: Any) -> tuple[torch.Tensor, list[str], str]:
    """A gate_record dict or a nested H x R x NB list -> (map, branch names, title suffix)."""
    if isinstance(entry, Mapping):
        g = torch.as_tensor(entry["gate_map"], dtype=torch.float32)
        names = list(entry.get("branches") or ["dct", "cheb"][: g.shape[1]])
        suffix = f" (phase {entry['phase']})" if "phase" in entry else ""
        return g, names, suffix
    g = torch.as_tensor(entry, dtype=torch.float32)
    return g, ["dct", "cheb"][: g.shape[1]], ""


def render_static_gate_maps(gate_maps: Sequence[Any], out_path: str | Path) -> Path:
    """One figure, one heatmap per layer: heads down, (branch, band) across, gates in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not gate_maps:
        raise ValueError("no gate maps to draw")
    layers = [_layer_map(entry) for entry in gate_maps]
    H, R, NB = layers[0][0].shape
    fig, axes = plt.subplots(
        len(layers), 1, figsize=(2.0 + 0.6 * R * NB, 0.6 + (0.35 * H + 1.1) * len(layers)),
        squeeze=False, layout="constrained",
    )
    image = None
    for i, (ax, (g, names, suffix)) in enumerate(zip(axes[:, 0], layers)):
        flat = g.reshape(g.shape[0], -1).numpy()
        image = ax.imshow(flat, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(flat.shape[1]))
        ax.set_xticklabels([f"{n} b{b}" for n in names for b in range(g.shape[2])], rotation=60, fontsize=7)
        ax.set_yticks(range(g.shape[0]))
        ax.set_yticklabels([f"head {h}" for h in range(g.shape[0])], fontsize=7)
        for r in range(1, len(names)):
            ax.axvline(r * g.shape[2] - 0.5, color="white", linewidth=2)
        if flat.size <= 256:
            for h in range(flat.shape[0]):
                for c in range(flat.shape[1]):
                    value = float(flat[h, c])
                    ax.text(c, h, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if value > 0.6 else "white")
        ax.set_title(f"layer {i}: static gate map G{suffix}", fontsize=9)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.04, label="gate")
    return _save(fig, out_path)


def boundary_marks(
    ids: Sequence[int], boundaries: Mapping[str, Sequence[int]] | Sequence[int] | None
) -> dict[str, list[int]]:
    """kind -> positions: detected (None), given per kind (a mapping), or one kind (positions)."""
    if boundaries is None:
        return token_boundaries(ids)
    if isinstance(boundaries, Mapping):
        return {k: list(v) for k, v in boundaries.items()}
    return {"boundary": list(boundaries)}


def _token_ids(text: str | Sequence[str]) -> list[int]:
    """A string, or a sequence of documents joined with SEP."""
    if isinstance(text, str):
        return encode(text)
    ids: list[int] = []
    for i, doc in enumerate(text):
        ids += ([SEP] if i else []) + encode(doc)
    return ids


@torch.no_grad()
def capture_token_gates(model: "LanguageModel", ids: Sequence[int]) -> list[torch.Tensor]:
    """Run the model on ids and return each BiMix layer's gates, (T, H, R, NB) on the CPU."""
    mixers = [m for m in model.mixers if hasattr(m, "capture_gates")]
    if not mixers:
        raise ValueError("the model has no BiMix mixers")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for m in mixers:
            m.capture_gates = True
        model(torch.tensor([list(ids)], device=device))
        return [m.gates.last_gates[0] for m in mixers]
    finally:
        for m in mixers:
            m.capture_gates = False
            m.gates.last_gates = None
        model.train(was_training)


def render_token_gates(
    model: "LanguageModel",
    text: str | Sequence[str],
    out_path: str | Path,
    boundaries: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
) -> Path:
    """Per-token gates of every BiMix layer over `text` (a string, or documents joined with
    SEP), cut to the model's context. Rows: (head, branch, band); columns: token positions.
    Boundaries: None = token_boundaries(text); a mapping kind -> positions; or positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = _token_ids(text)[: model.arch.max_seq_len]
    if not ids:
        raise ValueError("empty text")
    marks = boundary_marks(ids, boundaries)
    per_layer = capture_token_gates(model, ids)
    branch_names = list(model.mixers[0].settings.branches)
    T, H, R, NB = per_layer[0].shape
    fig, axes = plt.subplots(
        2 * len(per_layer), 1,
        figsize=(min(24.0, 5 + T / 40), 1.0 + len(per_layer) * (2.6 + 0.08 * H * R * NB)),
        squeeze=False, sharex=True, layout="constrained",
        gridspec_kw={"height_ratios": [1, 3] * len(per_layer)},
    )
    image = None
    for layer, gates in enumerate(per_layer):
        ax_mean, ax_map = axes[2 * layer, 0], axes[2 * layer + 1, 0]
        for r, name in enumerate(branch_names):  # mean over heads and bands: a branch's share
            ax_mean.plot(gates[:, :, r].mean(dim=(1, 2)).numpy(), label=f"{name} (mean gate)")
        ax_mean.set_xlim(-0.5, T - 0.5)
        ax_mean.set_ylim(0, 1)
        ax_mean.legend(fontsize=7, loc="upper right")
        ax_mean.set_title(f"layer {layer}: per-token band gates", fontsize=9)
        rows = gates.reshape(T, H * R * NB).T.numpy()  # (H*R*NB, T)
        image = ax_map.imshow(
            rows, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest"
        )
        ax_map.set_yticks([h * R * NB + r * NB for h in range(H) for r in range(R)])
        ax_map.set_yticklabels([f"h{h} {n}" for h in range(H) for n in branch_names], fontsize=6)
        ax_map.set_ylabel(f"(head, branch): bands 0..{NB - 1} downwards", fontsize=7)
        ax_map.set_xlabel("token position", fontsize=8)
        ax_map.tick_params(labelbottom=True)
        for ax in (ax_mean, ax_map):
            for kind, positions in marks.items():
                colour, style = BOUNDARY_STYLES.get(kind, ("red", ":"))
                for j, pos in enumerate(p for p in positions if 0 <= p < T):
                    ax.axvline(pos, color=colour, linestyle=style, linewidth=0.8,
                               label=kind if (ax is ax_map and j == 0) else None)
        if any(0 <= p < T for positions in marks.values() for p in positions):
            ax_map.legend(fontsize=7, loc="upper right", framealpha=0.6)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, label="gate")
    return _save(fig, out_path)


def routing_measures(gates: torch.Tensor, boundaries: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """How one layer's per-token gates (T, H, R, NB) move along the sequence. The change at
    position t is mean |g_t - g_{t-1}| over heads, branches and bands; reported: its mean over
    the sequence (token_variation), at the positions where a structural boundary starts and
    elsewhere, and their ratio (boundary_ratio > 1: the gates move more at boundaries)."""
    T = gates.shape[0]
    change = (gates[1:] - gates[:-1]).abs().float().mean(dim=(1, 2, 3))  # (T - 1,): into t = 1..
    at = sorted({p for positions in boundaries.values() for p in positions if 1 <= p < T})
    mask = torch.zeros(max(T - 1, 0), dtype=torch.bool)
    mask[[p - 1 for p in at]] = True
    out: dict[str, Any] = {
        "token_variation": float(change.mean()) if T > 1 else 0.0,
        "gate_spread": float(gates.float().std()) if gates.numel() > 1 else 0.0,
        "n_boundaries": len(at),
        "boundary_change": float(change[mask].mean()) if at else None,
        "elsewhere_change": float(change[~mask].mean()) if (~mask).any() else None,
    }
    ratio_ok = out["boundary_change"] is not None and out["elsewhere_change"]
    out["boundary_ratio"] = out["boundary_change"] / out["elsewhere_change"] if ratio_ok else None
    return out


def gate_probe(model: "LanguageModel", ids: list[int]) -> dict[str, Any]:
    """routing_measures of every BiMix layer over one sequence, with its boundaries."""
    ids = list(ids)[: model.arch.max_seq_len]
    marks = token_boundaries(ids)
    layers = [routing_measures(g, marks) for g in capture_token_gates(model, ids)]
    return {"tokens": len(ids), "boundaries": {k: len(v) for k, v in marks.items()},
            "layers": layers}


def _save(fig: Any, out_path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
