#!/usr/bin/env python3
"""`make test-ort-versions`: the kernel tests under the oldest onnxruntime release pip offers for
this Python that the library supports (hyperonnx.runtime.MIN_ORT_VERSION) and under the newest.

Each version gets a virtual environment of its own under build/ort-versions/ (kept for the next
run) with the package's dependencies from pyproject.toml, pytest and hypothesis; the tests import
hyperonnx from this source tree and load the library already built into .venv (HYPERONNX_LIBRARY).
Prints one line per version and exits non-zero when a run fails.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import time
import tomllib
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hyperonnx.runtime import MIN_ORT_VERSION  # noqa: E402

TESTS = ["test_kernel.py"]  # the kernel tests: both codecs, every rule


def parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def offered() -> list[str]:
    """The onnxruntime versions pip offers for this Python, newest first."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "onnxruntime"],
                         capture_output=True, text=True, check=True).stdout
    return [v.strip() for v in out.split("Available versions:")[1].splitlines()[0].split(",")]


def environment(version: str) -> pathlib.Path:
    folder = ROOT / "build" / "ort-versions" / version
    python = folder / "bin" / "python"
    if not (folder / ".ready").exists():
        venv.create(folder, with_pip=True, clear=True)
        requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        requirements += [f"onnxruntime=={version}", "pytest", "hypothesis"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
        (folder / ".ready").touch()
    return python


def main() -> int:
    supported = [v for v in offered() if parse(v)[:2] >= MIN_ORT_VERSION]
    library = subprocess.run([sys.executable, "-c", "import hyperonnx; print(hyperonnx.get_library_path())"],
                             cwd="/", capture_output=True, text=True, check=True).stdout.strip()  # the installed one
    failed = False
    for version in (supported[-1], supported[0]):
        python = environment(version)
        start = time.monotonic()
        child = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                               cwd=ROOT / "tests", capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HYPERONNX_LIBRARY": library})
        summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else child.stderr[-500:]
        print(f"onnxruntime {version}: {summary} ({time.monotonic() - start:.0f} s)", flush=True)
        if child.returncode != 0:
            print(child.stdout[-4000:], child.stderr[-2000:], sep="\n")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
