"""tasks/ and baselines/ sit at the repository's top level and import as bimix_bench.tasks and
bimix_bench.baselines, with one path per file: from a checkout on PYTHONPATH (no install), from an
installed wheel, and from an editable install."""
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bimix_bench._layout import TOP_LEVEL_PARTS, CheckoutPartsFinder, install_checkout_finder

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_has_no_symlinks():
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    links = [line.split("\t")[1] for line in listing.stdout.splitlines() if line.startswith("120000")]
    assert links == []
    for part in TOP_LEVEL_PARTS:
        assert not (ROOT / "bimix_bench" / part).exists()
        assert (ROOT / part / "__init__.py").is_file()


def test_the_checkout_finder_serves_only_the_two_parts():
    finder = CheckoutPartsFinder(str(ROOT))
    for part in TOP_LEVEL_PARTS:
        spec = finder.find_spec(f"bimix_bench.{part}")
        assert Path(spec.origin) == ROOT / part / "__init__.py"
        assert spec.submodule_search_locations == [str(ROOT / part)]
    assert finder.find_spec("bimix_bench.cli") is None
    assert finder.find_spec("tasks") is None
    assert finder.find_spec("other.tasks") is None
    assert CheckoutPartsFinder(str(ROOT / "docs")).find_spec("bimix_bench.tasks") is None


def test_no_finder_is_added_outside_a_checkout(tmp_path, monkeypatch):
    (tmp_path / "bimix_bench").mkdir()
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    before = list(sys.meta_path)
    install_checkout_finder(str(tmp_path / "bimix_bench"))
    assert sys.meta_path == before


def _bare_python(pythonpath: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess:
    """python -S: no .pth files, so no installed or editable copy of bimix_bench can answer."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath + site.getsitepackages()))
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


IMPORT_BOTH = ("import bimix_bench.tasks.mqar as t, bimix_bench.baselines.hsa as b; "
               "print(t.__file__); print(b.__file__)")


def test_a_checkout_on_pythonpath_imports_both_parts(tmp_path):
    done = _bare_python([str(ROOT)], IMPORT_BOTH, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [Path(p) for p in done.stdout.split()] == [
        ROOT / "tasks" / "mqar" / "__init__.py", ROOT / "baselines" / "hsa.py"]


@pytest.mark.slow
def test_an_installed_wheel_carries_both_parts_inside_the_package(tmp_path):
    # Built from a copy of the packaged files, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for part in ("bimix_bench",) + TOP_LEVEL_PARTS:
        shutil.copytree(ROOT / part, source / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bimix_bench/tasks/mqar/defaults.yaml" in names
    assert "bimix_bench/baselines/hsa.py" in names
    assert not [n for n in names if n.split("/")[0] in TOP_LEVEL_PARTS]
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    done = _bare_python([str(target)], IMPORT_BOTH, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [Path(p) for p in done.stdout.split()] == [
        target / "bimix_bench" / "tasks" / "mqar" / "__init__.py",
        target / "bimix_bench" / "baselines" / "hsa.py"]
