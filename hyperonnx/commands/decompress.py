"""`hyperonnx decompress in.onnx -o out.onnx`: a plain ONNX model for runtimes without hyperonnx."""

from __future__ import annotations

from pathlib import Path

from .. import graph
from ..graph.decompress import decompress_model


def run(args) -> int:
    source = Path(args.model)
    output = Path(args.output) if args.output else source.with_name(source.stem + ".plain.onnx")
    model = graph.load(source)
    count = decompress_model(model)
    graph.save(model, output, source=source)
    if not args.quiet:
        print(f"decoded {count} tensors; wrote {output}")
    return 0
