"""Which of a job folder's resumable files fit into its returned archive (scripts/gpu/run_queue.sh):
  python3 scripts/gpu/returned_files.py FOLDER [LIMIT_BYTES]   (run from the folder's parent)
prints their paths, one per line. Parked cells first (engine/pending.py: trained, waiting to be
timed alone; a record and its weights travel together or not at all), then the training states
of cells cut off mid-way, smallest first, while the total stays within LIMIT_BYTES (default
14 MB: a returned file holds at most 16 MiB). What does not fit is counted on stderr."""

from __future__ import annotations

import sys
from pathlib import Path


def candidates(folder: Path) -> list[list[Path]]:
    """Groups of files that travel together, in the order they are taken."""
    parked = [[record, *[w for w in [record.with_suffix(".pt")] if w.is_file()]]
              for record in sorted(folder.glob("**/pending/*.json"))]
    states = sorted(([state] for state in folder.glob("**/state/*") if state.is_file()),
                    key=lambda group: group[0].stat().st_size)
    return parked + states


def main(folder: str, limit: int = 14 * 1024 * 1024) -> None:
    left = 0
    for group in candidates(Path(folder)):
        size = sum(path.stat().st_size for path in group)
        if size <= limit:
            limit -= size
            print("\n".join(str(path) for path in group))
        else:
            left += 1
    if left:
        print(f"{left} parked cells or training states left behind (too large to return)",
              file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:3]))
