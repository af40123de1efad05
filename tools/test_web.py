#!/usr/bin/env python3
"""`make test-web`: compressed models in onnxruntime-web (npm, WASM) under Node against Python.

The digits CNN and all-MiniLM-L6-v2 (hyperonnx.models) are compressed with hyperonnx.compress's
default (lattice widths for the default output budget); onnxruntime-web knows nothing of our
library, so it runs them through the model-local ONNX function that defines DecodeWeights with
standard operators. Each output is compared with hyperonnx.InferenceSession (Python onnxruntime
with the library) on the same inputs; the float32 originals run too, for the session time and memory they are measured against. Every model
runs in a Node process of its own (tools/web/run_model.mjs, one WASM thread): session creation
time, one run, peak RSS (and the RSS of Node with onnxruntime-web loaded and the file read);
`--repeat N` runs each N times and reports medians. onnxruntime-web is installed into build/web/
with npm.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "web"
ORT_WEB = "onnxruntime-web@1.30.0"
TOLERANCE = {"digits CNN": 1e-4, "MiniLM-L6": 1e-4}  # float32 kernels of two runtimes, same weights


def install_ort_web() -> pathlib.Path:
    prefix = OUT / "npm"
    if not (prefix / "node_modules" / "onnxruntime-web" / "package.json").exists():
        subprocess.run(["npm", "install", "--silent", "--no-save", "--prefix", str(prefix), ORT_WEB], check=True)
    return prefix / "node_modules"


def save(name: str, array: np.ndarray) -> dict:
    path = OUT / f"{name}.bin"
    np.ascontiguousarray(array).tofile(path)
    return {"file": str(path), "dtype": str(array.dtype), "shape": list(array.shape)}


def cases():
    import onnxruntime

    import hyperonnx
    from hyperonnx import models

    digits_path, digits_data = models.digits_cnn()
    digits_input = np.load(digits_data)["input"][:32]
    ids, mask, types = models.minilm_tokenize(models.sample_texts(8))
    minilm_inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    minilm_path = models.minilm()
    for label, path, inputs in (("digits CNN", digits_path, {"input": digits_input}),
                                ("MiniLM-L6", minilm_path, minilm_inputs)):
        compressed = OUT / (path.stem + ".hc.onnx")
        hyperonnx.save(hyperonnx.compress(str(path)), str(compressed))
        reference = hyperonnx.InferenceSession(str(compressed), mode="load")
        names = [o.name for o in reference.get_outputs()]
        yield label, "hyperonnx default", compressed, inputs, dict(zip(names, reference.run(None, inputs)))
        original = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        yield label, "float32 (original)", path, inputs, dict(zip(names, original.run(None, inputs)))


def run_node(manifest_path: pathlib.Path, node_modules: pathlib.Path) -> dict:
    child = subprocess.run(["node", str(ROOT / "tools" / "web" / "run_model.mjs"), str(manifest_path)],
                           capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin:/usr/local/bin", "ORT_WEB_PREFIX": str(node_modules)})
    if child.returncode != 0:
        raise RuntimeError(f"node failed on {manifest_path}:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="Node runs per model (medians reported)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    node_modules = install_ort_web()
    rows, failed = [], False
    for index, (label, variant, model, inputs, expected) in enumerate(cases()):
        manifest = {"model": str(model),
                    "inputs": {k: save(f"{index}-in-{k}", v) for k, v in inputs.items()},
                    "outputs": {k: save(f"{index}-out-{k}", v) for k, v in expected.items()}}
        manifest_path = OUT / f"{index}.json"
        manifest_path.write_text(json.dumps(manifest))
        runs = [run_node(manifest_path, node_modules) for _ in range(args.repeat)]
        result = {key: statistics.median(r[key] for r in runs) for key in ("session_s", "run_ms", "peak_rss_mb",
                                                                           "baseline_rss_mb")}
        worst = max(max(r["max_abs_diff"].values()) for r in runs)
        ok = worst <= TOLERANCE[label]
        failed |= not ok
        rows.append((label, variant, model.stat().st_size / 1e6, result, worst, ok))
    print(f"onnxruntime-web {ORT_WEB.split('@')[1]} (WASM, 1 thread), Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, medians of {args.repeat}")
    print("| model | weights | file MB | session s | run ms | peak RSS MB | RSS before the session MB | max abs diff vs Python | |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, variant, size, r, worst, ok in rows:
        print(f"| {label} | {variant} | {size:.2f} | {r['session_s']:.2f} | {r['run_ms']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} | {worst:.2e} | {'ok' if ok else 'FAILED'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
