"""How stable are a speed document's figures from round to round, on each basis `check` could
judge them on? Prints, per model and kind, the spread of the raw call times, of the calibration
stretches and of the ratios, and how far apart the fastest (and the median) rounds of
consecutive groups of rounds are: what two shorter measurements of the same code would
disagree by.

    python3 scripts/round_spread.py results/gpu/speed_reference_trial/chunk512_15rounds.json
"""

from __future__ import annotations

import argparse
import json
import statistics


def spread(values: list[float]) -> float:
    """(max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values)


def group_gap(values: list[float], size: int, pick) -> float:
    """Relative distance between the largest and smallest of `pick(group)` over consecutive
    groups of `size` rounds."""
    picked = [pick(values[i:i + size]) for i in range(0, len(values) - size + 1, size)]
    return (max(picked) - min(picked)) / min(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", help="speed document (JSON) with seconds_samples")
    parser.add_argument("--group", type=int, default=5, help="rounds per group (default 5)")
    args = parser.parse_args()
    doc = json.load(open(args.document))
    print(f"{doc['device']['class']}, {doc['settings']['repeats']} rounds, groups of {args.group}")
    header = ("model", "ctx", "kind", "raw spread", "cal spread", "ratio spread",
              "fastest-round gap", "median-round gap", "median-ratio gap")
    print(" | ".join(header))
    for model, entry in doc["models"].items():
        for cell in entry["cells"]:
            for kind, fig in (cell.get("figures") or {}).items():
                raw = fig.get("seconds_samples")
                if not raw:
                    continue
                cal, ratios = fig["calibration_seconds_samples"], fig["ratio_samples"]
                row = (spread(raw), spread(cal), spread(ratios),
                       group_gap(raw, args.group, min), group_gap(raw, args.group, statistics.median),
                       group_gap(ratios, args.group, statistics.median))
                print(" | ".join([model, str(cell["context"]), kind] + [f"{v:.1%}" for v in row]))


if __name__ == "__main__":
    main()
