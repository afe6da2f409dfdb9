"""Records a machine made in an earlier call, put back into a job folder that lacks them
(scripts/gpu/run_queue.sh calls it around each `run` and `side` job):
  python3 scripts/gpu/kept_records.py keep FOLDER KEPT      after a job: copy FOLDER's records
  python3 scripts/gpu/kept_records.py restore FOLDER KEPT   before a job: append the kept ones
                                                            FOLDER lacks
Each call copies the working tree onto the machine, and a committed job folder then replaces
the one the machine had. When the archive of the last call was not unpacked before the next,
the records that call made are gone from the folder, and `run --resume` would train their cells
again. KEPT (.queue_kept/NAME, ignored by git, so it stays on a machine between calls) holds a
copy of every records.jsonl of the job folder as the last job left it; restoring appends each
kept record line the folder's file does not have, in order, and says how many. Only into a run
folder that is there (its config.yaml): a job whose folder is gone starts afresh."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def keep(folder: Path, kept: Path) -> None:
    for records in folder.rglob("records.jsonl"):
        target = kept / records.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(records, target)


def restore(folder: Path, kept: Path) -> int:
    restored = 0
    for saved in kept.rglob("records.jsonl") if kept.is_dir() else []:
        target = folder / saved.relative_to(kept)
        if not (target.parent / "config.yaml").is_file():
            continue
        have = set(target.read_text().splitlines()) if target.is_file() else set()
        missing = [line for line in saved.read_text().splitlines()
                   if line.strip() and line not in have]
        if missing:
            with target.open("a") as out:
                out.write("".join(line + "\n" for line in missing))
            restored += len(missing)
    return restored


def main(action: str, folder: str, kept: str) -> None:
    if action == "keep":
        keep(Path(folder), Path(kept))
    elif action == "restore":
        n = restore(Path(folder), Path(kept))
        if n:
            print(f"{folder}: restored {n} records an earlier call made here (its archive was "
                  "not unpacked before this call)")
    else:
        print(f"error: unknown action {action!r}; valid: keep, restore", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: kept_records.py keep|restore FOLDER KEPT", file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:4])
