"""Build the two Lambda layers without Docker.

    python layers/build.py

- ``layers/build/deps/python``: the runtime dependencies from pyproject.toml, as wheels for the
  Lambda runtime (Python 3.12 on arm64), so the C extensions (psycopg-binary, pydantic-core,
  ijson's yajl2_c) match the functions' architecture whatever machine builds them.
- ``layers/build/app/python/sluiceway``: the sluiceway package itself, copied from src/.

The CDK app (infra/) packages both directories as layers; the functions' own code is
``functions/<name>/``. Run this before ``cdk deploy``; ``cdk synth`` works without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "layers" / "build"
DEPS_DIR = BUILD_DIR / "deps" / "python"
APP_DIR = BUILD_DIR / "app" / "python" / "sluiceway"

# Must match the functions' runtime and architecture in infra/sluiceway_infra/functions.py.
PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_aarch64"


def runtime_dependencies() -> list[str]:
    """The project's own dependencies: one list in pyproject.toml, not a second copy here."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def build_deps() -> None:
    shutil.rmtree(DEPS_DIR, ignore_errors=True)
    DEPS_DIR.mkdir(parents=True)
    subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
            "--platform", PLATFORM, "--implementation", "cp",
            "--python-version", PYTHON_VERSION, "--only-binary=:all:",
            "--target", str(DEPS_DIR), *runtime_dependencies(),
        ],
        check=True,
    )  # fmt: skip


def build_app() -> None:
    shutil.rmtree(APP_DIR.parent.parent, ignore_errors=True)
    shutil.copytree(
        REPO_ROOT / "src" / "sluiceway",
        APP_DIR,
        # *.so: the C block cut built for this machine, not the functions' arm64 (there
        # sluiceway.blocks cuts in Python: the same blocks)
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local", "*.so"),
    )


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    build_deps()
    build_app()
    # Lambda allows 250 MiB unzipped for a function and all its layers together.
    print(f"deps layer {size_mib(DEPS_DIR):.1f} MiB, app layer {size_mib(APP_DIR):.1f} MiB")


if __name__ == "__main__":
    main()
