"""The `hyperonnx` command line: one sub-command per verb, each implemented in its own module."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measure the codec, the kernels and the peers")
    targets = bench.add_subparsers(dest="target", required=True)
    codec = targets.add_parser("codec", help="bits/weight, SQNR and throughput of the codec presets")
    codec.add_argument("--presets", nargs="+", default=None, help="presets to measure (default: all)")
    codec.add_argument("--gaussian", type=int, default=4_000_000,
                       help="elements of the Gaussian test tensor (0 to skip)")
    codec.add_argument("--no-minilm", action="store_true", help="skip the MiniLM-L6 weight matrices")
    codec.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    codec.set_defaults(run=lambda args: __import__("hyperonnx.bench.codec", fromlist=["main"]).main(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperonnx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hyperonnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("hyperonnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
