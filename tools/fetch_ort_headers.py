#!/usr/bin/env python3
"""Find or fetch the ONNX Runtime C/C++ headers the custom-op library compiles against.

Prints one line: the directory that holds `onnxruntime_cxx_api.h`. Used by CMake
(custom_ops/CMakeLists.txt); runnable by hand. Order:

1. an explicit directory: `--include-dir DIR` or the environment variable HYPERONNX_ORT_INCLUDE_DIR
   (DIR itself or DIR/onnxruntime must hold onnxruntime_cxx_api.h);
2. the cache, `$HYPERONNX_CACHE_DIR` or `$XDG_CACHE_HOME/hyperonnx` or `~/.cache/hyperonnx`,
   filled by an earlier run;
3. Debian trixie's `libonnxruntime-dev` (ONNX Runtime 1.21 headers), downloaded with
   `apt-get download` against a private apt state (sources, lists and cache all under the cache
   directory, `-o Dir::...` options) and unpacked there with `dpkg -x`. Nothing is installed into
   the system and no root is needed. The archive's signature is checked with the system's
   Debian keyring when it holds the trixie key; without it the index is fetched unsigned
   (`trusted=yes`) and the .deb must then match a pinned SHA-256.

Only the standard library is used: this runs inside pip's isolated build environment.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HEADER = "onnxruntime_cxx_api.h"
PACKAGE = "libonnxruntime-dev"
SERIES = "1.21"  # the oldest headers with everything the library uses: one binary for 1.21+
MIRROR = os.environ.get("HYPERONNX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRINGS = ("/usr/share/keyrings/debian-archive-trixie-stable.gpg",
            "/usr/share/keyrings/debian-archive-keyring.gpg")
# .deb files checked by hand (used when the archive signature cannot be checked here).
PINNED_SHA256 = {
    "libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb":
        "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08",
}


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


def apt(args: list[str], state: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    empty = state / "empty"
    empty.mkdir(exist_ok=True)
    options = [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={state / 'sources'}",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", f"Dir::Etc::PreferencesParts={empty}",
        "-o", "Dir::State::Status=/dev/null",  # the host's installed set does not matter here
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=",  # no privilege drop: the private directories are ours
        "-q",
    ]
    return subprocess.run(["apt-get", *options, *args], cwd=cwd, capture_output=True, text=True)


def fetch(root: pathlib.Path) -> pathlib.Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit(
            "ONNX Runtime headers not found and apt-get/dpkg are not available to fetch them.\n"
            "Give a directory holding onnxruntime_cxx_api.h (>= 1.21), for example the include/ "
            "folder of the official release archive onnxruntime-linux-x64-1.21.0.tgz from "
            "https://github.com/microsoft/onnxruntime/releases, through the environment variable "
            "HYPERONNX_ORT_INCLUDE_DIR or the CMake option -DHYPERONNX_ORT_INCLUDE_DIR=...")
    state = root / "apt"
    for sub in ("sources", "lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    keyring = next((k for k in KEYRINGS if os.path.isfile(k)), None)
    attempts = ([keyring] if keyring else []) + [None]
    error = ""
    for signed_by in attempts:
        trust = f"Signed-By: {signed_by}" if signed_by else "Trusted: yes"
        (state / "sources" / "trixie.sources").write_text(
            f"Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n{trust}\n")
        update = apt(["update"], state, state)
        if update.returncode == 0 and "NO_PUBKEY" not in update.stderr and \
                "not signed" not in update.stderr:
            break
        error = update.stdout + update.stderr
        log(f"apt-get update with {trust!r} failed; {'retrying unsigned' if signed_by else 'giving up'}")
    else:
        raise SystemExit(f"apt-get update for Debian trixie failed:\n{error}")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tmp = pathlib.Path(tmp)
        download = apt(["download", PACKAGE], state, tmp)
        debs = glob.glob(str(tmp / f"{PACKAGE}_*.deb"))
        if download.returncode != 0 or len(debs) != 1:
            raise SystemExit(f"apt-get download {PACKAGE} failed:\n{download.stdout}{download.stderr}")
        deb = pathlib.Path(debs[0])
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        pinned = PINNED_SHA256.get(deb.name)
        if signed_by is None and pinned != digest:
            raise SystemExit(f"{deb.name} (sha256 {digest}) was fetched without a signature check "
                             "and matches no pinned hash; install debian-archive-keyring or give "
                             "HYPERONNX_ORT_INCLUDE_DIR")
        if pinned is not None and pinned != digest:
            raise SystemExit(f"{deb.name}: sha256 {digest} differs from the pinned {pinned}")
        version = deb.name.split("_")[1]
        if not version.startswith(SERIES + "."):
            log(f"note: trixie now ships {PACKAGE} {version}, not {SERIES}.x")
        unpacked = tmp / "root"
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
        include = header_dir(unpacked)
        if include is None:
            raise SystemExit(f"{deb.name} holds no {HEADER}")
        target = root / f"onnxruntime-{version}"
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(unpacked), target)
        (root / "CURRENT").write_text(target.name + "\n")
        log(f"fetched {deb.name} into {target}")
    shutil.rmtree(state, ignore_errors=True)  # the package lists are not needed any more
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
