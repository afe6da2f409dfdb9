"""Choosing the throughput reference for this machine from a folder of them.

The calibration divides out what slows a whole machine, but not how one CPU model favours one
model's operations over another's: on the same code, an Intel Xeon read the Transformer's CPU
figures 13-29% higher and Mamba-2's 9-14% lower than the AMD EPYC the first reference was
measured on (results/ci/README.md). So the gate keeps one reference per CPU model and checks
against the one measured on the CPU it runs on.
"""

from __future__ import annotations

from pathlib import Path

from bimix_bench.errors import UsageError


def choose_reference(path: Path) -> tuple[Path, str | None]:
    """(the reference document to check against, a note when it is not a same-CPU match).

    A file is used as given. In a folder, the speed documents are searched for one of this
    machine's device class (GPU name, or CPU architecture and thread count) measured on this
    CPU model; failing that, the first of the same class is taken, with a note; failing that,
    the first document, which `check` then refuses as another device class."""
    from bimix_bench.speed.document import is_speed_document, read_document

    path = Path(path)
    if not path.is_dir():
        return path, None
    candidates = [(p, read_document(p, "reference")) for p in sorted(path.glob("*.json"))
                  if is_speed_document(p)]
    if not candidates:
        raise UsageError(f"no speed documents in the reference folder {path}")
    same_class = [(p, doc) for p, doc in candidates if doc["device"]["class"] == _local_class(doc)]
    for p, doc in same_class:
        if doc["device"].get("name") == _local_name(doc):
            return p, None
    if same_class:
        p, doc = same_class[0]
        return p, (f"no reference in {path} was measured on this machine's {_local_name(doc)!r}; "
                   f"checking against {p.name} ({doc['device'].get('name')}), where figures of "
                   "different CPU models can differ beyond the tolerance")
    return candidates[0][0], None


def _local_class(doc: dict) -> str:
    import torch

    from bimix_bench.speed.document import device_class

    if doc["device"]["type"] == "cuda":
        return device_class(torch.device("cuda")) if torch.cuda.is_available() else "no CUDA"
    return device_class(torch.device("cpu"), doc["device"].get("threads"))


def _local_name(doc: dict) -> str | None:
    """This machine's name in the form speed documents record it (sweep.py)."""
    import torch

    from bimix_bench.env import cpu_model

    if doc["device"]["type"] == "cuda":
        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return cpu_model()
