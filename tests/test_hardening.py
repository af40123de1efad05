"""Issue 7, hardening: corrupted models (tests/fuzz_models.py in a child process, and the real CLI
in subprocesses), hostile DecodeWeights nodes, pathological tensors, determinism, interruption.
(The kernel's own fuzz is tests/test_kernel_fuzz.py; models beyond 2 GB are tests/test_scale.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.cli import main as cli_main
from hyperonnx.codec import winding
from hyperonnx.graph.decompress import decompress_model
from hyperonnx.graph.inspect import inspect_model
from runtime_models import decode_model, make_model

HERE = pathlib.Path(__file__).parent
PACKAGE_ROOT = pathlib.Path(hyperonnx.__file__).parent.parent  # the tests' own hyperonnx, its library beside it


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), str(HERE), env.get("PYTHONPATH")]))
    return env


# --- corrupted models -----------------------------------------------------------------------------

def run_model_fuzzer(seed: int, cases: int, tmp_path) -> dict:
    progress = tmp_path / "progress"
    try:
        child = subprocess.run([sys.executable, str(HERE / "fuzz_models.py"), "--cases", str(cases),
                                "--seed", str(seed), "--progress", str(progress)],
                               capture_output=True, text=True, timeout=900, env=child_env())
    except subprocess.TimeoutExpired:
        last = progress.read_text().split()[-1:] if progress.exists() else "?"
        pytest.fail(f"the model fuzzer hung at case {last} (reproduce: python tests/fuzz_models.py "
                    f"--seed {seed} --only {last[0] if last else 0})")
    if child.returncode not in (0, 1):
        last = progress.read_text().split()[-1:] if progress.exists() else "?"
        pytest.fail(f"the model fuzzer crashed (exit {child.returncode}) at case {last}:\n{child.stderr[-3000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["cases"] == cases
    assert report["failed"] == 0, json.dumps(report["failures"], indent=1)
    assert child.returncode == 0
    return report


def test_fuzz_models_in_child_process(tmp_path):
    report = run_model_fuzzer(0, 500, tmp_path)
    # both outcomes exercised: many corruptions refused, many still compressed; and onnxruntime
    # with the library ran many of the models (a child without the library would run none)
    assert 100 < report["compress_ok"] < 450, report
    assert 50 < report["session_ok"] < 450, report
    assert len(report["mutations"]) >= 12, report["mutations"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
def test_fuzz_models_more_seeds(seed, tmp_path):
    run_model_fuzzer(seed, 1000, tmp_path)


def test_fuzz_cli_in_subprocesses(tmp_path):
    """The real command line, each verb its own process with a timeout: a crash, a hang or a
    traceback would show here as no exit status, a signal, or 'Traceback' on stderr."""
    import fuzz_models
    bases = fuzz_models.base_models(tmp_path / "bases")
    cli = [sys.executable, "-m", "hyperonnx.cli"]
    exits = set()
    for case in range(8):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        model, reference, what = fuzz_models.make_case(bases, 7, case, folder)
        before = {p.name for p in folder.iterdir()}
        out = folder / "out.onnx"
        for argv in (["inspect", str(model)], ["compress", str(model), "-o", str(out), "-q"],
                     ["verify", str(reference), str(model), "--tolerance", "1e9", "--min-cosine", "-1"]):
            try:
                child = subprocess.run(cli + argv, capture_output=True, text=True, timeout=120, env=child_env())
            except subprocess.TimeoutExpired:
                pytest.fail(f"{argv[0]} hung on case {case} ({what})")
            exits.add(child.returncode)
            assert child.returncode in (0, 1, 2), (what, argv[0], child.returncode, child.stderr[-2000:])
            assert "Traceback" not in child.stderr, (what, child.stderr[-2000:])
            if child.returncode == 2:
                lines = child.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith(f"hyperonnx {argv[0]}: error: "), (what, lines)
            left = {p.name for p in folder.iterdir()} - before
            assert left <= ({"out.onnx"} if argv[0] == "compress" and child.returncode == 0 else set()), left
            out.unlink(missing_ok=True)
    assert 2 in exits  # some corruption was refused


def test_verify_refuses_to_generate_a_huge_input(tmp_path, capsys):
    """A corrupted input shape (10^12 elements) is a one-line error, not a 4 TB allocation."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000000, 1000000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "m.onnx"
    hyperonnx.save(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert cli_main(["verify", str(path), str(path)]) == 2
    assert "too large to generate" in capsys.readouterr().err


# --- hostile DecodeWeights nodes ------------------------------------------------------------------

def _base_seed():
    rng = np.random.default_rng(3)
    array = (rng.standard_normal((40, 30)) * 0.1).astype(np.float32)
    array[0, 0] = 2.0  # an outlier: ring classes in use
    return hyperonnx.encode(array, "paper", min_elements=1)


HOSTILE = {  # name -> (attribute changes, seed payload or None to keep, rule the error must name)
    "shape-bigger-than-seed": ({"shape": [41, 30]}, None, "rule 4"),
    "shape-smaller-than-seed": ({"shape": [10, 30]}, None, "rule 4"),
    "bits-disagree": ({"bits": 12}, None, "rule 4"),
    "points-disagree": ({"points": 16}, None, "rule 5"),
    "rings-disagree": ({"rings": 0, "ring_scales": []}, None, "rule 5"),
    "ring-scales-count": ({"ring_scales": [2.0]}, None, "rule 2"),
    "huge-shape-2^40": ({"shape": [1 << 20, 1 << 20]}, None, "rule 4"),
    "huge-shape-over-2^40": ({"shape": [1 << 21, 1 << 20]}, None, "rule 3"),
    "shape-product-overflows-int64": ({"shape": [1 << 32, 1 << 32, 2]}, None, "rule 3"),
    "shape-product-wraps-to-small": ({"shape": [1 << 62, 4, 600]}, None, "rule 3"),
    "shape-max-int64": ({"shape": [(1 << 63) - 1, (1 << 63) - 1]}, None, "rule 3"),
    "negative-dim": ({"shape": [-1, -1200]}, None, "rule 2"),
    "bits-0": ({"bits": 0}, None, "rule 2"),
    "bits-25": ({"bits": 25}, None, "rule 2"),
    "bits-negative": ({"bits": -4}, None, "rule 2"),
    "bits-2^31": ({"bits": 1 << 31}, None, "rule 2"),
    "bits-int64-max": ({"bits": (1 << 63) - 1}, None, "rule 2"),
    "points-0": ({"points": 0}, None, "rule 2"),
    "points-over-2^20": ({"points": (1 << 20) + 1}, None, "rule 2"),
    "rings-65": ({"rings": 65}, None, "rule 2"),
    "dtype-double": ({"dtype": TensorProto.DOUBLE}, None, "rule 2"),
    "side-nan": ({"side": float("nan")}, None, "rule 2"),
    "center-inf": ({"center": [float("inf"), 0.0]}, None, "rule 2"),
    "indices-beyond-codebook": ({}, "ones", "rule 5"),
    "indices-beyond-codebook-24-bits": ({"bits": 24, "shape": [4]}, bytes([0xFF] * 6), "rule 5"),
    "empty-seed-for-shape": ({}, b"", "rule 4"),
}


def hostile_model(name):
    seed = _base_seed()
    changes, payload, _rule = HOSTILE[name]
    attrs = {**seed.node_attributes(), **changes}
    if payload == "ones":
        payload = bytes([0xFF]) * seed.payload.size
    payload = np.frombuffer(payload, np.uint8) if payload is not None else seed.payload
    node = helper.make_node(fmt.OP_TYPE, ["w.seed"], ["w"], domain=fmt.OP_DOMAIN, name="hostile")
    for key, kind in fmt.ATTRIBUTE_TYPES.items():
        node.attribute.append(helper.make_attribute(key, attrs[key], attr_type=kind))
    graph = helper.make_graph([node, helper.make_node("Identity", ["w"], ["y"])], "hostile", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(payload, np.uint8), "w.seed")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)])
    return model, node, payload


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_node_reference_decoder(name):
    _model, node, payload = hostile_model(name)
    with pytest.raises(fmt.FormatError, match=HOSTILE[name][2]):
        hyperonnx.decode(fmt.seed_from_node(node, payload))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_node_graph_passes(name, tmp_path):
    model, _node, _payload = hostile_model(name)
    with pytest.raises(fmt.FormatError, match=HOSTILE[name][2]):
        decompress_model(model)
    info = inspect_model(model)  # read-only: reports what the node claims, never decodes it
    assert info["totals"]["compressed_tensors"] == 1
    # and names the rule it breaks, rules 5 and 7 (a scan of the indices) included: the one
    # validator of every path (graph/validate.py)
    problem = info["compressed"][0]["problem"]
    assert problem.startswith(HOSTILE[name][2]), problem
    assert info["totals"]["compressed_weight_bytes"] == 0  # a broken node's sizes are claims: not counted
    with pytest.raises(fmt.FormatError, match=HOSTILE[name][2]):  # compressing it again: refused too
        hyperonnx.compress(model)
    path = tmp_path / "hostile.onnx"
    hyperonnx.save(model, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli_main(["decompress", str(path), "-o", str(tmp_path / "plain.onnx")]) == 2
    assert cli_main(["compress", str(path), "-o", str(tmp_path / "again.onnx")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cli_main(["inspect", str(path)]) == 2


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_node_load_mode(name):
    model, _node, _payload = hostile_model(name)
    # rules 2-4 are checked before any buffer is allocated; rule 5 by the kernel as it decodes
    with pytest.raises((fmt.FormatError, RuntimeError), match=HOSTILE[name][2]):
        hyperonnx.InferenceSession(model, mode="load")
    # stream mode: the kernel refuses the node naming the same rule (at creation or at run), or
    # onnxruntime's type inference already does (a dtype that disagrees with the graph's)
    with pytest.raises(Exception) as error:
        hyperonnx.InferenceSession(model, mode="stream").run(None, {})
    assert not isinstance(error.value, (IndexError, KeyError, AttributeError, TypeError))
    assert HOSTILE[name][2] in str(error.value) or "type inference failed" in str(error.value)


def test_kernel_messages_are_printable():
    """A codec string or node name that is not UTF-8 reaches the error message escaped: before,
    onnxruntime's Python binding failed decoding the message (UnicodeDecodeError)."""
    model, node, _payload = hostile_model("bits-disagree")
    for attribute in node.attribute:
        if attribute.name == "codec":
            attribute.s = b"wind\xff\xfeing"
    model.graph.node[0].CopyFrom(node)
    model.graph.node[0].name = "n\u00e9"
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    with pytest.raises(Exception) as error:
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {})
    assert not isinstance(error.value, UnicodeError)
    assert "wind\\xff\\xfeing" in str(error.value) and "n\\xc3\\xa9" in str(error.value)


def test_malformed_decode_nodes():
    """No seed input, two inputs, a seed that is not uint8 or not rank 1: clear FormatErrors."""
    seed = _base_seed()
    base = decode_model({"w": seed})
    variants = []
    for edit in ("no-input", "two-inputs", "no-output", "float-seed", "rank-2-seed", "missing-seed"):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        node, init = model.graph.node[0], model.graph.initializer[0]
        if edit == "no-input":
            del node.input[:]
        elif edit == "two-inputs":
            node.input.append("w.seed")
        elif edit == "no-output":
            del node.output[:]
        elif edit == "float-seed":
            init.CopyFrom(numpy_helper.from_array(seed.payload.astype(np.float32), "w.seed"))
        elif edit == "rank-2-seed":
            init.CopyFrom(numpy_helper.from_array(seed.payload.reshape(1, -1), "w.seed"))
        else:
            init.name = "other"
        variants.append((edit, model))
    for edit, model in variants:
        with pytest.raises(fmt.FormatError):
            decompress_model(model)
        if edit not in ("missing-seed",):
            with pytest.raises(fmt.FormatError):
                inspect_model(model)


def _output_node(tensor, output):
    """Identity, or a Cast to float32 for bfloat16 (onnxruntime's Python binding returns none)."""
    if tensor.data_type == TensorProto.BFLOAT16:
        return helper.make_node("Cast", [tensor.name], [output], to=TensorProto.FLOAT)
    return helper.make_node("Identity", [tensor.name], [output])


# --- pathological tensors -------------------------------------------------------------------------

def pathological(dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    finfo = ml_dtypes.finfo(dtype)
    normal = rng.standard_normal(4096) * 0.05
    tiny = float(finfo.smallest_subnormal)
    cases = {
        "nan": np.where(rng.random(4096) < 0.01, np.nan, normal),
        "+inf": np.where(np.arange(4096) == 17, np.inf, normal),
        "-inf": np.where(np.arange(4096) == 4095, -np.inf, normal),
        "all-nan": np.full(4096, np.nan),
        "denormals": rng.integers(-40, 40, 4096) * tiny,
        "all-zero": np.zeros(4096),
        "negative-zero": np.full(4096, -0.0),
        "all-equal": np.full(4096, 0.3125),
        "all-equal-large": np.full(4096, float(finfo.max) / 2),
        "one-huge-outlier": np.where(np.arange(4096) == 99, 1e4, normal),
        "outlier-near-max": np.where(np.arange(4096) == 99, float(finfo.max) * 0.9, normal),
        "outliers-both-ends": np.where(np.arange(4096) == 5, float(finfo.max), np.where(np.arange(4096) == 6, -float(finfo.max), normal)),
        "odd-length-with-outlier": np.where(np.arange(4095) == 0, 50.0, normal[:4095]),
    }
    return {k: v.astype(dtype) for k, v in cases.items()}


DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


@pytest.mark.parametrize("preset", ["paper", "lattice"])
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_pathological_tensors_codec(dtype_name, preset):
    """Raw fallback keeps every bit (NaN payloads included); a compressed tensor decodes to finite
    values: winding within the codebook's covering radius (scaled by its ring) of the input,
    lattice within the largest magnitude of the tensor."""
    dtype = DTYPES[dtype_name]
    for name, array in pathological(dtype).items():
        seed = hyperonnx.encode(array, preset, min_elements=1)
        decoded = hyperonnx.decode(seed)
        assert decoded.dtype == array.dtype and decoded.shape == array.shape
        x = array.astype(np.float64)
        if not np.isfinite(x).all():
            assert seed.codec == "raw" and seed.attrs["reason"] == "non-finite", name
        if seed.codec == "raw":
            assert seed.attrs["reason"] in ("non-finite", "out of range", "error budget"), (name, seed.attrs)
            assert decoded.tobytes() == array.tobytes(), name  # exactly, never silently changed
            continue
        assert np.isfinite(decoded.astype(np.float64)).all(), name
        err = np.abs(decoded.astype(np.float64) - x)
        if preset == "lattice":  # group scales: no error beyond the group's largest weight
            assert (err <= 1.01 * np.abs(x).max() + float(ml_dtypes.finfo(dtype).tiny)).all(), name
            continue
        book = winding.Codebook.from_attrs(seed.attrs)
        bound = book.covering_radius() * float(book.scales.max())
        # float32 arithmetic on the centre, then rounding to the output type
        slack = 4 * 2.0**-24 * (np.abs(x) + abs(max(seed.attrs["center"], key=abs))) + \
            UNIT_ROUNDOFF[dtype_name] * (np.abs(x) + bound)
        assert (err <= bound + slack).all(), (name, float(err.max()), bound)


def test_pathological_tensors_through_the_graph_pass_and_onnxruntime():
    """In a model: raw tensors stay byte for byte, and onnxruntime with the library computes
    exactly what the reference decoder says, float16 and bfloat16 included."""
    arrays = {f"{d}/{n}": a.reshape(64, 64) for d, t in DTYPES.items() for n, a in pathological(t).items()
              if n != "odd-length-with-outlier"}
    nodes, inits, outputs = [], [], []
    for i, (name, array) in enumerate(arrays.items()):
        inits.append(numpy_helper.from_array(array, name))
        nodes.append(_output_node(inits[-1], f"y{i}"))
        outputs.append(helper.make_tensor_value_info(f"y{i}", nodes[-1].attribute[0].i if nodes[-1].attribute
                                                     else inits[-1].data_type, [64, 64]))
    model = make_model(helper.make_graph(nodes, "patho", [], outputs, inits),
                       opset_imports=[helper.make_opsetid("", 17)])
    compressed, report = hyperonnx.compress(model, min_elements=1, return_report=True)
    kept = {t.name: t for t in compressed.graph.initializer}
    raw_names = {t.name for t in report.tensors if not t.compressed}
    assert any(n.endswith("/nan") for n in raw_names) and any(n.endswith("/all-equal") for n in arrays)
    for name in raw_names:
        assert kept[name].SerializeToString() == next(t for t in inits if t.name == name).SerializeToString()
    session = hyperonnx.InferenceSession(compressed, mode="stream")
    got = session.run(None, {})
    plain = hyperonnx.decompress(compressed)
    expected = {t.name: numpy_helper.to_array(t) for t in plain.graph.initializer}
    for i, name in enumerate(arrays):
        want = np.asarray(expected[name])
        if want.dtype == ml_dtypes.bfloat16:  # onnxruntime's Python binding returns no bfloat16
            assert np.array_equal(got[i], want.astype(np.float32), equal_nan=True), name
        else:
            assert got[i].tobytes() == want.tobytes(), name


# --- determinism ----------------------------------------------------------------------------------

def _determinism_model():
    rng = np.random.default_rng(5)
    big = (rng.standard_normal((600, 500)) * 0.05).astype(np.float32)  # 150,000 pairs: 3 threaded chunks
    big[3, 3] = 1.0
    inits = [numpy_helper.from_array(big, "big"),
             numpy_helper.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float16), "half"),
             numpy_helper.from_array((rng.standard_normal(4097) * 0.1).astype(ml_dtypes.bfloat16), "bf")]
    nodes = [_output_node(t, f"y_{t.name}") for t in inits]
    outputs = [helper.make_tensor_value_info(f"y_{t.name}", TensorProto.FLOAT if t.data_type == TensorProto.BFLOAT16
                                             else t.data_type, None) for t in inits]
    return make_model(helper.make_graph(nodes, "det", [], outputs, inits),
                      opset_imports=[helper.make_opsetid("", 17)])


def test_compress_is_deterministic_across_runs_and_threads(monkeypatch, tmp_path):
    model = _determinism_model()
    outputs = set()
    for threads in (1, 2, 3, 8, 1):
        monkeypatch.setattr(winding.os, "cpu_count", lambda threads=threads: threads)
        outputs.add(hyperonnx.compress(model).SerializeToString())
    assert len(outputs) == 1
    monkeypatch.undo()
    # the CLI, twice, into files
    source = tmp_path / "m.onnx"
    hyperonnx.save(model, source)
    for out in ("a.onnx", "b.onnx"):
        assert cli_main(["compress", str(source), "-o", str(tmp_path / out), "-q"]) == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() == outputs.pop()


def test_decoding_is_deterministic_across_threads():
    compressed = hyperonnx.compress(_determinism_model())
    results = set()
    for threads in (1, 2, 4):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        for mode in ("load", "stream"):
            out = hyperonnx.InferenceSession(compressed, so if mode == "stream" else None, mode=mode).run(None, {})
            results.add(b"".join(o.tobytes() for o in out))
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
    assert len(results) == 1


# --- interruption ---------------------------------------------------------------------------------

def _big_model(path: pathlib.Path, tensors: int = 12, elements: int = 1 << 20):
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array((rng.standard_normal(elements) * 0.05).astype(np.float32), f"w{i}")
             for i in range(tensors)]
    nodes = [helper.make_node("Identity", [t.name], [f"y{i}"]) for i, t in enumerate(inits)]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(tensors)]
    hyperonnx.save(make_model(helper.make_graph(nodes, "big", [], outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)]), path)


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def interrupt_compress(folder: pathlib.Path, source: pathlib.Path, signum: int, wait_for: str) -> int:
    """Start `hyperonnx compress`, send `signum` once its progress bar shows `wait_for`; return
    the exit status. stderr is a pseudo-terminal, so the bar is drawn tensor by tensor."""
    import pty
    out = folder / "out.onnx"
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "hyperonnx.cli", "compress", str(source), "-o", str(out)],
                             stdout=subprocess.DEVNULL, stderr=follower, env=child_env())
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 300
        while wait_for.encode() not in seen:
            assert time.monotonic() < deadline, f"no {wait_for!r} in 300 s: {seen[-300:]!r}"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal: it ended
                chunk = b""
            assert chunk, f"compress ended before {wait_for!r}: {seen[-300:]!r}"
            seen += chunk
        child.send_signal(signum)
        child.wait(timeout=120)
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "Traceback" not in text, text[-2000:]
    assert text.replace("\r", "\n").strip().splitlines()[-1].strip() == "hyperonnx: interrupted", text[-500:]
    return child.returncode


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compress_leaves_nothing(signum, tmp_path):
    source = tmp_path / "big.onnx"
    _big_model(source)
    digest, before = _digest(source), sorted(p.name for p in tmp_path.iterdir())
    returncode = interrupt_compress(tmp_path, source, signum, "] 3/12 ")  # mid-run: tensor 4 of 12
    assert returncode == 128 + signum
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary
    assert _digest(source) == digest


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_while_saving(signum, tmp_path):
    """The signal lands after the last tensor, while the model is finished and written: either
    the run completes (a whole output) or it stops and leaves nothing; never a partial file."""
    source = tmp_path / "big.onnx"
    _big_model(source)
    digest, before = _digest(source), sorted(p.name for p in tmp_path.iterdir())
    returncode = interrupt_compress(tmp_path, source, signum, "] 12/12")
    after = sorted(p.name for p in tmp_path.iterdir())
    if returncode == 0:
        assert after == sorted(before + ["out.onnx"])
        onnx.checker.check_model(str(tmp_path / "out.onnx"))
    else:
        assert returncode == 128 + signum and after == before
    assert _digest(source) == digest
