"""Fuzzer of whole models, run in a child process by tests/test_hardening.py (a crash or hang there
is a test failure, not a dead pytest).

Each case corrupts a real model file (the built-in example model and the digits CNN, plain and
compressed with the winding, lattice and trellis codecs, one with external data): byte flips, random overwrites, truncations, cut or repeated
spans, and structural swaps of protobuf fields (names, dims, data types, tensor bytes, node inputs,
attributes between nodes, opset versions). The corrupted file goes through every verb of the CLI
(inspect, compress, decompress, verify: `hyperonnx.cli.main`, in process) and through the Python
API (load, compress, decompress, inspect_model, and `hyperonnx.InferenceSession` in load mode, the
library registered, with one run). Each must give a
clear error or a valid result:

- the CLI: exit 0 (or 1 for verify's "outputs differ"), or exit 2 with exactly one stderr line
  `hyperonnx VERB: error: ...`; never an exception out of `main` (the traceback a user would see);
- no partial output: after a failure, no output file and no temporary in the folder; after a
  success, the output file loads;
- the Python API raises only "clear" errors (never IndexError, KeyError, AttributeError, ...).

Every case draws from its own generator, seeded by (seed, case), so one case reproduces alone:

    python tests/fuzz_models.py --cases 500 --seed 0
    python tests/fuzz_models.py --seed 0 --only 123 --keep /tmp/case123   # one case, files kept
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.cli import main as cli_main
from hyperonnx.commands.verify import generate_inputs
from hyperonnx.graph.walk import scopes

# Exception types that mean a bug in our code, not a clear refusal of bad input.
BUG_TYPES = (IndexError, KeyError, AttributeError, TypeError, UnboundLocalError, ZeroDivisionError,
             AssertionError, RecursionError, NameError, UnicodeError)


def base_models(folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (model file, its clean uncompressed original: verify's reference)."""
    from hyperonnx.models import digits_cnn, example_model
    folder.mkdir(parents=True, exist_ok=True)
    example = folder / "example.onnx"
    hyperonnx.save(example_model(), example)
    digits = folder / "digits.onnx"
    shutil.copyfile(digits_cnn()[0], digits)
    bases = {"example": (example, example), "digits": (digits, digits)}
    for name, (path, _) in list(bases.items()):
        out = folder / f"{name}.hc.onnx"
        hyperonnx.save(hyperonnx.compress(path), out)
        bases[f"{name}.hc"] = (out, path)
    lattice = folder / "digits.lattice.onnx"  # format version 2: seeds and float16 scales
    hyperonnx.save(hyperonnx.compress(digits, "lattice"), lattice)
    bases["digits.lattice"] = (lattice, digits)
    trellis = folder / "digits.trellis.onnx"  # format version 3: trellis streams and float16 scales
    hyperonnx.save(hyperonnx.compress(digits, "trellis"), trellis)
    bases["digits.trellis"] = (trellis, digits)
    # a compressed model whose seeds live in an external-data file (the mutations hit that file)
    ext = folder / "ext" / "example.hc.onnx"
    ext.parent.mkdir()
    onnx.save_model(onnx.load(str(bases["example.hc"][0])), str(ext), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="example.hc.onnx.data", size_threshold=256)
    bases["example.hc.ext"] = (ext, example)
    return bases


# --- mutations ----------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = int(rng.integers(0, 6))
    if kind == 0:  # flip a few bits
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        return bytes(b), "flip"
    if kind == 1:  # overwrite a span with random bytes
        start = int(rng.integers(0, len(b)))
        span = rng.integers(0, 256, size=int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        b[start:start + len(span)] = span
        return bytes(b[:len(data)]), "overwrite"
    if kind == 2:  # truncate
        return bytes(b[:int(rng.integers(0, len(b)))]), "truncate"
    if kind == 3:  # cut a span out
        start = int(rng.integers(0, len(b)))
        del b[start:start + int(rng.integers(1, 64))]
        return bytes(b), "cut"
    if kind == 4:  # repeat a span
        start = int(rng.integers(0, len(b)))
        span = b[start:start + int(rng.integers(1, 64))]
        b[start:start] = span
        return bytes(b), "repeat"
    # set a span to 0xFF (varints that never end, huge lengths)
    start = int(rng.integers(0, len(b)))
    b[start:start + int(rng.integers(1, 11))] = b"\xff" * min(10, len(b) - start)
    return bytes(b[:len(data)]), "ff"


def _pick(rng, items):
    return items[int(rng.integers(0, len(items)))] if items else None


def _swap(a, b, field):
    """Swap one field (scalar or repeated) between two protobuf messages."""
    va, vb = getattr(a, field), getattr(b, field)
    if hasattr(va, "extend"):
        va, vb = list(va), list(vb)
        del getattr(a, field)[:]
        del getattr(b, field)[:]
        getattr(a, field).extend(vb)
        getattr(b, field).extend(va)
    else:
        setattr(a, field, vb)
        setattr(b, field, va)


HUGE = [0, -1, 1 << 31, 1 << 40, (1 << 62), (1 << 63) - 1, -(1 << 63), 25, 0x7FFFFFFF]


def mutate_fields(model: onnx.ModelProto, rng) -> str:
    """One structural change to the parsed model; returns what it did."""
    graphs = [s.graph for s in scopes(model)]
    graph = _pick(rng, graphs)
    inits = list(graph.initializer)
    nodes = list(graph.node)
    decoders = [n for g in graphs for n in g.node if n.op_type == fmt.OP_TYPE]
    kind = int(rng.integers(0, 12))
    if kind == 0 and len(inits) >= 2:
        a, b = rng.choice(len(inits), 2, replace=False)
        field = _pick(rng, ["name", "dims", "data_type", "raw_data"])
        _swap(inits[a], inits[b], field)
        return f"swap-initializer-{field}"
    if kind == 1 and len(nodes) >= 2:
        a, b = rng.choice(len(nodes), 2, replace=False)
        field = _pick(rng, ["input", "output", "op_type", "domain", "attribute"])
        _swap(nodes[a], nodes[b], field)
        return f"swap-node-{field}"
    if kind == 2 and len(decoders) >= 2:  # one attribute between two DecodeWeights nodes
        a, b = rng.choice(len(decoders), 2, replace=False)
        name = _pick(rng, list(fmt.ATTRIBUTE_TYPES))
        ia = next((x for x in decoders[a].attribute if x.name == name), None)
        ib = next((x for x in decoders[b].attribute if x.name == name), None)
        if ia is not None and ib is not None:
            tmp = onnx.AttributeProto()
            tmp.CopyFrom(ia)
            ia.CopyFrom(ib)
            ib.CopyFrom(tmp)
        return f"swap-decoder-{name}"
    if kind == 3 and decoders:  # an extreme value in one DecodeWeights attribute
        node = _pick(rng, decoders)
        attribute = _pick(rng, list(node.attribute))
        if attribute.type == onnx.AttributeProto.INT:
            attribute.i = int(_pick(rng, HUGE))
        elif attribute.type == onnx.AttributeProto.INTS:
            del attribute.ints[:]
            attribute.ints.extend(int(_pick(rng, HUGE)) for _ in range(int(rng.integers(0, 4))))
        elif attribute.type == onnx.AttributeProto.FLOAT:
            attribute.f = float(_pick(rng, [0.0, -1.0, float("nan"), float("inf"), 1e30]))
        elif attribute.type == onnx.AttributeProto.FLOATS:
            del attribute.floats[:]
            attribute.floats.extend([float("nan")] * int(rng.integers(0, 4)))
        else:
            attribute.s = b"\xff\xfe"
        return f"extreme-{attribute.name}"
    if kind == 4 and nodes:  # a node loses its inputs or outputs
        node = _pick(rng, nodes)
        del (node.input if rng.integers(0, 2) else node.output)[:]
        return "drop-node-ends"
    if kind == 5 and inits:  # an initializer disappears
        graph.initializer.remove(_pick(rng, inits))
        return "drop-initializer"
    if kind == 6 and inits:  # huge or negative dims
        t = _pick(rng, inits)
        if t.dims:
            t.dims[int(rng.integers(0, len(t.dims)))] = int(_pick(rng, HUGE))
        else:
            t.dims.append(int(_pick(rng, HUGE)))
        return "dims"
    if kind == 7 and inits:  # a data type that does not match the bytes
        t = _pick(rng, inits)
        t.data_type = int(_pick(rng, [0, 1, 2, 7, 8, 10, 11, 16, 17, 21, 99]))
        return "data-type"
    if kind == 8 and model.opset_import:
        opset = _pick(rng, list(model.opset_import))
        opset.version = int(_pick(rng, [0, 1, 2, 7, 13, 17, 18, 99, -1]))
        return f"opset-{opset.domain or 'onnx'}"
    if kind == 9 and graph.input and graph.output:  # graph input and output types swapped
        _swap(graph.input[0], graph.output[0], "type")
        return "swap-io-type"
    if kind == 10 and inits:  # a tensor claims external data that is not there / escapes the folder
        t = _pick(rng, inits)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        entry = t.external_data.add()
        entry.key, entry.value = "location", _pick(rng, ["missing.bin", "../../etc/passwd", "/etc/passwd", ""])
        return "external"
    if nodes:  # the node order reversed (consumers before producers)
        ordered = list(reversed(nodes))
        del graph.node[:]
        graph.node.extend(ordered)
        return "reverse-nodes"
    return "none"


def make_case(bases: dict, seed: int, case: int, folder: Path) -> tuple[Path, Path, str]:
    """Write case `case`'s corrupted model into `folder`; return (model, reference, mutation)."""
    rng = np.random.default_rng([seed, case])
    name = sorted(bases)[int(rng.integers(0, len(bases)))]
    source, reference = bases[name]
    for extra in source.parent.iterdir():  # external-data files travel with the model
        if extra.name.startswith(source.name) and extra != source:
            shutil.copyfile(extra, folder / extra.name)
    target = folder / source.name
    data = source.read_bytes()
    whats = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.integers(0, 2):
            data, what = mutate_bytes(data, rng)
        else:
            try:
                model = onnx.load_from_string(data)
                what = mutate_fields(model, rng)
                data = model.SerializeToString()
            except Exception:  # noqa: BLE001 - an earlier byte mutation made it unparsable
                data, what = mutate_bytes(data, rng)
        whats.append(what)
    data_files = [p for p in folder.iterdir() if p.name.endswith(".data")]
    if data_files and rng.integers(0, 2):  # corrupt the external data instead of / as well as the model
        data_file = data_files[0]
        corrupted, what = mutate_bytes(data_file.read_bytes(), rng)
        data_file.write_bytes(corrupted)
        whats.append(f"data-{what}")
    target.write_bytes(data)
    return target, reference, f"{name}:" + "+".join(whats)


# --- running the entry points ----------------------------------------------------------------------

def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(argv)
        except BaseException as error:  # noqa: BLE001 - what escapes main is the traceback a user sees
            return None, out.getvalue(), f"{type(error).__name__}: {error}"
    return rc, out.getvalue(), err.getvalue()


def check_cli(verb: str, argv: list[str], output: Path | None, folder: Path, before: set[str]) -> str | None:
    """None if the verb behaved; else what went wrong."""
    rc, out, err = run_cli([verb, *argv])
    if rc is None:
        return f"{verb}: exception escaped main: {err[:300]}"
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 2:
        if len(lines) != 1 or not lines[0].startswith(f"hyperonnx {verb}: error: "):
            return f"{verb}: exit 2 without a one-line error: {lines[:3]}"
    elif rc == 1 and verb == "verify":
        if not lines or not lines[-1].startswith("hyperonnx verify: outputs differ"):
            return f"verify: exit 1 without its message: {lines[:3]}"
    elif rc != 0:
        return f"{verb}: exit {rc}: {lines[:3]}"
    if any("Traceback" in line for line in lines):
        return f"{verb}: traceback on stderr"
    left = {p.name for p in folder.iterdir()} - before
    if output is not None:
        if rc == 0:
            if output.name not in left:
                return f"{verb}: exit 0 but no output file"
            try:
                onnx.load(str(output))
            except Exception as error:  # noqa: BLE001
                return f"{verb}: output does not load: {str(error)[:200]}"
        elif output.name in left:
            return f"{verb}: failed but left {output.name}"
    strays = {n for n in left if output is None or not n.startswith(output.name)}
    if strays:
        return f"{verb}: left {sorted(strays)} behind"
    return None


def check_api(path: Path) -> tuple[list[str], dict]:
    """The Python API: load, compress, decompress, inspect_model, and InferenceSession in load
    mode with one run: each a clear error or a result. Returns the problems and each call's
    outcome ("ok", "refused" or "failed")."""
    def session():
        model = onnx.load(str(path), load_external_data=False)
        hyperonnx.InferenceSession(str(path), mode="load").run(None, generate_inputs(model))

    calls = {"compress": lambda: hyperonnx.compress(path), "decompress": lambda: hyperonnx.decompress(path),
             "inspect_model": lambda: hyperonnx.inspect_model(hyperonnx.load(path)), "InferenceSession": session}
    problems, outcome = [], {}
    for name, call in calls.items():
        try:
            call()
            outcome[name] = "ok"
        except BUG_TYPES as error:
            problems.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
            outcome[name] = "failed"
        except Exception:  # noqa: BLE001 - onnxruntime's and our own errors: a refusal
            outcome[name] = "refused"
    return problems, outcome


def run_case(bases: dict, seed: int, case: int, folder: Path) -> tuple[str, list[str], dict]:
    model, reference, what = make_case(bases, seed, case, folder)
    failures, outcome = [], {}
    before = {p.name for p in folder.iterdir()}
    steps = [("inspect", ["--json", str(model)], None),
             ("compress", [str(model), "-o", str(folder / "out.hc.onnx"), "-q"], folder / "out.hc.onnx"),
             ("decompress", [str(model), "-o", str(folder / "out.plain.onnx"), "-q"], folder / "out.plain.onnx"),
             ("verify", [str(reference), str(model), "--tolerance", "1e9", "--min-cosine", "-1"], None)]
    for verb, argv, output in steps:
        problem = check_cli(verb, argv, output, folder, before)
        outcome[verb] = "failed" if problem else ("ok" if output is None or output.exists() else "refused")
        if problem:
            failures.append(problem)
        if output is not None and output.exists():
            output.unlink()
            for extra in folder.glob(output.name + ".*"):
                extra.unlink()
    problems, api_outcome = check_api(model)
    failures.extend(problems)
    return what, failures, {**outcome, **api_outcome}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, help="run this one case")
    parser.add_argument("--keep", help="write the cases here and keep them")
    parser.add_argument("--progress", help="append the number of each case to this file as it starts")
    args = parser.parse_args(argv)
    import onnxruntime
    onnxruntime.set_default_logger_severity(4)  # refusals are expected; keep the log quiet
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hyperonnx-fuzz-"))
    bases = base_models(work / "bases")
    cases = [args.only] if args.only is not None else range(args.cases)
    # compress_ok / session_ok: cases compressed, and run in onnxruntime with the library
    counts = {"cases": 0, "clean": 0, "failed": 0, "compress_ok": 0, "session_ok": 0, "mutations": {}}
    failures = []
    start = time.perf_counter()
    for case in cases:
        if args.progress:
            with open(args.progress, "a") as fh:
                fh.write(f"{case}\n")
        folder = work / f"case{case}"
        folder.mkdir()
        what, problems, outcome = run_case(bases, args.seed, case, folder)
        counts["cases"] += 1
        counts["compress_ok"] += outcome.get("compress") == "ok"
        counts["session_ok"] += outcome.get("InferenceSession") == "ok"
        for part in what.split(":", 1)[1].split("+"):
            key = part.split("-")[0] if part.startswith(("swap", "extreme", "data")) else part
            counts["mutations"][key] = counts["mutations"].get(key, 0) + 1
        if problems:
            counts["failed"] += 1
            failures.append({"case": case, "mutation": what, "problems": problems})
        else:
            counts["clean"] += 1
        if not args.keep:
            shutil.rmtree(folder)
    counts["seconds"] = round(time.perf_counter() - start, 2)
    if not args.keep:
        shutil.rmtree(work)
    # one line, the last: onnxruntime's Python binding prints "EP Error" notes on stdout too
    print(json.dumps({**counts, "failures": failures[:30]}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
