"""Packaging. tasks/ and baselines/ sit at the top of the repository, where contributors look for
them, and are installed inside the package as bimix_bench.tasks and bimix_bench.baselines, never
as generic top-level names that would shadow other software. Everything else is in
pyproject.toml. (A checkout used without installing finds them through bimix_bench/_layout.py.)
"""
from setuptools import find_packages, setup

TOP_LEVEL_PARTS = ("tasks", "baselines")

packages = find_packages(include=["bimix_bench", "bimix_bench.*"])
package_dir = {}
for part in TOP_LEVEL_PARTS:
    packages += [f"bimix_bench.{name}" for name in find_packages(include=[part, f"{part}.*"])]
    package_dir[f"bimix_bench.{part}"] = part

setup(packages=packages, package_dir=package_dir)
