"""The shell scripts that carry the small-budget sweep across time-limited GPU calls:
run_queue.sh (jobs, done markers, packing), unpack_returned.sh (archives back into a checkout,
never replacing more records with fewer) and triton_cache.sh (kernels from one machine to the
next). Each runs in a scratch copy of scripts/gpu, so the checkout's runs/ is never touched."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                                reason="needs bash and tar")


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copytree(SCRIPTS, root / "scripts" / "gpu")
    return root


def bash(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(["bash", *args], cwd=root, env=full_env, capture_output=True, text=True,
                          timeout=120)


def unpacked_elsewhere(tmp_path: Path, queue: Path,
                       returned: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh checkout, as the next machine has one, with `returned` unpacked into it."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "scripts").mkdir(parents=True)
    shutil.copytree(SCRIPTS, elsewhere / "scripts" / "gpu")
    shutil.copy(queue, elsewhere / "q.queue")
    return elsewhere, bash(elsewhere, "scripts/gpu/unpack_returned.sh", "q.queue", str(returned))


def write_records(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'{{"cell": {i}}}\n' for i in range(n)))


def test_queue_runs_jobs_once_marks_them_done_and_packs_them(checkout, tmp_path):
    queue = checkout / "q.queue"
    queue.write_text("# a comment\n\ncmd first echo made > $JOB/made.txt\ncmd failing exit 3\n")
    out = tmp_path / "out"
    out.mkdir()
    done = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue", env={"OUT": str(out)})
    assert done.returncode == 0, done.stderr
    assert "= first: exit 0" in done.stdout and "= failing: exit 3" in done.stdout
    assert (checkout / "runs/gpu/first.done").exists()
    assert not (checkout / "runs/gpu/failing.done").exists()  # a failed job runs again next time
    with tarfile.open(out / "first.tgz") as archive:
        names = archive.getnames()
    assert "first/made.txt" in names and "first.log" in names and "first.done" in names

    again = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue")
    assert "= first done" in again.stdout and "+ [failing" in again.stdout


def test_a_queue_with_an_unknown_job_kind_runs_nothing(checkout):
    (checkout / "q.queue").write_text("cmd first echo ran > $JOB/ran.txt\nrn typo --task mqar\n")
    result = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue")
    assert result.returncode == 2
    assert result.stderr.strip() == "q.queue line 2: rn: unknown job kind (run, side or cmd)"
    assert not (checkout / "runs/gpu/first").exists()


def test_queue_starts_nothing_it_could_not_stop_and_pack_in_time(checkout):
    (checkout / "q.queue").write_text("cmd late echo ran\n")
    result = bash(checkout, "scripts/gpu/run_queue.sh", "60", "q.queue")
    assert "= late: no time left" in result.stdout
    assert not (checkout / "runs/gpu/late.log").exists()


def make_run_archive(directory: Path, name: str, n_records: int, done: bool) -> None:
    staging = directory / "staging"
    write_records(staging / name / "records.jsonl", n_records)
    (staging / f"{name}.log").write_text("log\n")
    if done:
        (staging / f"{name}.done").write_text("")
    members = [name, f"{name}.log"] + ([f"{name}.done"] if done else [])
    with tarfile.open(directory / f"{name}.tgz", "w:gz") as archive:
        for member in members:
            archive.add(staging / member, arcname=member)
    shutil.rmtree(staging)


def test_unpack_puts_run_folders_back_and_never_replaces_more_records_with_fewer(checkout, tmp_path):
    (checkout / "q.queue").write_text("run grown - --task mqar\nrun stale - --task lra\n")
    write_records(checkout / "results/gpu/grown/records.jsonl", 2)
    write_records(checkout / "results/gpu/stale/records.jsonl", 5)
    returned = tmp_path / "returned"
    returned.mkdir()
    make_run_archive(returned, "grown", 4, done=True)
    make_run_archive(returned, "stale", 3, done=False)
    (returned / "triton_cache.tar.gz").write_bytes(b"kernels")

    result = bash(checkout, "scripts/gpu/unpack_returned.sh", "q.queue", str(returned))
    assert result.returncode == 0, result.stderr
    assert len((checkout / "results/gpu/grown/records.jsonl").read_text().splitlines()) == 4
    assert (checkout / "runs/gpu/grown.done").exists()
    assert len((checkout / "results/gpu/stale/records.jsonl").read_text().splitlines()) == 5
    assert "stale" in result.stderr and "fewer records" in result.stderr
    assert (checkout / ".triton_cache/triton_cache.tar.gz").read_bytes() == b"kernels"


def test_a_cut_off_cells_training_state_comes_back_and_is_restored(checkout, tmp_path):
    """States and parked cells (trained, not yet timed) travel inside the job's archive (one
    returned file per job), so that a fresh machine resumes the one and times the other;
    finished cells' weights do not travel; a job with no state left sends none."""
    job = ("printf x > $JOB/model/state/cell.pt; printf w > $JOB/model/checkpoints/best.pt; "
           "printf r > $JOB/model/pending/cell-lr0.01.json; printf p > $JOB/model/pending/cell-lr0.01.pt; "
           "echo '{}' >> $JOB/model/records.jsonl")
    (checkout / "q.queue").write_text(
        f"cmd cut mkdir -p $JOB/model/state $JOB/model/checkpoints $JOB/model/pending; {job}\n"
        "cmd whole mkdir -p $JOB/model; echo '{}' > $JOB/model/records.jsonl\n")
    out = tmp_path / "out"
    out.mkdir()
    assert bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue", env={"OUT": str(out)}).returncode == 0
    with tarfile.open(out / "cut.tgz") as archive:
        names = archive.getnames()
    assert "cut/model/state/cell.pt" in names and not any("checkpoints" in n for n in names)
    assert {"cut/model/pending/cell-lr0.01.json", "cut/model/pending/cell-lr0.01.pt"} <= set(names)
    with tarfile.open(out / "whole.tgz") as archive:
        assert not any("state" in name for name in archive.getnames())
    assert sorted(p.name for p in out.iterdir()) == ["cut.tgz", "whole.tgz"]

    elsewhere, result = unpacked_elsewhere(tmp_path, checkout / "q.queue", out)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "runs/gpu/cut/model/state/cell.pt").read_text() == "x"
    assert (elsewhere / "runs/gpu/cut/model/pending/cell-lr0.01.pt").read_text() == "p"
    assert "cut: training states of cut-off cells restored" in result.stdout
    assert "whole: training states" not in result.stdout


def test_jobs_marked_to_run_alongside_overlap_and_are_all_packed(checkout, tmp_path):
    # "&cmd" starts in the background: the foreground job sees the file it writes only if both
    # run at once; packing waits for the background job to end.
    (checkout / "q.queue").write_text(
        "&cmd early touch $JOB/../early.started; sleep 2; echo late > $JOB/result\n"
        "cmd after for i in 1 2 3 4 5 6 7 8 9 10; do [[ -f runs/gpu/early.started ]] && break; "
        "sleep 0.2; done; [[ -f runs/gpu/early.started ]] && [[ ! -f runs/gpu/early/result ]]\n")
    out = tmp_path / "out"
    out.mkdir()
    result = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue", env={"OUT": str(out)})
    assert result.returncode == 0, result.stderr
    assert (checkout / "runs/gpu/after.done").exists() and (checkout / "runs/gpu/early.done").exists()
    with tarfile.open(out / "early.tgz") as archive:
        assert "early/result" in archive.getnames()


def test_unpack_goes_on_past_a_cmd_job_that_wrote_no_records(checkout, tmp_path):
    # A `cmd` job's folder holds whatever it wrote, not records.jsonl; the archive that sorts
    # first must not end the unpacking of the ones after it.
    (checkout / "q.queue").write_text("cmd aaa_probe echo\nrun zzz_cells - --task mqar\n")
    returned = tmp_path / "returned"
    staging = returned / "staging"
    (staging / "aaa_probe").mkdir(parents=True)
    (staging / "aaa_probe" / "process1.json").write_text("{}")
    (staging / "aaa_probe.done").write_text("")
    with tarfile.open(returned / "aaa_probe.tgz", "w:gz") as archive:
        for member in ("aaa_probe", "aaa_probe.done"):
            archive.add(staging / member, arcname=member)
    shutil.rmtree(staging)
    make_run_archive(returned, "zzz_cells", 3, done=False)

    result = bash(checkout, "scripts/gpu/unpack_returned.sh", "q.queue", str(returned))
    assert result.returncode == 0, result.stderr
    assert (checkout / "runs/gpu/aaa_probe/process1.json").exists()
    assert (checkout / "runs/gpu/aaa_probe.done").exists()
    assert len((checkout / "results/gpu/zzz_cells/records.jsonl").read_text().splitlines()) == 3
    assert "zzz_cells -> results/gpu/zzz_cells (3 records)" in result.stdout


def test_triton_cache_travels_without_intermediate_forms_and_keeps_local_kernels(checkout, tmp_path):
    source = tmp_path / "cache_a"
    (source / "h1").mkdir(parents=True)
    for suffix in ("cubin", "json", "ptx", "llir", "ttir", "ttgir", "source"):
        (source / "h1" / f"k.{suffix}").write_text(suffix)
    (source / "h1" / "__grp__k.json").write_text("{}")
    archive = tmp_path / "triton_cache.tar.gz"
    packed = bash(checkout, "scripts/gpu/triton_cache.sh", "pack", str(archive),
                  env={"TRITON_CACHE_DIR": str(source)})
    assert packed.returncode == 0, packed.stderr
    assert "1 kernels packed" in packed.stdout

    target = tmp_path / "cache_b"
    (target / "h1").mkdir(parents=True)
    (target / "h1" / "k.cubin").write_text("compiled here")  # a kernel this machine already has
    unpacked = bash(checkout, "scripts/gpu/triton_cache.sh", "unpack", str(archive),
                    env={"TRITON_CACHE_DIR": str(target)})
    assert unpacked.returncode == 0, unpacked.stderr
    assert sorted(p.name for p in (target / "h1").iterdir()) == ["__grp__k.json", "k.cubin", "k.json"]
    assert (target / "h1" / "k.cubin").read_text() == "compiled here"

    missing = bash(checkout, "scripts/gpu/triton_cache.sh", "unpack", str(tmp_path / "absent.tar.gz"),
                   env={"TRITON_CACHE_DIR": str(target)})
    assert missing.returncode == 0 and "compile as usual" in missing.stdout
    assert bash(checkout, "scripts/gpu/triton_cache.sh", "bogus", "x").returncode == 2


def test_triton_cache_over_the_limit_keeps_the_newest_kernels_that_fit(checkout, tmp_path):
    cache = tmp_path / "cache"
    for age, name in enumerate(("h_new", "h_mid", "h_old")):
        folder = cache / name
        folder.mkdir(parents=True)
        (folder / "k.cubin").write_bytes(os.urandom(40_000))  # incompressible, like machine code
        (folder / "k.json").write_text("{}")
        os.utime(folder, (1_000_000 - age * 100, 1_000_000 - age * 100))
    tuned = cache / "h_tuned"  # the oldest folder, but an autotuning result: it travels anyway
    tuned.mkdir()
    (tuned / "chunk_fwd.autotune.json").write_text('{"configs_timings": [], "config": {}}')
    os.utime(tuned, (1, 1))
    archive = tmp_path / "triton_cache.tar.gz"
    packed = bash(checkout, "scripts/gpu/triton_cache.sh", "pack", str(archive),
                  env={"TRITON_CACHE_DIR": str(cache), "TRITON_CACHE_MAX_BYTES": "100000"})
    assert packed.returncode == 0, packed.stderr
    assert "the newest 2 of 3 kernel folders, and all 1 without one" in packed.stdout
    assert archive.stat().st_size <= 100_000
    with tarfile.open(archive) as tar:
        names = {Path(n).parts[0] for n in tar.getnames()}
    assert names == {"h_new", "h_mid", "h_tuned"}

    too_small = bash(checkout, "scripts/gpu/triton_cache.sh", "pack", str(archive),
                     env={"TRITON_CACHE_DIR": str(cache), "TRITON_CACHE_MAX_BYTES": "10000"})
    assert too_small.returncode == 0 and "not kept" in too_small.stdout
    assert not archive.exists()


@pytest.mark.parametrize("kind, models", [("run", "- --models nope"), ("side", "nope")])
def test_a_run_or_side_line_may_name_its_budget_and_is_small_by_default(checkout, kind, models):
    """`run NAME - --budget cpu ...` and `side NAME MODELS --budget cpu ...` run that budget
    instead of the default small one, which a line without --budget gets (not the CLI's tiny);
    the model name is bad on purpose: the job fails at once, after the command line is printed."""
    (checkout / "q.queue").write_text(f"{kind} named {models} --budget cpu --task mqar\n"
                                      f"{kind} default {models} --task mqar\n")
    result = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue")
    named, default = (line for line in result.stdout.splitlines() if line.startswith("+ ["))
    assert "--budget cpu" in named and "--budget small" not in named
    assert "--budget small" in default


def test_models_side_by_side_get_a_folder_and_a_log_each(checkout):
    """One process per entry, MODEL@KEY=VALUE in its own folder; the worst exit status."""
    result = bash(checkout, "scripts/gpu/run_models_side_by_side.sh", "out",
                  "nope,nope@pattern=sqrt,nope@window=16@chunk_size=8", "--budget", "tiny", "--task", "mqar")
    assert result.returncode != 0
    assert (checkout / "out" / "nope.log").exists() and (checkout / "out" / "nope_sqrt.log").exists()
    assert (checkout / "out" / "nope_16_8.log").exists()
    assert "unknown model" in (checkout / "out" / "nope.log").read_text().lower()


@pytest.mark.parametrize("in_turn", ["0", "1"])
def test_models_in_turn_start_only_after_the_previous_one_ended(checkout, tmp_path, in_turn):
    """IN_TURN=1 runs the entries one after another; by default they overlap. A stand-in
    python3 logs when each run starts and ends."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text(
        '#!/usr/bin/env bash\n'
        'out="${@: -1}"; echo "start $out" >> "$EVENTS"; sleep 0.5; echo "end $out" >> "$EVENTS"\n')
    (shim / "python3").chmod(0o755)
    events = tmp_path / "events"
    result = bash(checkout, "scripts/gpu/run_models_side_by_side.sh", "turns", "a,b",
                  "--task", "mqar", env={"IN_TURN": in_turn, "EVENTS": str(events),
                       "PATH": f"{shim}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    kinds = [line.split()[0] for line in events.read_text().splitlines()]
    assert kinds == (["start", "end", "start", "end"] if in_turn == "1"
                     else ["start", "start", "end", "end"])


@pytest.mark.parametrize("workers, expected", [("1", ""), ("3", "--gpus 0,0,0")])
def test_workers_spread_each_models_cells_over_processes_on_gpu_0(checkout, tmp_path, workers,
                                                                   expected):
    """WORKERS=N gives every model's run N cell workers on GPU 0, new or resumed."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text('#!/usr/bin/env bash\necho "$*" >> "$EVENTS"\n')
    (shim / "python3").chmod(0o755)
    events = tmp_path / "events"
    (checkout / "spread" / "b").mkdir(parents=True)
    (checkout / "spread" / "b" / "config.yaml").write_text("{}\n")  # b resumes
    result = bash(checkout, "scripts/gpu/run_models_side_by_side.sh", "spread", "a,b",
                  "--task", "mqar", env={"WORKERS": workers, "EVENTS": str(events),
                                         "PATH": f"{shim}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    lines = events.read_text().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("-m bimix_bench run --task mqar --models a --out spread/a")
               for line in lines)
    assert any(line.startswith("-m bimix_bench run --resume spread/b") for line in lines)
    assert all(line.endswith(expected) for line in lines)
    assert all(("--gpus" in line) == bool(expected) for line in lines)


def test_a_side_job_trains_into_results_and_comes_back_there(checkout, tmp_path):
    """`side NAME MODELS OPTIONS` runs the models side by side in results/gpu/NAME, so a partial
    folder can be committed and the next call resumes it; unpacking puts it back there."""
    (checkout / "q.queue").write_text(
        "side pair nope,nope@pattern=sqrt --budget tiny --task mqar\n")
    out = tmp_path / "out"
    out.mkdir()
    result = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue", env={"OUT": str(out)})
    started = next(line for line in result.stdout.splitlines() if line.startswith("+ [pair"))
    assert "run_models_side_by_side.sh results/gpu/pair nope,nope@pattern=sqrt" in started
    assert (checkout / "results/gpu/pair/nope_sqrt.log").exists()
    assert not (checkout / "runs/gpu/pair.done").exists()  # the unknown model failed
    with tarfile.open(out / "pair.tgz") as archive:
        assert "pair/nope.log" in archive.getnames()

    elsewhere, unpacked = unpacked_elsewhere(tmp_path, checkout / "q.queue", out)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (elsewhere / "results/gpu/pair/nope.log").exists()


def test_parked_cells_go_first_and_travel_with_their_weights(tmp_path):
    """Within the archive's limit: a parked record and its weights together or not at all,
    before any training state; states smallest first; what is left is counted."""
    folder = tmp_path / "job"
    for name, size in [("model/pending/a-lr0.01.json", 10), ("model/pending/a-lr0.01.pt", 50),
                       ("model/state/big.pt", 70), ("model/state/small.pt", 20)]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * size)
    result = subprocess.run([sys.executable, str(SCRIPTS / "returned_files.py"), "job", "100"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.split() == ["job/model/pending/a-lr0.01.json", "job/model/pending/a-lr0.01.pt",
                                     "job/model/state/small.pt"]
    assert "1 parked cells or training states left behind" in result.stderr


def test_records_an_earlier_call_made_come_back_when_the_folder_was_copied_over(checkout):
    """A call's copy of a committed job folder lacks the records the machine made in the last
    call when that call's archive was not unpacked first: the queue appends them from what it
    kept on the machine, once, before the job resumes the folder."""
    folder = checkout / "results/gpu/grown"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("made: by a run\n")
    (checkout / "q.queue").write_text("run grown - --task mqar --models nope\n")
    kept = checkout / ".queue_kept/grown/records.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"cell": 0}\n{"cell": 1}\n{"cell": 2}\n')  # what the last call left
    (folder / "records.jsonl").write_text('{"cell": 0}\n')  # the committed copy

    first = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue")
    assert "restored 2 records" in first.stdout
    assert (folder / "records.jsonl").read_text().splitlines() == [
        '{"cell": 0}', '{"cell": 1}', '{"cell": 2}']
    assert kept.read_text() == (folder / "records.jsonl").read_text()  # kept after the job

    again = bash(checkout, "scripts/gpu/run_queue.sh", "200", "q.queue")
    assert "restored" not in again.stdout
    assert len((folder / "records.jsonl").read_text().splitlines()) == 3


def test_kept_records_never_recreate_a_job_folder_that_is_gone(checkout):
    kept = checkout / ".queue_kept/gone/records.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"cell": 0}\n')
    result = bash(checkout, "-c", "python3 scripts/gpu/kept_records.py restore results/gpu/gone "
                                  ".queue_kept/gone")
    assert result.returncode == 0 and not (checkout / "results/gpu/gone").exists()


def test_kept_records_refuses_an_unknown_action_with_one_line_and_exit_2(checkout):
    result = bash(checkout, "-c", "python3 scripts/gpu/kept_records.py fetch results/gpu/x .k")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown action 'fetch'; valid: keep, restore"
    missing = bash(checkout, "-c", "python3 scripts/gpu/kept_records.py keep results/gpu/x")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "usage: kept_records.py keep|restore FOLDER KEPT"
