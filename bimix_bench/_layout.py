"""Where bimix_bench.tasks and bimix_bench.baselines come from in a checkout used without installing.

The task plugins (tasks/) and the baseline models (baselines/) live at the top of the repository
and belong to the package: an install maps them to bimix_bench.tasks and bimix_bench.baselines
(setup.py), so installed code finds them like any subpackage. A checkout put on PYTHONPATH has no
such mapping; this finder, consulted only after every other one, serves the two names from the
checkout's top level. Their submodules are then found through the package's __path__ as usual.
"""
from __future__ import annotations

import importlib.util
import os
import sys

TOP_LEVEL_PARTS = ("tasks", "baselines")


class CheckoutPartsFinder:
    """Meta-path finder for bimix_bench.<part> when <part>/ sits beside the package directory."""

    def __init__(self, checkout_root: str):
        self.checkout_root = checkout_root

    def find_spec(self, fullname, path=None, target=None):
        package, _, part = fullname.partition(".")
        if package != "bimix_bench" or part not in TOP_LEVEL_PARTS:
            return None
        directory = os.path.join(self.checkout_root, part)
        init = os.path.join(directory, "__init__.py")
        if not os.path.isfile(init):
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[directory])


def install_checkout_finder(package_dir: str) -> None:
    """Append the finder when package_dir is a checkout's bimix_bench/ (beside pyproject.toml)."""
    root = os.path.dirname(os.path.abspath(package_dir))
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        return
    if any(isinstance(f, CheckoutPartsFinder) for f in sys.meta_path):
        return
    sys.meta_path.append(CheckoutPartsFinder(root))
