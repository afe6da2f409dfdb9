"""scripts/bench_mixers_gpu.py: importing it runs nothing, and --dry-run times every default
mixer (tiny shapes, CPU) and writes the JSON it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_mixers_gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_mixers_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # import-safe: defines functions only
    return module


def test_dry_run_times_every_model_and_writes_json(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "bench.json"
    rows = bench.main(["--dry-run", "--models", "transformer,linear_attn,gla,mamba2,no_such_model",
                       "--option", "gla.backend=recurrent", "--out", str(out)])
    table = capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["results"] == json.loads(json.dumps(rows, default=str))
    timed = [r for r in rows if r["status"] == "ok"]
    # 4 models x 2 sequence lengths x (fwd, fwd+bwd)
    assert {(r["model"], r["T"], r["mode"]) for r in timed} == {
        (m, t, mode) for m in ("transformer", "linear_attn", "gla", "mamba2")
        for t in (16, 32) for mode in ("fwd", "fwd+bwd")
    }
    assert all(r["ms"] > 0 and r["B"] * r["T"] == 64 for r in timed)
    assert {r["backend"] for r in timed if r["model"] == "gla"} == {"recurrent"}
    assert {r["backend"] for r in timed if r["model"] == "mamba2"} == {"chunked"}
    assert [r["status"] for r in rows if r["model"] == "no_such_model"][0].startswith("error")
    assert "| linear_attn | 32 |" in table
