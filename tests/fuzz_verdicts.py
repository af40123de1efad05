"""One verdict on every path: malformed compressed models (docs/FORMAT.md rules 1-9 broken one at a
time, or not at all) through every way a user runs or reads them, run in a child process by
tests/test_hardening.py.

Each variant is a small compressed model (MatMul, Gemm, Gather and Conv weights; the winding,
lattice and trellis codecs; fused operators or plain DecodeWeights nodes) with one change to a
node's attributes, its seed or scales, a fused operator's `op_` attributes or the model's
`ai.hyperonnx` opset. The paths:

- the CLI verbs (in process): inspect, compress (of the compressed model), decompress, verify with
  the library and verify --no-library;
- the Python API: hyperonnx.InferenceSession in load and stream mode (one run), decompress,
  inspect_model;
- raw onnxruntime with the library registered (one run), and plain onnxruntime through the
  model-local function (one run; where the model carries one).

The verdict each path gives (accepted / refused) must be the validator's (graph/validate.py), with
no crash (a child that dies is a failure), no hang (the parent's timeout) and bounded memory: the
process's peak RSS may not grow by more than RSS_SLACK over the run (a variant whose claimed
sizes made any path allocate would show here; the variants' files are a few KB).

Known limits of plain onnxruntime (library or function) are counted apart ("blind", see `blind`),
not as disagreements; so are models the rules accept whose every run fails ("misfit": a shape that
no longer fits the graph).

    python tests/fuzz_verdicts.py                 # every variant
    python tests/fuzz_verdicts.py --sample 60     # an even sample (every mutation kind and base)
    python tests/fuzz_verdicts.py --only 17 --keep /tmp/v17
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.cli import main as cli_main
from hyperonnx.graph.samples import generate_inputs
from hyperonnx.graph.validate import check_model

BUG_TYPES = (IndexError, KeyError, AttributeError, TypeError, UnboundLocalError, ZeroDivisionError,
             AssertionError, RecursionError, NameError, UnicodeError, MemoryError)
RSS_SLACK_MB = 300  # peak RSS growth allowed over the whole run (onnxruntime's own arenas included)


def base_model(opset: int = 17) -> onnx.ModelProto:
    """x [1, 1, 8, 8] -> Conv (W0 [4, 1, 3, 3]) -> Flatten -> MatMul (W1 [256, 32]) -> Gemm (W2
    [32, 16], transB 0) + a Gather of ids [2] in E [50, 16]: every fused operator."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32))

    inits = [w(4, 1, 3, 3), w(256, 32), w(32, 16), w(50, 16), w(16)]
    for t, name in zip(inits, ("W0", "W1", "W2", "E", "b2")):
        t.name = name
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "W1"], ["h"]),
             helper.make_node("Gemm", ["h", "W2", "b2"], ["y"]),
             helper.make_node("Gather", ["E", "ids"], ["e"])]
    graph = helper.make_graph(nodes, "verdicts",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16]),
                               helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def compressed_bases() -> dict[str, onnx.ModelProto]:
    original = base_model()
    bases = {}
    for preset, kwargs in (("paper", {}), ("lattice", {"target_sqnr": 30}), ("trellis", {"target_sqnr": 30})):
        for fuse in (True, False):
            bases[f"{preset}{'' if fuse else '-nofuse'}"] = hyperonnx.compress(
                original, preset, min_elements=16, fuse=fuse, **kwargs)
    return bases


# --- mutations: (kind, function(model) -> None) ---------------------------------------------------

def _ours(model):
    return [n for n in model.graph.node if n.domain == fmt.OP_DOMAIN]


def _init(model, name):
    return next((t for t in model.graph.initializer if t.name == name), None)


def _set_attr(node, name, value, kind=None):
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value, attr_type=kind))


def _attr_kind(node, name):
    return next((a.type for a in node.attribute if a.name == name), None)


INT_VALUES = [0, -1, 1, 2, 3, 7, 8, 15, 16, 17, 24, 25, 1 << 31, 1 << 62]
FLOAT_VALUES = [0.0, -1.0, float("nan"), float("inf"), 1e30, 2.0 ** 101]
CODEC_ATTRS = ("bits", "points", "rings", "center", "side", "ring_scales", "generator", "group", "alpha", "beta",
               "scale_unit", "window", "shape", "dtype", "codec")


def mutations(model: onnx.ModelProto) -> list[tuple[str, object]]:
    """Every mutation that applies to `model` (each a one-rule change, or a legal one)."""
    out = []
    nodes = _ours(model)
    for n_index, node in enumerate(nodes):
        names = [a.name for a in node.attribute]

        def at(fn, n_index=n_index):
            return lambda m: fn(_ours(m)[n_index], m)

        for name in names:
            kind = _attr_kind(node, name)
            if name not in CODEC_ATTRS:
                continue
            if kind == AttributeProto.INT:
                for v in INT_VALUES:
                    out.append((f"{name}={v}", at(lambda n, m, name=name, v=v: _set_attr(n, name, v, AttributeProto.INT))))
            elif kind == AttributeProto.FLOAT:
                for v in FLOAT_VALUES:
                    out.append((f"{name}={v}", at(lambda n, m, name=name, v=v: _set_attr(n, name, v, AttributeProto.FLOAT))))
            elif kind == AttributeProto.INTS:  # shape
                shape = [a.ints for a in node.attribute if a.name == name][0]
                for label, v in (("empty", []), ("zero", [0]), ("negative", [-1, 5]), ("2^41", [1 << 41]),
                                 ("plus1", list(shape[:-1]) + [shape[-1] + 1]),
                                 ("minus1", list(shape[:-1]) + [shape[-1] - 1]),
                                 ("doubled", list(shape) + [2]), ("huge-wrap", [1 << 62, 4, 600])):
                    out.append((f"{name}-{label}", at(lambda n, m, name=name, v=v: _set_attr(n, name, v, AttributeProto.INTS))))
            elif kind == AttributeProto.FLOATS:
                for label, v in (("empty", []), ("nan", [float("nan")] * 2), ("long", [0.1] * 7)):
                    out.append((f"{name}-{label}", at(lambda n, m, name=name, v=v: _set_attr(n, name, v, AttributeProto.FLOATS))))
            elif kind == AttributeProto.STRING:
                for v in ("bogus", "winding", "lattice", "trellis", ""):
                    out.append((f"codec={v or 'empty'}", at(lambda n, m, v=v: _set_attr(n, "codec", v, AttributeProto.STRING))))
            out.append((f"drop-{name}", at(lambda n, m, name=name: _set_attr(n, name, None))))
            out.append((f"mistype-{name}", at(lambda n, m, name=name, kind=kind: _set_attr(
                n, name, "x" if kind != AttributeProto.STRING else 3,
                AttributeProto.STRING if kind != AttributeProto.STRING else AttributeProto.INT))))
        out.append(("unknown-attribute", at(lambda n, m: _set_attr(n, "hyper", 1, AttributeProto.INT))))
        seed_position = 1 if node.op_type != fmt.OP_TYPE else 0

        def seed_edit(fn, n_index=n_index, seed_position=seed_position):
            def apply(m):
                node = _ours(m)[n_index]
                t = _init(m, node.input[seed_position])
                fn(t, node, m)
            return apply

        def payload(t):
            return numpy_helper.to_array(t)

        def set_payload(t, array):
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), t.name))

        out += [("seed-short", seed_edit(lambda t, n, m: set_payload(t, payload(t)[:-1]))),
                ("seed-long", seed_edit(lambda t, n, m: set_payload(t, np.concatenate([payload(t), [0]]).astype(np.uint8)))),
                ("seed-empty", seed_edit(lambda t, n, m: set_payload(t, payload(t)[:0]))),
                ("seed-ff", seed_edit(lambda t, n, m: set_payload(t, np.full_like(payload(t), 0xFF)))),
                ("seed-random", seed_edit(lambda t, n, m: set_payload(
                    t, np.random.default_rng(len(payload(t))).integers(0, 256, payload(t).size).astype(np.uint8)))),
                ("seed-int8", seed_edit(lambda t, n, m: set_payload(t, payload(t).view(np.int8)))),
                ("seed-rank2", seed_edit(lambda t, n, m: set_payload(t, payload(t).reshape(1, -1)))),
                ("seed-computed", seed_edit(lambda t, n, m: setattr(t, "name", t.name + ".gone")))]
        if len(node.input) > seed_position + 1 and node.input[seed_position + 1]:
            def scales_edit(fn, n_index=n_index, seed_position=seed_position):
                def apply(m):
                    node = _ours(m)[n_index]
                    fn(_init(m, node.input[seed_position + 1]), node, m)
                return apply
            out += [("scales-short", scales_edit(lambda t, n, m: set_payload(t, payload(t)[:-1]))),
                    ("scales-long", scales_edit(lambda t, n, m: set_payload(t, np.concatenate([payload(t), payload(t)[:1]])))),
                    ("scales-nan", scales_edit(lambda t, n, m: set_payload(t, np.where(np.arange(payload(t).size) == 0, np.float16("nan"), payload(t))))),
                    ("scales-inf", scales_edit(lambda t, n, m: set_payload(t, np.full_like(payload(t), np.inf)))),
                    ("scales-float32", scales_edit(lambda t, n, m: set_payload(t, payload(t).astype(np.float32)))),
                    ("scales-dropped", lambda m, n_index=n_index, p=seed_position: _drop_input(_ours(m)[n_index], p + 1))]
        if node.op_type in fmt.FUSED_OPS:
            for label, name, value, kind in (
                    ("op_group=0", "op_group", 0, AttributeProto.INT), ("op_group=3", "op_group", 3, AttributeProto.INT),
                    ("op_group=-1", "op_group", -1, AttributeProto.INT),
                    ("op_pads-negative", "op_pads", [-1, 0, 0, 0], AttributeProto.INTS),
                    ("op_pads-3", "op_pads", [1, 1, 1], AttributeProto.INTS),
                    ("op_strides=0", "op_strides", [0, 1], AttributeProto.INTS),
                    ("op_dilations-empty", "op_dilations", [], AttributeProto.INTS),
                    ("op_kernel_shape-wrong", "op_kernel_shape", [5, 5], AttributeProto.INTS),
                    ("op_auto_pad-bogus", "op_auto_pad", "BOGUS", AttributeProto.STRING),
                    ("op_transB=2", "op_transB", 2, AttributeProto.INT), ("op_transA=1", "op_transA", 1, AttributeProto.INT),
                    ("op_axis=1", "op_axis", 1, AttributeProto.INT),
                    ("accuracy_level=1", "accuracy_level", 1, AttributeProto.INT),
                    ("accuracy_level=4", "accuracy_level", 4, AttributeProto.INT),
                    ("accuracy_level=100", "accuracy_level", 100, AttributeProto.INT),
                    ("op_unknown", "op_bogus", 1, AttributeProto.INT)):
                relevant = {"DecodeConv": ("op_group", "op_pads", "op_strides", "op_dilations", "op_kernel_shape", "op_auto_pad"),
                            "DecodeGemm": ("op_transB", "op_transA", "accuracy_level"),
                            "DecodeMatMul": ("accuracy_level",), "DecodeGather": ("op_axis",)}[node.op_type]
                if name in relevant or name == "op_bogus":
                    out.append((label, at(lambda n, m, name=name, value=value, kind=kind: _set_attr(n, name, value, kind))))
    for v in (0, 1, 2, 3, 5, 99):
        out.append((f"opset={v}", lambda m, v=v: _set_opset(m, v)))
    out.append(("opset-missing", lambda m: _set_opset(m, None)))
    out.append(("unchanged", lambda m: None))
    return out


def _drop_input(node, position):
    inputs = list(node.input)
    inputs[position] = ""
    while inputs and inputs[-1] == "":
        inputs.pop()
    del node.input[:]
    node.input.extend(inputs)


def _set_opset(model, version):
    keep = [o for o in model.opset_import if o.domain != fmt.OP_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    if version is not None:
        model.opset_import.append(helper.make_opsetid(fmt.OP_DOMAIN, version))


def variants(bases: dict) -> list[tuple[str, str, object]]:
    """(base name, mutation kind, apply) for every base and mutation, in a fixed order."""
    out = []
    for name in sorted(bases):
        for kind, apply in mutations(bases[name]):
            out.append((name, kind, apply))
    return out


# --- paths ----------------------------------------------------------------------------------------

def _quiet_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return rc, lines


def run_paths(path: Path, original: Path, feeds: dict, has_function: bool, folder: Path) -> dict:
    """path name -> "ok", "refused" or "bug: ..." for one model file."""
    import onnxruntime as ort
    lib = hyperonnx.get_library_path()
    results = {}

    def cli(name, argv, output=None):
        try:
            rc, lines = _quiet_cli(argv)
        except BaseException as error:  # noqa: BLE001 - what escapes main is a traceback
            results[name] = f"bug: {type(error).__name__}: {str(error)[:200]}"
            return
        if rc == 2 and (len(lines) != 1 or ": error: " not in lines[0]):
            results[name] = f"bug: exit 2 without one error line: {lines[:3]}"
        elif rc in (0, 1):
            results[name] = "ok"
        elif rc == 2:
            results[name] = "refused"
        else:
            results[name] = f"bug: exit {rc}"
        if output is not None:
            if rc == 2 and output.exists():
                results[name] = "bug: refused but wrote the output"
            for p in folder.glob(output.name + "*"):
                p.unlink()

    cli("inspect", ["inspect", "--json", str(path)])
    cli("compress", ["compress", str(path), "-o", str(folder / "again.onnx"), "-q", "--preset", "lattice",
                     "--target-sqnr", "30"], folder / "again.onnx")
    cli("decompress", ["decompress", str(path), "-o", str(folder / "plain.onnx"), "-q"], folder / "plain.onnx")
    cli("verify", ["verify", str(original), str(path), "--tolerance", "1e9", "--min-cosine", "-1"])
    if has_function:
        cli("verify --no-library", ["verify", str(original), str(path), "--tolerance", "1e9", "--min-cosine", "-1",
                                    "--no-library"])

    def api(name, call):
        try:
            call()
            results[name] = "ok"
        except BUG_TYPES as error:
            results[name] = f"bug: {type(error).__name__}: {str(error)[:200]}"
        except Exception:  # noqa: BLE001 - a refusal: ours or onnxruntime's
            results[name] = "refused"

    def raw(library: bool):
        so = ort.SessionOptions()
        so.log_severity_level = 4
        if library:
            so.register_custom_ops_library(lib)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)

    api("InferenceSession load", lambda: hyperonnx.InferenceSession(str(path), mode="load").run(None, feeds))
    api("InferenceSession stream", lambda: hyperonnx.InferenceSession(str(path), mode="stream").run(None, feeds))
    api("decompress()", lambda: hyperonnx.decompress(str(path)))

    def inspect_api():
        info = hyperonnx.inspect_model(hyperonnx.load(str(path)))
        if info["invalid"]:
            raise fmt.FormatError(info["invalid"][0]["problem"])
    api("inspect_model()", inspect_api)
    api("onnxruntime + library", lambda: raw(True))
    if has_function:
        api("onnxruntime, function", lambda: raw(False))
    return results


RAW_PATHS = ("onnxruntime + library", "onnxruntime, function", "verify --no-library")
FUNCTION_PATHS = ("onnxruntime, function", "verify --no-library")
RUN_PATHS = RAW_PATHS + ("verify", "InferenceSession load", "InferenceSession stream")


def blind(path: str, message: str) -> str | None:
    """Why plain onnxruntime cannot give the validator's refusal on this path, or None:
    - "opset": it cannot see the model's opset imports (rules 1 and 8);
    - "attributes": a kernel reads attributes by name and cannot list them (an unknown one; a
      mistyped op_ attribute it reads as the default), and the function ignores undeclared ones;
    - "function defaults": the one winding / lattice body gives each codec's own attributes
      defaults, so a missing one reads as its default;
    - "scales count": the body reads `scales` through LayerNormalization's optional input, whose
      shape it cannot see: one value (or none, for one group) broadcasts instead of failing."""
    if path not in RAW_PATHS:
        return None
    if message.startswith(("rule 1:", "rule 8:")):
        return "opset"
    if "unknown attribute" in message or "unknown or mistyped attribute" in message:
        return "attributes"  # the kernel reads op_ attributes by name, a mistyped one as its default
    if path in FUNCTION_PATHS and "lacks attribute" in message:
        return "function defaults"
    if path in FUNCTION_PATHS and (message.startswith(("rule 6: scales holds 0 ", "rule 6: scales holds 1 "))
                                   or "needs two inputs: seed and scales" in message):
        return "scales count"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, help="run this many variants, evenly spaced (default: all)")
    parser.add_argument("--only", type=int, help="run this one variant")
    parser.add_argument("--keep", help="write the variants here and keep them")
    parser.add_argument("--progress", help="append each variant's number to this file as it starts")
    args = parser.parse_args(argv)
    import onnxruntime
    onnxruntime.set_default_logger_severity(4)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hyperonnx-verdicts-"))
    work.mkdir(parents=True, exist_ok=True)
    original = work / "original.onnx"
    hyperonnx.save(base_model(), original)
    feeds = generate_inputs(base_model())
    bases = compressed_bases()
    every = variants(bases)
    chosen = list(range(len(every)))
    if args.only is not None:
        chosen = [args.only]
    elif args.sample and args.sample < len(every):  # evenly over the whole list: every base
        chosen = sorted({int(i) for i in np.linspace(0, len(every) - 1, args.sample)})
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = {"variants": 0, "variants_total": len(every), "refused": 0, "accepted": 0, "paths": {},
              "agree": 0, "blind": {}, "disagreements": [], "bugs": [], "kinds": set(), "bases": set()}
    start = time.perf_counter()
    for index in chosen:
        base_name, kind, apply = every[index]
        if args.progress:
            with open(args.progress, "a") as fh:
                fh.write(f"{index}\n")
        model = onnx.ModelProto()
        model.CopyFrom(bases[base_name])
        apply(model)
        folder = work / f"v{index}"
        folder.mkdir(exist_ok=True)
        path = folder / "model.onnx"
        path.write_bytes(model.SerializeToString())
        try:
            check_model(onnx.load(str(path)))
            expected, message = "ok", ""
        except Exception as error:  # noqa: BLE001
            expected, message = "refused", str(error)
        has_function = any(f.domain == fmt.OP_DOMAIN and f.name == fmt.OP_TYPE for f in model.functions)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results = run_paths(path, original, feeds, has_function, folder)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
        if grew > 20:
            counts.setdefault("rss_jumps", []).append({"variant": index, "base": base_name, "kind": kind,
                                                       "mb": round(grew, 1), "file_kb": path.stat().st_size // 1024})
        counts["variants"] += 1
        counts[{"ok": "accepted", "refused": "refused"}[expected]] += 1
        counts["kinds"].add(kind)
        counts["bases"].add(base_name)
        one = True
        # a model the rules accept whose runs all fail (a shape that no longer fits the graph:
        # onnxruntime's refusal, not the format's) is counted apart
        misfit = expected == "ok" and all(results.get(p) == "refused" for p in RUN_PATHS if p in results)
        counts["misfit"] = counts.get("misfit", 0) + misfit
        for name, verdict in results.items():
            counts["paths"][name] = counts["paths"].get(name, 0) + 1
            if verdict.startswith("bug"):
                counts["bugs"].append({"variant": index, "base": base_name, "kind": kind, "path": name, "what": verdict})
                one = False
            elif verdict != expected:
                why = blind(name, message) if expected == "refused" else None
                if why:
                    counts["blind"][why] = counts["blind"].get(why, 0) + 1
                    continue
                if misfit and name in RUN_PATHS:
                    continue
                counts["disagreements"].append({"variant": index, "base": base_name, "kind": kind, "path": name,
                                                "expected": expected, "got": verdict, "rule": message[:120]})
                one = False
        counts["agree"] += one
        if not args.keep:
            shutil.rmtree(folder)
    counts["seconds"] = round(time.perf_counter() - start, 1)
    counts["peak_rss_growth_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_start, 1)
    counts["kinds"] = len(counts["kinds"])
    counts["bases"] = len(counts["bases"])
    counts["path_runs"] = sum(counts["paths"].values())
    if not args.keep:
        shutil.rmtree(work)
    failed = counts["bugs"] or counts["disagreements"] or counts["peak_rss_growth_mb"] > RSS_SLACK_MB
    counts["disagreement_count"] = len(counts["disagreements"])
    counts["disagreements"] = counts["disagreements"][:40]
    print(json.dumps(counts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
