#!/usr/bin/env python3
"""Find or fetch the ONNX Runtime C/C++ headers the custom-op library compiles against.

Prints one line: the directory that holds `onnxruntime_cxx_api.h`. Used by CMake
(custom_ops/CMakeLists.txt); runnable by hand. Order:

1. an explicit directory: `--include-dir DIR` or the environment variable HYPERONNX_ORT_INCLUDE_DIR
   (DIR itself or DIR/onnxruntime must hold onnxruntime_cxx_api.h);
2. the cache, `$HYPERONNX_CACHE_DIR` or `$XDG_CACHE_HOME/hyperonnx` or `~/.cache/hyperonnx`,
   filled by an earlier run;
3. Debian trixie's `libonnxruntime-dev` 1.21.0 (ONNX Runtime 1.21 headers), downloaded over HTTP
   from a Debian mirror (`$HYPERONNX_DEBIAN_MIRROR`, default deb.debian.org), checked against its
   pinned SHA-256 and unpacked there by this script (the .deb is an `ar` archive holding
   data.tar.xz). The headers are architecture-independent (the amd64 and arm64 packages hold the
   same files), so every host, x86_64, aarch64, armhf or macOS, fetches the one amd64 package the
   same way: no apt, dpkg or root needed, nothing installed into the system.

Only the standard library is used: this runs inside pip's isolated build environment.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request

HEADER = "onnxruntime_cxx_api.h"
MIRROR = os.environ.get("HYPERONNX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The one package fetched, on every host: its pool path under the mirror and its SHA-256.
DEB = "pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
DEB_SHA256 = "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"


def log(message: str) -> None:
    print(f"[fetch_ort_headers] {message}", file=sys.stderr)


def header_dir(root: str | os.PathLike) -> pathlib.Path | None:
    """The directory under `root` that holds the C++ API header, if any."""
    root = pathlib.Path(root).expanduser()
    for candidate in (root, root / "onnxruntime", root / "include", root / "include" / "onnxruntime",
                      root / "usr" / "include" / "onnxruntime"):
        if (candidate / HEADER).is_file():
            return candidate.resolve()
    return None


def cache_root() -> pathlib.Path:
    if os.environ.get("HYPERONNX_CACHE_DIR"):
        return pathlib.Path(os.environ["HYPERONNX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "hyperonnx"


def api_version(include: pathlib.Path) -> int | None:
    for line in (include / "onnxruntime_c_api.h").read_text(errors="replace").splitlines():
        if line.startswith("#define ORT_API_VERSION"):
            return int(line.split()[2])
    return None


def ar_member(archive: bytes, prefix: str) -> tuple[str, bytes]:
    """The first member of a Unix `ar` archive whose name starts with `prefix`."""
    if not archive.startswith(b"!<arch>\n"):
        raise SystemExit("the downloaded .deb is not an ar archive")
    offset = 8
    while offset + 60 <= len(archive):
        header = archive[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode())
        if name.startswith(prefix):
            return name, archive[offset + 60:offset + 60 + size]
        offset += 60 + size + (size & 1)
    raise SystemExit(f"the .deb holds no {prefix}*")


def fetch(root: pathlib.Path) -> pathlib.Path:
    url = f"{MIRROR.rstrip('/')}/{DEB}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            deb = response.read()
    except OSError as error:
        raise SystemExit(
            f"Could not download the ONNX Runtime headers from {url}: {error}\n"
            "Give a directory holding onnxruntime_cxx_api.h (>= 1.21), for example the include/ "
            "folder of the official release archive onnxruntime-linux-x64-1.21.0.tgz from "
            "https://github.com/microsoft/onnxruntime/releases, through the environment variable "
            "HYPERONNX_ORT_INCLUDE_DIR or the CMake option -DHYPERONNX_ORT_INCLUDE_DIR=..., or a "
            "Debian mirror through HYPERONNX_DEBIAN_MIRROR") from error
    digest = hashlib.sha256(deb).hexdigest()
    if digest != DEB_SHA256:
        raise SystemExit(f"{url}: sha256 {digest} differs from the pinned {DEB_SHA256}")
    name, data = ar_member(deb, "data.tar")
    version = DEB.rsplit("/", 1)[1].split("_")[1]
    target = root / f"onnxruntime-{version}"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        unpacked = pathlib.Path(tmp) / "root"
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./").startswith("usr/include/")]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.10.12
            tar.extractall(unpacked, members=members, **safe)
        if header_dir(unpacked) is None:
            raise SystemExit(f"{url} holds no {HEADER}")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(unpacked), target)
    (root / "CURRENT").write_text(target.name + "\n")
    log(f"fetched {url} ({name}) into {target}")
    return header_dir(target)


def cached(root: pathlib.Path) -> pathlib.Path | None:
    current = root / "CURRENT"
    if current.is_file():
        return header_dir(root / current.read_text().strip())
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--include-dir", default=os.environ.get("HYPERONNX_ORT_INCLUDE_DIR", ""),
                        help="explicit headers directory (default: $HYPERONNX_ORT_INCLUDE_DIR)")
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: ~/.cache/hyperonnx)")
    args = parser.parse_args(argv)
    if args.include_dir:
        include = header_dir(args.include_dir)
        if include is None:
            raise SystemExit(f"{args.include_dir} (HYPERONNX_ORT_INCLUDE_DIR) holds no {HEADER}")
    else:
        root = pathlib.Path(args.cache_dir).expanduser() if args.cache_dir else cache_root()
        root = root / "ort-headers"
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds share one download
            include = cached(root) or fetch(root)
    version = api_version(include)
    if version is None or version < 21:
        raise SystemExit(f"{include} has ORT_API_VERSION {version}; hyperonnx needs >= 21 (onnxruntime 1.21)")
    print(include)
    return 0


if __name__ == "__main__":
    sys.exit(main())
