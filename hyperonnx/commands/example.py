"""`hyperonnx example [--dir DIR]`: the main job end to end on a built-in model (no downloads):
build a small conv + MLP, compress it, print the report, verify it in onnxruntime."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import graph
from ..models import example_model
from . import verify as verify_cmd
from .compress import file_size, format_table

EXAMPLE_MIN_COSINE = 0.98  # the example is small and shallow: hold it to a tighter bound than verify's default


def run(args) -> int:
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hyperonnx-example-"))
    folder.mkdir(parents=True, exist_ok=True)
    original = folder / "example.onnx"
    compressed = folder / "example.hc.onnx"
    graph.save(example_model(), original)
    print(f"built {original} (conv + MLP, deterministic weights)")
    start = time.perf_counter()
    model, report = graph.compress(original, args.preset, return_report=True)
    graph.save(model, compressed, source=original)
    seconds = time.perf_counter() - start
    print(format_table(report, file_size(original), file_size(compressed), seconds))
    if report.allocation is not None:
        print(report.allocation.summary())
    print(f"wrote {compressed}\n")
    results, lib, ok = verify_cmd.verify(original, compressed, tolerance=args.tolerance,
                                         min_cosine=EXAMPLE_MIN_COSINE)
    verify_cmd.print_results(results, lib)
    print("\nverify: " + ("ok" if ok else "FAILED") + f" (max rel <= {args.tolerance}, cosine >= {EXAMPLE_MIN_COSINE})")
    return 0 if ok else 1
