"""`hyperonnx bench models`: hyperonnx against onnxruntime's own quantizers, same models, same machine.

For every model and method: the compressed file (size, time to make it), then a fresh process per
session (hyperonnx.bench.probe) for session creation time, median batch-1 latency and peak RSS,
and the outputs on held-out data for quality. Methods run in the same order for every model, so
ratios within one run are comparable. A method that cannot handle a model keeps its row, saying why.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

import hyperonnx
from .. import models
from ..graph.allocate import DEFAULT_MAX_OUTPUT_ERROR
from .probe import measure


# --- methods -----------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> None:
    onnx.save(onnx.load(str(src)), str(dst))


def _int8_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def _int4(block_size: int) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=block_size,
                                         is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return run


def _hyperonnx(preset: str | None, **targets) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:
        # load and stream are modes of DecodeWeights models (fused ones: `hyperonnx bench runtime`)
        hyperonnx.save(hyperonnx.compress(src, preset, fuse=False, **targets), dst)
    return run


@dataclass(frozen=True)
class Method:
    name: str
    make: Callable[[Path, Path], None]
    runtime: str = "plain"  # how probe.py opens the model: plain onnxruntime, or hyperonnx load/stream


def methods(presets: list[str], rates: list[float] = (), budget_presets: list[str] = ()) -> list[Method]:
    rows = [Method("float32 (original)", _copy),
            Method("ORT int8 quantize_dynamic", _int8_dynamic),
            Method("ORT int4 MatMulNBits b32", _int4(32)),
            Method("ORT int4 MatMulNBits b128", _int4(128))]
    default = _hyperonnx(None)  # `hyperonnx compress model.onnx`: the default output budget
    rows.append(Method("hyperonnx default (load)", default, "load"))
    rows.append(Method("hyperonnx default (stream)", default, "stream"))
    for preset in budget_presets:  # another codec at the default budget, as `compress --preset P --max-output-error`
        rows.append(Method(f"hyperonnx {preset} at the default budget (load)",
                           _hyperonnx(preset, max_output_error=DEFAULT_MAX_OUTPUT_ERROR), "load"))
    for preset in presets:
        rows.append(Method(f"hyperonnx {preset} (load)", _hyperonnx(preset), "load"))
        rows.append(Method(f"hyperonnx {preset} (stream)", _hyperonnx(preset), "stream"))
    for bits in rates:  # size targets, as `compress --bits`: widths chosen on the outputs, then by weight error
        rows.append(Method(f"hyperonnx --bits {bits:g} (load)", _hyperonnx(None, bits=bits), "load"))
        rows.append(Method(f"hyperonnx --bits {bits:g} --allocation weights (load)",
                           _hyperonnx(None, bits=bits, allocation="weights"), "load"))
    return rows


# --- models ------------------------------------------------------------------------------------

def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v)).astype(np.float64) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


@dataclass
class Task:
    name: str
    model: Path
    quality_inputs: dict
    latency_inputs: dict
    score: Callable[[dict, dict], dict]  # (outputs, reference outputs) -> quality columns
    runs: int = 50
    extra: dict = field(default_factory=dict)


def digits_task() -> Task:
    model, data = models.digits_cnn()
    test = np.load(data)
    labels = test["label"]

    def score(out, _ref):
        logits = next(iter(out.values()))
        return {"accuracy": float(np.mean(logits.argmax(axis=1) == labels))}

    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    return Task("digits CNN", model, {name: test["input"]}, {name: test["input"][:1]}, score, runs=200)


def minilm_task(sentences: int = 256) -> Task:
    texts = models.sample_texts(sentences)
    ids, mask, types = models.minilm_tokenize(texts)
    quality = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    rng = np.random.default_rng(0)  # batch 1, sequence 128 for latency
    latency = {"input_ids": rng.integers(1000, 29000, (1, 128), dtype=np.int64),
               "attention_mask": np.ones((1, 128), np.int64), "token_type_ids": np.zeros((1, 128), np.int64)}

    def score(out, ref):
        e, e0 = out["sentence_embedding"].astype(np.float64), ref["sentence_embedding"].astype(np.float64)
        cos = np.sum(e * e0, axis=1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(e0, axis=1))
        upper = np.triu_indices(len(e), 1)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "spearman": _spearman((e @ e.T)[upper], (e0 @ e0.T)[upper])}

    return Task("MiniLM-L6", models.minilm(), quality, latency, score, runs=30,
                extra={"sentences": len(texts)})


def ppocr_task() -> Task:
    model, data = models.ppocr_rec()
    test = np.load(data)
    truth = [" ".join(t.split()) for t in test["text"]]

    def read(out):  # whitespace-normalised text of each line
        return [" ".join(t.split()) for t in models.ppocr_decode(next(iter(out.values())), model)]

    def score(out, ref):
        got, original = read(out), read(ref)
        return {"accuracy": float(np.mean([g == t for g, t in zip(got, truth)])),
                "agreement": float(np.mean([g == o for g, o in zip(got, original)]))}

    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    return Task("PP-OCRv4 rec", model, {name: test["input"]}, {name: test["input"][:1]}, score, runs=50,
                extra={"lines": len(truth)})


TASKS = {"digits": digits_task, "minilm": minilm_task, "ppocr": ppocr_task}


# --- running -----------------------------------------------------------------------------------

def run_task(task: Task, rows: list[Method], work: Path, log=print) -> list[dict]:
    results, reference = [], None
    original_mb = task.model.stat().st_size / 1e6
    made: dict[Callable, tuple[Path, float]] = {}  # load and stream share one compressed file
    for method in rows:
        row = {"model": task.name, "method": method.name}
        try:
            if method.make not in made:
                path = work / f"{len(made)}.onnx"
                start = time.perf_counter()
                method.make(task.model, path)
                made[method.make] = (path, time.perf_counter() - start)
            path, seconds = made[method.make]
            size_mb = path.stat().st_size / 1e6
            row.update(size_mb=size_mb, ratio=original_mb / size_mb, compress_s=seconds)
            if method is not rows[0] and row["ratio"] < 1.01:
                row["note"] = "changed no weight (none in a form this method handles)"
            probe, outputs = measure(path, task.quality_inputs, task.latency_inputs, method.runtime, task.runs)
            reference = outputs if reference is None else reference
            row.update(probe, session_rss_mb=probe["peak_rss_mb"] - probe["baseline_rss_mb"],
                       **task.score(outputs, reference))
        except Exception as error:  # the table keeps the row and says why
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        results.append(row)
        log(_format_row(row))
    return results


COLUMNS = [("size_mb", "size MB", "{:.2f}"), ("ratio", "ratio", "{:.2f}x"),
           ("accuracy", "accuracy", "{:.4f}"), ("agreement", "agree", "{:.4f}"), ("cosine_mean", "cos mean", "{:.4f}"),
           ("cosine_min", "cos min", "{:.4f}"), ("spearman", "Spearman", "{:.4f}"),
           ("compress_s", "compress s", "{:.2f}"), ("create_s", "session s", "{:.3f}"),
           ("latency_ms", "latency ms", "{:.2f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
           ("session_rss_mb", "RSS-base MB", "{:.0f}")]


def _cell(row: dict, key: str, fmt: str) -> str:
    return fmt.format(row[key]) if key in row else "–"


def _format_row(row: dict) -> str:
    cells = " ".join(f"{_cell(row, k, f):>11}" for k, _, f in COLUMNS)
    note = row.get("error", row.get("note"))
    return f"{row['model']:12} {row['method']:30} {cells}" + (f"  {note}" if note else "")


def markdown(results: list[dict]) -> str:
    lines = ["| model | method | " + " | ".join(title for _, title, _ in COLUMNS) + " | note |",
             "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in results:
        cells = " | ".join(_cell(row, k, f) for k, _, f in COLUMNS)
        lines.append(f"| {row['model']} | {row['method']} | {cells} | {row.get('error', row.get('note', ''))} |")
    return "\n".join(lines) + "\n"


QUALITY = {"digits CNN": ("accuracy", "test accuracy"), "MiniLM-L6": ("cosine_mean", "embedding cosine (mean)"),
           "PP-OCRv4 rec": ("accuracy", "lines read")}


def plot_allocation(results: list[dict], path: Path) -> None:
    """Quality against compression ratio per model: `--bits` with widths chosen on the outputs
    and by weight error, the default (output budget) as a star, the original as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in dict.fromkeys(r["model"] for r in results) if n in QUALITY]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4), dpi=120, squeeze=False)
    for ax, name in zip(axes[0], names):
        key, label = QUALITY[name]
        rows = [r for r in results if r["model"] == name and key in r and "(stream)" not in r["method"]]
        for suffix, style, legend in ((" (load)", dict(color="C3", marker="o"), "--bits B, widths on the outputs"),
                                      (" --allocation weights (load)", dict(color="C0", marker="s", linestyle="--"),
                                       "--bits B, widths by weight error")):
            points = sorted((r["ratio"], r[key]) for r in rows
                            if r["method"].startswith("hyperonnx --bits") and r["method"].endswith(suffix)
                            and (suffix != " (load)" or "--allocation" not in r["method"]))
            if points:
                ax.plot(*zip(*points), label=legend, **style)
        for r in rows:
            if r["method"] == "hyperonnx default (load)":
                ax.plot(r["ratio"], r[key], "*", color="C2", markersize=14, label="default (output budget)")
            elif r["method"] == "float32 (original)":
                ax.axhline(r[key], color="gray", linewidth=1, label="float32 original")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("compression ratio (file)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args) -> int:
    presets = args.presets if args.presets is not None else ["paper"]
    for preset in presets:
        hyperonnx.codec.resolve_config(preset)
    unknown = [m for m in args.models if m not in TASKS]
    if unknown:
        raise SystemExit(f"hyperonnx bench models: unknown model(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(TASKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    print(f"hyperonnx bench models — {os.cpu_count()} CPU(s), onnxruntime {onnxruntime.__version__}, "
          f"hyperonnx {hyperonnx.__version__}")
    print(f"{'model':12} {'method':30} " + " ".join(f"{title:>11}" for _, title, _ in COLUMNS))
    results = []
    for name in args.models:
        task = TASKS[name]()
        with tempfile.TemporaryDirectory(prefix="hyperonnx-bench-") as work:
            results += run_task(task, methods(presets, args.bits or [], args.budget_presets), Path(work))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    if args.plot:
        plot_allocation(results, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0
