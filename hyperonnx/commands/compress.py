"""`hyperonnx compress model.onnx -o model.hc.onnx`: the graph pass with a report."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

from onnx import TensorProto

from .. import format as fmt
from .. import graph
from ..graph import function as function_mod
from ..graph import samples
from ..graph.model_io import SpillFile, all_tensors, check_output, write_atomic
from ._common import Progress, human


def default_output(path: Path) -> Path:
    return path.with_name(path.stem + ".hc.onnx")


def format_table(report, before: int | None, after: int | None, seconds: float) -> str:
    rows = [("name", "shape", "dtype", "orig", "seed", "bits/w", "SQNR dB", "max abs err", "out err", "rule", "note")]
    for t in report.tensors:
        sqnr = "exact" if t.compressed and t.sqnr_db is None else (f"{t.sqnr_db:.1f}" if t.sqnr_db is not None else "-")
        coded = t.compressed and not t.reason
        rows.append((t.name if not t.graph else f"{t.graph}:{t.name}", "x".join(map(str, t.shape)) or "scalar",
                     t.dtype, human(t.orig_bytes), human(t.seed_bytes),
                     f"{t.bits_per_weight:.2f}" if coded else "-", sqnr if coded else "-",
                     f"{t.max_abs_err:.3g}" if coded else "-",
                     # this tensor's predicted share of the output error (output-aware allocation)
                     f"{t.predicted_output_error:.2g}" if t.predicted_output_error is not None and coded else "-",
                     t.rule or "-",  # which allocation rule set the width
                     t.reason if t.reason else ("" if t.compressed else "raw")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    widths[0] = min(widths[0], 48)
    lines = []
    for k, r in enumerate(rows):
        cells = [str(c)[:widths[i]] if i == 0 else str(c) for i, c in enumerate(r)]
        lines.append("  ".join(c.ljust(widths[i]) if i in (0, 1, 2, 9, 10) else c.rjust(widths[i])
                               for i, c in enumerate(cells)).rstrip())
        if k == 0:
            lines.append("-" * len(lines[0]))
    orig = sum(t.orig_bytes for t in report.tensors)
    seed = sum(t.seed_bytes for t in report.tensors)
    n = len(report.compressed)
    lines.append("")
    lines.append(f"tensors: {n} of {len(report.tensors)} candidates compressed; weights {human(orig)} -> "
                 f"{human(seed)}")
    if report.accuracy_level:
        lines.append(f"int8 compute (accuracy_level {report.accuracy_level}) on {report.accuracy_nodes} fused "
                     "MatMul / Gemm node(s), with the hyperonnx library")
    if before is not None and after is not None:
        lines.append(f"file: {human(before)} -> {human(after)}, ratio {before / max(1, after):.2f}x, "
                     f"time {seconds:.2f} s")
    return "\n".join(lines)


def file_size(path: Path) -> int:
    """Size of a model file plus the external-data files beside it that it references."""
    import onnx
    total = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
        seen = set()
        from ..graph.walk import scopes
        for scope in scopes(model):
            for t in scope.graph.initializer:
                for e in t.external_data:
                    if e.key == "location" and e.value not in seen:
                        seen.add(e.value)
                        p = path.parent / e.value
                        if p.exists():
                            total += p.stat().st_size
    except Exception:  # noqa: BLE001
        pass
    return total


def _check_bits(args) -> None:
    """--bits within what the codec reaches (its least and largest index widths, with the scales),
    else a one-line error naming the range: a rate nobody can meet is not reported as met."""
    if args.bits is None:
        return
    from .. import codec
    from ..graph.compress import DEFAULT_CODEC
    config = codec.resolve_config(args.preset or DEFAULT_CODEC)
    if not isinstance(config, (codec.LatticeConfig, codec.TrellisConfig)):
        return  # resolve_config says: bits= needs a rate codec
    module = codec.module_of(config)
    per = module.WEIGHTS_PER_INDEX
    low = config.min_index_bits / per + 16 / config.group
    high = config.max_index_bits / per + 16 / config.group
    if not low <= args.bits <= high:
        name = args.preset or DEFAULT_CODEC
        raise ValueError(f"--bits {args.bits:g} is beyond the {name} codec's reach: {low:.4g} to {high:.4g} "
                         "bits/weight on the weights it compresses")


def nothing_compressed(model, report, args) -> str:
    """Why no tensor was compressed, as one line: what was kept raw and why, or why nothing was
    a candidate (excluded, not included, graph inputs, too small, already seeds, no float weights)."""
    if report.tensors:
        reasons = sorted({t.reason or "raw" for t in report.tensors})
        return (f"no tensor was compressed: all {len(report.tensors)} candidate(s) were kept raw "
                f"({'; '.join(reasons)[:200]})")
    from ..graph.compress import FLOAT_TYPES, find_candidates
    _eligible, skipped = find_candidates(model, min_elements=args.min_elements, include=args.include,
                                         exclude=args.exclude)
    if skipped:
        counts = {}
        for _name, reason in skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return "no tensor was compressed: " + "; ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    floats = [t for t in all_tensors(model) if t.data_type in FLOAT_TYPES]
    seeds = sum(1 for t in all_tensors(model) if t.data_type == TensorProto.UINT8 and t.name.endswith(".seed"))
    if seeds and not any(math.prod(t.dims) >= args.min_elements for t in floats):
        return (f"no tensor was compressed: the model is already compressed ({seeds} seed(s)); what float "
                f"tensors remain have fewer than --min-elements {args.min_elements} elements")
    if floats:
        return (f"nothing eligible: the model's {len(floats)} float tensor(s) all have fewer than "
                f"--min-elements {args.min_elements} elements")
    return "nothing eligible: the model has no float32 / float16 / bfloat16 weights"


def run(args) -> int:
    source = Path(args.model)
    output = Path(args.output) if args.output else default_output(source)
    start = time.perf_counter()
    model = graph.load(source, load_external_data=False)  # tensors are read one at a time
    # an input stored with external data gives an output stored the same way
    external = any(t.data_location == TensorProto.EXTERNAL for t in all_tensors(model)) or None
    # refuse before the (possibly long) compression
    check_output(output, source, model=model)
    if args.report:
        check_output(args.report, source, others=[output, output.with_name(output.name + ".data")])
    _check_bits(args)
    limit = None if getattr(args, "max_inputs_mb", None) is None else int(args.max_inputs_mb * 2**20)
    feeds = samples.load_inputs(args.inputs, model, max_bytes=limit) if args.inputs else None  # checked before the work
    progress = Progress("compressing", enabled=not args.quiet)
    # seeds go to a scratch file beside the output as they are made: memory holds one weight
    with SpillFile(output.parent if str(output.parent) else ".", prefix=f".{output.name}") as spill, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report's notes say it once, below
        report = graph.compress_model(model, args.preset, bits=args.bits, target_sqnr=args.target_sqnr,
                                      max_output_error=args.max_output_error, inputs=feeds,
                                      allocation=args.allocation, min_elements=args.min_elements, include=args.include,
                                      exclude=args.exclude, function_fallback=not args.no_function,
                                      progress=progress, spill=spill, fuse=not args.no_fuse,
                                      accuracy_level=args.accuracy_level)
        missed = report.allocation is not None and report.allocation.budget_missed
        if missed and not getattr(args, "allow_missed_budget", False):
            print(report.allocation.summary())
            raise ValueError(f"the output budget is missed ({report.target}); nothing written "
                             "(--allow-missed-budget writes the model anyway)")
        graph.save(model, output, source=source, external_data=external)
    seconds = time.perf_counter() - start
    before, after = file_size(source), file_size(output)
    if not args.quiet:
        print(format_table(report, before, after, seconds))
    if report.allocation is not None:
        print(report.allocation.summary())  # the one line a quiet run keeps too
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {output}")
    if args.report:
        data = report.to_dict()
        data.update({"input": str(source), "output": str(output), "file_bytes_before": before,
                     "file_bytes_after": after, "ratio": before / max(1, after), "seconds": seconds})
        for t in data["tensors"]:
            if t["sqnr_db"] is not None and not math.isfinite(t["sqnr_db"]):
                t["sqnr_db"] = None
        write_atomic(args.report, json.dumps(data, indent=2).encode())
    if not report.compressed:
        if not args.quiet:
            print(f"note: {nothing_compressed(model, report, args)}", file=sys.stderr)
    elif not args.no_function and not any(f.domain == fmt.OP_DOMAIN and f.name == fmt.OP_TYPE
                                           for f in model.functions):
        print(f"note: the model has no standard-ops DecodeWeights fallback (it needs ONNX opset >= "
              f"{function_mod.MIN_OPSET}, lattice >= {function_mod.LATTICE_MIN_OPSET}; trellis with another codec has none): "
              "it runs only with the hyperonnx library registered; `hyperonnx decompress` makes a plain "
              "copy for other runtimes", file=sys.stderr)
    return 0
