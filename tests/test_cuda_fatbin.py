"""The GPU code the library carries (no GPU needed): SASS for every GPU from Turing to Hopper,
Jetson Orin (sm_87) included, and compute_75 PTX that newer GPUs JIT-compile.

Reads the library's `.nv_fatbin` section: a sequence of fat binaries (magic 0xBA55ED50, a 16-byte
header with its size), each a sequence of entries whose header holds the kind (1 PTX, 2 ELF/SASS)
and the compute capability (as `cuobjdump --list-elf --list-ptx` prints them). Skipped when the
library was built without CUDA."""

from __future__ import annotations

import pathlib
import shutil
import struct
import subprocess

import pytest

import hyperonnx

FATBIN_MAGIC = 0xBA55ED50
PTX, SASS = 1, 2
REQUIRED_SASS = {75, 80, 86, 87, 89, 90}


def elf_section(path: str, wanted: str) -> bytes | None:
    """The bytes of section `wanted` of a little-endian ELF64 file, or None."""
    data = open(path, "rb").read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64 file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx]
    for name, _type, _flags, _addr, offset, size in headers:
        start = names[4] + name
        if data[start:data.index(b"\0", start)].decode() == wanted:
            return data[offset:offset + size]
    return None


def fatbin_entries(section: bytes) -> list[tuple[int, int]]:
    """(kind, compute capability) of every entry of every fat binary in `section`."""
    entries, offset = [], 0
    while offset + 16 <= len(section):
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", section, offset)
        if magic != FATBIN_MAGIC:  # padding between fat binaries
            offset += 8
            continue
        entry, end = offset + header_size, offset + header_size + size
        while entry < end:
            kind, _version, entry_header, payload = struct.unpack_from("<HHIQ", section, entry)
            arch, = struct.unpack_from("<I", section, entry + 28)
            entries.append((kind, arch))
            entry += entry_header + payload
        offset = end
    return entries


def test_fatbin_has_sass_and_ptx():
    section = elf_section(hyperonnx.get_library_path(), ".nv_fatbin")
    if section is None:
        pytest.skip("the library was built without CUDA")
    entries = fatbin_entries(section)
    sass = {arch for kind, arch in entries if kind == SASS}
    ptx = {arch for kind, arch in entries if kind == PTX}
    assert REQUIRED_SASS <= sass, sorted(sass)
    assert ptx == {75}, sorted(ptx)  # the oldest: runs on every newer GPU
    assert sass <= REQUIRED_SASS | {72, 100, 120}, sorted(sass)  # 72 below CUDA 13, 100/120 from 12.8


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.parametrize("nvcc, sass", [("11.4", "72 75 80 86 87"), ("11.8", "72 75 80 86 87 89 90"),
                                        ("12.8", "72 75 80 86 87 89 90 100 120"),
                                        ("13.0", "75 80 86 87 89 90 100 120")])
def test_default_architectures_by_nvcc_version(nvcc, sass):
    """custom_ops/cuda/architectures.cmake, the list a build gets from the nvcc that compiles it."""
    script = pathlib.Path(__file__).resolve().parent.parent / "custom_ops" / "cuda" / "architectures.cmake"
    child = subprocess.run(["cmake", f"-DNVCC_VERSION={nvcc}", "-P", str(script)], capture_output=True, text=True,
                           check=True)
    arches = child.stderr.strip().split(";")
    assert [a.removesuffix("-real") for a in arches if a.endswith("-real")] == sass.split()
    assert [a for a in arches if not a.endswith("-real")] == ["75-virtual"]
