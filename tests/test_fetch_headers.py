"""tools/fetch_ort_headers.py: the same pinned, architecture-independent package on every host."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "fetch_ort_headers.py"
sys.path.insert(0, str(TOOL.parent))
import fetch_ort_headers  # noqa: E402


def run(tmp_path, **env):
    return subprocess.run([sys.executable, str(TOOL), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYPERONNX_ORT_INCLUDE_DIR": "", **env})


def test_fetch_into_empty_cache(tmp_path):
    """Downloads the pinned .deb over HTTP and unpacks its headers without apt or dpkg (85 kB)."""
    child = run(tmp_path)
    if child.returncode != 0 and "Could not download" in child.stderr:
        pytest.skip("no Debian mirror reachable: " + child.stderr.splitlines()[0])
    assert child.returncode == 0, child.stderr
    include = pathlib.Path(child.stdout.strip())
    assert (include / "onnxruntime_cxx_api.h").is_file()
    assert fetch_ort_headers.api_version(include) == 21
    assert not list((tmp_path / "cache").rglob("*.so*"))  # headers only
    again = run(tmp_path, HYPERONNX_DEBIAN_MIRROR="file:///nonexistent")  # from the cache now
    assert again.returncode == 0 and again.stdout == child.stdout


def test_refuses_a_package_that_is_not_the_pinned_one(tmp_path):
    mirror = tmp_path / "mirror"
    deb = mirror / fetch_ort_headers.DEB
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"!<arch>\n" + b"not the package")
    child = run(tmp_path, HYPERONNX_DEBIAN_MIRROR=mirror.as_uri())
    assert child.returncode != 0
    assert "differs from the pinned" in child.stderr
    assert not (tmp_path / "cache" / "ort-headers" / "CURRENT").exists()
