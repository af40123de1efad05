"""The library's glibc / libstdc++ symbol versions against the floor it claims.

Wheels (tools/build_wheels.sh, manylinux_2_28) claim glibc 2.28 and GLIBCXX 3.4.24 (GCC 8's
libstdc++): cibuildwheel's test run sets HYPERONNX_GLIBC_FLOOR / HYPERONNX_GLIBCXX_FLOOR from
pyproject.toml. A library built from source needs the glibc it was built against; without those
variables the floor is this machine's glibc and libstdc++, so the check is that it loads here.
Reads the versions with objdump -T (binutils), as auditwheel does with its own ELF reader."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
import pathlib

import pytest

import hyperonnx

ROOT = pathlib.Path(__file__).resolve().parent.parent


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def symbol_versions(path: str, defined: bool = False) -> dict[str, tuple[int, ...]]:
    """The newest GLIBC / GLIBCXX / CXXABI version `path` needs (or, `defined`, provides)."""
    dump = subprocess.run(["objdump", "-T", path], capture_output=True, text=True, check=True).stdout
    newest: dict[str, tuple[int, ...]] = {}
    for line in dump.splitlines():
        if ("*UND*" in line) == defined:
            continue
        match = re.search(r"\b(GLIBC|GLIBCXX|CXXABI)_([0-9.]+)\b", line)
        if match:
            newest[match[1]] = max(newest.get(match[1], ()), version(match[2]))
    return newest


def this_machine() -> dict[str, tuple[int, ...]]:
    """The glibc and libstdc++ versions the running process has."""
    import onnxruntime  # noqa: F401 - loads libstdc++ into this process

    floor = {"GLIBC": version(os.confstr("CS_GNU_LIBC_VERSION").split()[1])}
    maps = pathlib.Path("/proc/self/maps").read_text().split()
    libstdcxx = next(p for p in maps if re.search(r"/libstdc\+\+\.so\.6", p))
    floor["GLIBCXX"] = symbol_versions(libstdcxx, defined=True)["GLIBCXX"]
    return floor


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_symbol_versions_within_the_floor():
    needs = symbol_versions(hyperonnx.get_library_path())
    assert "GLIBC" in needs  # the reader found the versions
    if os.environ.get("HYPERONNX_GLIBC_FLOOR"):
        floor = {"GLIBC": version(os.environ["HYPERONNX_GLIBC_FLOOR"]),
                 "GLIBCXX": version(os.environ["HYPERONNX_GLIBCXX_FLOOR"])}
    else:
        floor = this_machine()
    for name, limit in floor.items():
        assert needs.get(name, ()) <= limit, f"the library needs {name} {needs[name]}, the floor is {limit}"


def test_readme_states_the_wheel_floor():
    environment = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]["linux"]["environment"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"glibc {environment['HYPERONNX_GLIBC_FLOOR']}" in readme
    assert f"GLIBCXX {environment['HYPERONNX_GLIBCXX_FLOOR']}" in readme
