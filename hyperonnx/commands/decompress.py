"""`hyperonnx decompress in.onnx -o out.onnx [--to int8|int4]`: a plain ONNX model for runtimes
without hyperonnx (float weights, or blocked int8 / int4 DequantizeLinear weights)."""

from __future__ import annotations

from pathlib import Path

from onnx import TensorProto

from .. import graph
from ..graph.decompress import decompress_model
from ..graph.model_io import SpillFile, all_tensors, check_output
from ._common import Progress


def run(args) -> int:
    source = Path(args.model)
    to = getattr(args, "to", "float")
    suffix = ".plain.onnx" if to == "float" else f".{to}.onnx"
    output = Path(args.output) if args.output else source.with_name(source.stem + suffix)
    check_output(output, source)  # before the (possibly long) decoding
    model = graph.load(source, load_external_data=False)  # tensors are read one at a time
    check_output(output, source, model=model)  # its .data is no file the input reads
    # an input stored with external data gives an output stored the same way; otherwise the
    # decoded size decides (save's threshold)
    external = any(t.data_location == TensorProto.EXTERNAL for t in all_tensors(model)) or None
    progress = Progress("decompressing", enabled=not args.quiet)
    # decoded weights go to a scratch file beside the output as they are made: memory holds one
    with SpillFile(output.parent if str(output.parent) else ".", prefix=f".{output.name}") as spill:
        count = decompress_model(model, spill=spill, progress=progress, to=to,
                                 block_size=getattr(args, "block_size", 32))
        graph.save(model, output, source=source, external_data=external)
    if not args.quiet:
        print(f"decoded {count} tensors; wrote {output}")
    return 0
