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


# --- issue 21: external data from untrusted files ------------------------------------------------

def _external_model(folder: pathlib.Path, entries: dict, name: str = "m.onnx") -> pathlib.Path:
    """A model whose one weight W [32] claims external data with these entries (a Relu of it)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = TensorProto(name="W", dims=[32], data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
    for key, value in entries.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Relu", ["W"], ["y"])], "ext", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32])], [w])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


SECRET = np.arange(32, dtype=np.float32) * 1e-3 + 1234.5  # 32 floats no output may ever hold


def _secret_folder(tmp_path) -> pathlib.Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(SECRET.tobytes())
    return outside


def _leaks(folder: pathlib.Path) -> list[str]:
    """Files under `folder` that hold the secret's bytes."""
    needle = SECRET.tobytes()[:64]
    return [str(p) for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and "outside" not in p.parts
            and needle in p.read_bytes()]


def test_basepath_from_a_file_is_never_trusted(tmp_path):
    """Issue 21: a file carrying onnx's `basepath` key (the one our own code once wrote) does not
    decide where its external data is read from: through the Python API (ModelProto or path) and
    the CLI alike, no byte of the file outside the model's folder reaches an output."""
    outside = _secret_folder(tmp_path)
    path = _external_model(tmp_path / "model", {"location": "secret.bin", "basepath": str(outside),
                                                "length": str(SECRET.nbytes)})
    proto = onnx.load(str(path), load_external_data=False)
    out = tmp_path / "model" / "out.onnx"
    calls = {"compress": lambda: hyperonnx.compress(proto, min_elements=1),
             "compress+base_dir": lambda: hyperonnx.compress(proto, min_elements=1, base_dir=path.parent),
             "save": lambda: hyperonnx.save(proto, out),
             "save+base_dir": lambda: hyperonnx.save(proto, out, base_dir=path.parent),
             "decompress": lambda: hyperonnx.decompress(proto),
             "InferenceSession": lambda: hyperonnx.InferenceSession(proto).run(None, {}),
             "load": lambda: hyperonnx.load(path), "compress(path)": lambda: hyperonnx.compress(path)}
    for name, call in calls.items():
        with pytest.raises(hyperonnx.ModelIOError):
            call()
            pytest.fail(f"{name} read the external data")
    hyperonnx.inspect_model(proto)  # reads no tensor data at all (only seeds, and this has none)
    for argv in (["compress", str(path), "-o", str(out), "--min-elements", "1"], ["inspect", str(path)],
                 ["decompress", str(path), "-o", str(out)], ["verify", str(path), str(path)]):
        assert cli_main(argv) == 2, argv
    assert _leaks(tmp_path) == []


def test_modelproto_external_data_needs_its_folder(tmp_path, monkeypatch):
    """Issue 21: a ModelProto's external data is not looked up relative to the working directory;
    without base_dir it is a clear error, with it the same result as from the path."""
    outside = _secret_folder(tmp_path)
    folder = tmp_path / "model"
    path = _external_model(folder, {"location": "secret.bin", "length": str(SECRET.nbytes)})
    proto = onnx.load(str(path), load_external_data=False)
    monkeypatch.chdir(outside)  # where secret.bin is: once the working directory decided
    for call in (lambda: hyperonnx.compress(proto, min_elements=1), lambda: hyperonnx.save(proto, tmp_path / "o.onnx"),
                 lambda: hyperonnx.decompress(proto), lambda: hyperonnx.InferenceSession(proto)):
        with pytest.raises(hyperonnx.ModelIOError, match="base_dir"):
            call()
    # the model's own data beside it, given its folder: read from there only
    own = np.linspace(-1, 1, 32, dtype=np.float32)
    (folder / "secret.bin").write_bytes(own.tobytes())
    compressed = hyperonnx.compress(proto, "paper", min_elements=1, base_dir=folder)
    assert compressed.SerializeToString() == hyperonnx.compress(path, "paper", min_elements=1).SerializeToString()
    saved = hyperonnx.save(proto, tmp_path / "o.onnx", base_dir=folder)
    assert np.array_equal(numpy_helper.to_array(onnx.load(str(saved)).graph.initializer[0]), own)
    assert not any(e.key != "location" for t in proto.graph.initializer for e in t.external_data
                   if e.key not in ("location", "length"))  # the caller's model left as it was
    got = hyperonnx.InferenceSession(proto, base_dir=folder).run(None, {})[0]
    assert np.array_equal(got, np.maximum(own, 0))
    assert _leaks(tmp_path) == []


@pytest.mark.parametrize("layout", ["dotdot", "absolute", "symlink-file", "symlink-folder"])
def test_external_data_escapes_are_refused_everywhere(layout, tmp_path):
    outside = _secret_folder(tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"dotdot": "../outside/secret.bin", "absolute": str(outside / "secret.bin"),
                "symlink-file": "link.bin", "symlink-folder": "sub/secret.bin"}[layout]
    if layout == "symlink-file":
        (folder / "link.bin").symlink_to(outside / "secret.bin")
    elif layout == "symlink-folder":
        (folder / "sub").symlink_to(outside)
    path = _external_model(folder, {"location": location})
    proto = onnx.load(str(path), load_external_data=False)
    for call in (lambda: hyperonnx.load(path), lambda: hyperonnx.load(path, load_external_data=False),
                 lambda: hyperonnx.compress(proto, min_elements=1, base_dir=folder),
                 lambda: hyperonnx.save(proto, tmp_path / "o.onnx", base_dir=folder),
                 lambda: hyperonnx.InferenceSession(proto, base_dir=folder)):
        with pytest.raises(hyperonnx.ModelIOError):
            call()
    for argv in (["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--min-elements", "1"],
                 ["decompress", str(path), "-o", str(tmp_path / "o.onnx")], ["inspect", str(path)]):
        assert cli_main(argv) == 2
    assert _leaks(tmp_path) == []


# --- issue 21: one validator, every path ----------------------------------------------------------

def run_verdict_fuzzer(tmp_path, *args) -> dict:
    progress = tmp_path / "progress"
    try:
        child = subprocess.run([sys.executable, str(HERE / "fuzz_verdicts.py"), *args, "--progress", str(progress)],
                               capture_output=True, text=True, timeout=3600, env=child_env())
    except subprocess.TimeoutExpired:
        last = progress.read_text().split()[-1:] if progress.exists() else ["?"]
        pytest.fail(f"the verdict fuzzer hung at variant {last[0]} (python tests/fuzz_verdicts.py --only {last[0]})")
    if child.returncode not in (0, 1):
        last = progress.read_text().split()[-1:] if progress.exists() else ["?"]
        pytest.fail(f"the verdict fuzzer crashed (exit {child.returncode}) at variant {last[0]}:\n{child.stderr[-3000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["bugs"] == [], json.dumps(report["bugs"][:10], indent=1)
    assert report["disagreements"] == [], json.dumps(report["disagreements"][:10], indent=1)
    assert report["peak_rss_growth_mb"] < 300, report["peak_rss_growth_mb"]
    assert child.returncode == 0
    return report


def test_one_verdict_on_every_path(tmp_path):
    """Issue 21: malformed compressed models (every base and many mutation kinds, sampled; the
    full sweep: HYPERONNX_FUZZ_FULL=1 or `make fuzz`) give the validator's verdict on every path:
    the CLI verbs, the sessions, raw onnxruntime with the library and plain onnxruntime through the
    function; no crash, no hang, bounded memory."""
    full = os.environ.get("HYPERONNX_FUZZ_FULL")
    report = run_verdict_fuzzer(tmp_path, *([] if full else ["--sample", "100"]))
    assert report["variants"] >= (report["variants_total"] if full else 100)
    # an evenly spaced sample of 100: the kinds it meets depend on how many nodes each base has
    assert report["bases"] == 6 and report["kinds"] >= (60 if full else 50), report
    assert report["refused"] > 50 and report["accepted"] >= 3, report
    assert len(report["paths"]) == 11 and min(report["paths"].values()) == report["variants"], report["paths"]


def _variant(base: str, kind: str) -> onnx.ModelProto:
    import fuzz_verdicts
    bases = fuzz_verdicts.compressed_bases()
    for name, k, apply in fuzz_verdicts.variants(bases):
        if name == base and k == kind:
            model = onnx.ModelProto()
            model.CopyFrom(bases[base])
            apply(model)
            return model
    raise KeyError((base, kind))


def _plain_ort(model: onnx.ModelProto):
    import fuzz_verdicts
    so = ort.SessionOptions()
    so.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, generate_inputs_for_fuzz(fuzz_verdicts))


def generate_inputs_for_fuzz(fuzz_verdicts):
    from hyperonnx.graph.samples import generate_inputs
    return generate_inputs(fuzz_verdicts.base_model())


FUNCTION_FINDINGS = [("paper", "codec=bogus"), ("lattice", "codec=bogus"), ("trellis", "codec=bogus"),
                     ("paper-nofuse", "seed-short"), ("lattice-nofuse", "seed-short"), ("paper", "seed-empty"),
                     ("lattice", "bits=17"), ("lattice", "bits=24"), ("lattice", "generator=8"),
                     ("trellis", "window=0"), ("trellis", "window=1"), ("trellis", "window=3"),
                     ("trellis", "window=-1"), ("paper", "side=0.0"), ("paper", "side=nan"),
                     ("paper-nofuse", "seed-int8"), ("lattice", "accuracy_level=1")]


@pytest.mark.parametrize("base,kind", FUNCTION_FINDINGS)
def test_function_fallback_refuses_what_the_rules_refuse(base, kind):
    """Issue 21: these ran to completion in plain onnxruntime (the model-local function) although
    FORMAT.md refuses them; now the function fails the graph, as the validator does."""
    from hyperonnx.graph.validate import check_model
    model = _variant(base, kind)
    with pytest.raises(fmt.FormatError):
        check_model(model)
    with pytest.raises(Exception) as error:
        _plain_ort(model)
    assert not isinstance(error.value, (MemoryError,))
    assert "Gather" in str(error.value) or "BitShift" in str(error.value) or "Type" in str(error.value) \
        or "type" in str(error.value), str(error.value)[:300]


_RSS_CHILD = r"""
import resource, sys, onnx, onnxruntime as ort, numpy as np
sys.path.insert(0, sys.argv[2])
so = ort.SessionOptions(); so.log_severity_level = 4
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
    s.run(None, {"x": np.zeros((1, 1, 8, 8), np.float32), "ids": np.zeros(2, np.int64)})
    print("ran")
except Exception as e:
    print("refused")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("base,kind", [("lattice", "bits=24"), ("trellis", "window=-1"),
                                       ("paper-nofuse", f"points={1 << 62}"), ("lattice-nofuse", "shape-2^41"),
                                       ("trellis", "group=16"), ("paper-nofuse", "rings=25")])
def test_function_fallback_allocates_nothing_from_an_unchecked_size(base, kind, tmp_path):
    """Issue 21: lattice bits 24 and trellis window -1 peaked at 1.7 GB in plain onnxruntime from a
    62 KB model; every size the function allocates from is now read through its rule check."""
    try:
        model = _variant(base, kind)
    except KeyError:
        pytest.skip(f"no variant {kind} of {base}")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    child = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(HERE)], capture_output=True, text=True,
                           timeout=300, env=child_env())
    verdict, grew_mb = child.stdout.split()[-2:]
    assert verdict == "refused", child.stdout
    assert int(grew_mb) < 100 + 50 * path.stat().st_size / 1e6, (grew_mb, path.stat().st_size)


@pytest.mark.parametrize("version", [0, 1, 5, 99, None])
def test_verify_applies_rule_1_like_every_path(version, tmp_path):
    """Issue 21: verify passed models importing ai.hyperonnx version 0, 1, 5, 99 or none, which
    InferenceSession and inspect refuse."""
    import fuzz_verdicts
    model = _variant("lattice", "opset-missing" if version is None else f"opset={version}")
    path, original = tmp_path / "m.onnx", tmp_path / "o.onnx"
    path.write_bytes(model.SerializeToString())
    hyperonnx.save(fuzz_verdicts.base_model(), original)
    for argv in (["verify", str(original), str(path)], ["verify", str(original), str(path), "--no-library"],
                 ["inspect", str(path)], ["decompress", str(path), "-o", str(tmp_path / "p.onnx")]):
        assert cli_main(argv) == 2, argv
    with pytest.raises(fmt.FormatError, match="rule 1|rule 8"):
        hyperonnx.InferenceSession(str(path))


@pytest.mark.parametrize("base,kind,rule", [("lattice-nofuse", "seed-ff", "rule 7"), ("paper-nofuse", "seed-ff", "rule 5"),
                                            ("paper", "op_group=0", "rule 9"), ("paper", "op_group=3", "rule 9"),
                                            ("lattice", "accuracy_level=1", "rule 9"),
                                            ("lattice", "accuracy_level=100", "rule 9"),
                                            ("trellis", "op_pads-negative", "rule 9"),
                                            ("trellis", "op_unknown", "rule 9"), ("lattice", "shape-minus1", "rule")])
def test_inspect_and_decompress_apply_rules_5_7_9(base, kind, rule, tmp_path, capsys):
    """Issue 21: inspect exited 0 on models breaking rules 5, 7 and 9 (every step 2^b - 1, op group
    0, accuracy_level 1/2/100), and decompress wrote them into plain ONNX with the invalid
    attributes carried over (Conv group 0, negative pads)."""
    from hyperonnx.graph.validate import check_model
    model = _variant(base, kind)
    try:
        check_model(model)
        pytest.skip("this variant follows the rules")  # shape-minus1 of some nodes: a legal shape
    except fmt.FormatError as error:
        assert rule in str(error)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli_main(["inspect", str(path)]) == 2
    assert rule in capsys.readouterr().err
    assert cli_main(["decompress", str(path), "-o", str(tmp_path / "plain.onnx")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(fmt.FormatError, match=rule):
        hyperonnx.decompress(model)


def test_inspect_does_not_trust_declared_sizes(tmp_path, capsys):
    """Issue 21: inspect said "4398.05 GB" for a 32 KB file whose tensor claims 2^40 elements, and
    compress failed with numpy's text naming no tensor."""
    graph = helper.make_graph([helper.make_node("Relu", ["W"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.zeros(8192, np.float32), "W")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.initializer[0].dims[:] = [1 << 20, 1 << 20]
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert cli_main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["raw_float_bytes"] <= 32768
    assert cli_main(["compress", str(path), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "tensor W" in err and len(err.strip().splitlines()) == 1, err


# --- issue 21: sample inputs are untrusted input ---------------------------------------------------

def _mlp_file(tmp_path) -> pathlib.Path:
    from graph_models import mlp
    path = tmp_path / "mlp.onnx"
    hyperonnx.save(mlp(), path)
    return path


def _cli_one_line(argv, capsys) -> tuple[int, str]:
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    if rc == 2:
        assert len(err) == 1, err
    return rc, err[-1] if err else ""


@pytest.mark.parametrize("fault", ["nan", "inf", "empty"])
def test_nan_inf_and_empty_inputs_are_refused_naming_the_input(fault, tmp_path, capsys):
    path = _mlp_file(tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    if fault == "nan":
        x[1, 3] = np.nan
    elif fault == "inf":
        x[0, 0] = -np.inf
    else:
        x = x[:0]
    np.savez(tmp_path / "in.npz", x=x)
    for argv in (["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--inputs", str(tmp_path / "in.npz")],
                 ["verify", str(path), str(path), "--inputs", str(tmp_path / "in.npz")]):
        rc, line = _cli_one_line(argv, capsys)
        assert rc == 2 and "'x'" in line and ("NaN or Inf" in line if fault != "empty" else "empty" in line), line
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(ValueError, match="'x'"):
        hyperonnx.compress(path, inputs={"x": x})


def test_inputs_size_limit_is_read_from_the_headers(tmp_path, capsys):
    """Issue 21: a 1 MB npz expanding to 1 GB was read whole (onnxruntime's arena then failed); the
    limit is checked from the arrays' headers, before anything is decompressed."""
    path = _mlp_file(tmp_path)
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((1 << 22, 64), np.float32))  # 1 GiB of zeros, ~1 MB
    assert (tmp_path / "big.npz").stat().st_size < 4 << 20
    start = time.perf_counter()
    rc, line = _cli_one_line(["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--inputs",
                              str(tmp_path / "big.npz")], capsys)
    assert rc == 2 and "beyond the limit of 64 MiB" in line and "--max-inputs-mb" in line, line
    assert time.perf_counter() - start < 20
    assert not (tmp_path / "o.onnx").exists() and not list(tmp_path.glob(".o.onnx*"))
    rc, line = _cli_one_line(["verify", str(path), str(path), "--inputs", str(tmp_path / "big.npz"),
                              "--max-inputs-mb", "16"], capsys)
    assert rc == 2 and "beyond the limit of 16 MiB" in line


def test_pickled_inputs_are_refused_without_advice_to_load_them(tmp_path, capsys):
    path = _mlp_file(tmp_path)
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    rc, line = _cli_one_line(["verify", str(path), str(path), "--inputs", str(tmp_path / "p.npz")], capsys)
    assert rc == 2 and "pickled" in line and "unsafe" not in line.lower() and "allow_pickle" not in line, line


def test_large_feeds_run_in_batches(tmp_path):
    """Issue 21: a 256 MB --inputs array was fed in one piece (the OOM killer ended compress at
    23.7 GB); a feed beyond samples.FEED_BYTES is split along its symbolic batch axis."""
    from graph_models import mlp
    from hyperonnx.graph import samples
    model = mlp()
    x = np.ones((100_000, 64), np.float32)  # 25.6 MB
    feeds = samples.as_feeds({"x": x}, model)
    assert len(feeds) >= 3 and all(f["x"].nbytes <= samples.FEED_BYTES for f in feeds)
    assert sum(f["x"].shape[0] for f in feeds) == 100_000
    np.savez(tmp_path / "in.npz", x=x)
    parts = samples.load_inputs(tmp_path / "in.npz", model, max_bytes=64 << 20)
    assert len(parts) == len(feeds)


def test_user_inputs_that_cannot_run_stop_the_run(tmp_path, capsys):
    """Issue 21: when the user's inputs could not be run, compress silently used the weight
    planner instead; now it says so and stops."""
    path = _mlp_file(tmp_path)
    np.savez(tmp_path / "in.npz", x=np.ones((2, 64), np.float32))
    from hyperonnx.graph import allocate

    class Broken(Exception):
        pass
    original = allocate.allocate

    def cannot_run(*args, **kwargs):
        raise allocate.CannotRun("onnxruntime cannot run the model on the sample inputs: arena allocation failed")
    allocate.allocate = cannot_run
    try:
        rc, line = _cli_one_line(["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--inputs",
                                  str(tmp_path / "in.npz")], capsys)
    finally:
        allocate.allocate = original
    assert rc == 2 and "sample inputs cannot be run" in line, line
    assert not (tmp_path / "o.onnx").exists()


def test_missed_budget_writes_nothing_unless_asked(tmp_path, capsys, monkeypatch):
    path = _mlp_file(tmp_path)
    from hyperonnx.graph import allocate
    original = allocate.allocate

    def missed(*args, **kwargs):
        chosen, allocation = original(*args, **kwargs)
        allocation.met = False
        return chosen, allocation
    monkeypatch.setattr(allocate, "allocate", missed)
    out = tmp_path / "o.onnx"
    rc, line = _cli_one_line(["compress", str(path), "-o", str(out), "-q", "--max-output-error", "0.05"], capsys)
    assert rc == 2 and "budget is missed" in line and "--allow-missed-budget" in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]
    assert cli_main(["compress", str(path), "-o", str(out), "-q", "--max-output-error", "0.05",
                     "--allow-missed-budget"]) == 0
    assert out.exists()


# --- issue 21: re-runs, arguments, messages, signals ----------------------------------------------

def test_reruns_over_an_earlier_external_data_output(tmp_path):
    """Issue 21: with o.onnx.data left by an earlier run, compress and decompress failed after all
    the work ("would overwrite the input's o.onnx.data")."""
    from graph_models import mlp
    source = tmp_path / "m.onnx"
    onnx.save_model(mlp(), str(source), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    for verb, out in (("compress", tmp_path / "o.onnx"), ("decompress", tmp_path / "p.onnx")):
        target = source if verb == "compress" else tmp_path / "o.onnx"
        for _ in range(2):
            assert cli_main([verb, str(target), "-o", str(out), "-q"]) == 0
            assert (out.parent / (out.name + ".data")).exists()
            onnx.checker.check_model(str(out))
    # an output whose .data is the very file the input reads from: refused before any work
    import shutil
    shutil.copyfile(tmp_path / "o.onnx", tmp_path / "q.onnx")  # reads o.onnx.data
    digest = _digest(tmp_path / "o.onnx.data")
    assert cli_main(["decompress", str(tmp_path / "q.onnx"), "-o", str(tmp_path / "o.onnx"), "-q"]) == 2
    assert _digest(tmp_path / "o.onnx.data") == digest


@pytest.mark.parametrize("argv", [
    ["compress", "{m}", "--max-output-error", "5"], ["compress", "{m}", "--max-output-error", "nan"],
    ["compress", "{m}", "--target-sqnr", "-5"], ["compress", "{m}", "--min-elements", "-1"],
    ["compress", "{m}", "--bits", "0"], ["compress", "{m}", "--bits", "inf"], ["compress", "{m}", "--max-inputs-mb", "0"],
    ["verify", "{m}", "{m}", "--tolerance", "-1"], ["verify", "{m}", "{m}", "--tolerance", "nan"],
    ["verify", "{m}", "{m}", "--min-cosine", "2"], ["example", "--tolerance", "-1"],
    ["bench", "runtime", "--repeat", "0"], ["bench", "codec", "--gaussian", "-5"]])
def test_numeric_options_are_range_checked(argv, tmp_path, capsys):
    path = _mlp_file(tmp_path)
    rc, line = _cli_one_line([a.format(m=path) for a in argv], capsys)
    assert rc == 2 and ": error: argument " in line and ("out of range" in line or "finite" in line), line


@pytest.mark.parametrize("bits", ["1", "17", "40"])
def test_bits_beyond_the_codecs_reach_are_refused(bits, tmp_path, capsys):
    path = _mlp_file(tmp_path)
    rc, line = _cli_one_line(["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--bits", bits], capsys)
    assert rc == 2 and "beyond the lattice codec's reach" in line and "bits/weight" in line, line
    assert not (tmp_path / "o.onnx").exists()


def test_nothing_eligible_only_when_true(tmp_path, capsys):
    path = _mlp_file(tmp_path)
    out = tmp_path / "o.onnx"
    assert cli_main(["compress", str(path), "-o", str(out), "--exclude", "*"]) == 0
    err = capsys.readouterr().err
    assert "matched by --exclude" in err and "nothing eligible" not in err, err
    assert cli_main(["compress", str(path), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert cli_main(["compress", str(out), "-o", str(tmp_path / "again.onnx")]) == 0
    err = capsys.readouterr().err
    assert "already compressed" in err, err


def test_python_m_hyperonnx_and_a_closed_pipe(tmp_path):
    path = _mlp_file(tmp_path)
    child = subprocess.run([sys.executable, "-m", "hyperonnx", "--version"], capture_output=True, text=True,
                           env=child_env(), timeout=120)
    assert child.returncode == 0 and child.stdout.startswith("hyperonnx ")
    # `inspect ... | head -1`: the reader goes away; no "Broken pipe" error, no exit 2
    pipeline = subprocess.run(f"{sys.executable} -m hyperonnx inspect -v {path} | head -c 10; exit ${{PIPESTATUS[0]}}",
                              shell=True, executable="/bin/bash", capture_output=True, text=True, env=child_env(),
                              timeout=120)
    assert pipeline.returncode == 0 and pipeline.stderr == "", pipeline.stderr


def test_sigint_at_any_time_is_one_line_and_exit_130(tmp_path):
    """Issue 21: SIGINT during the imports printed a 14-40 line traceback (and once a segfault);
    now, whenever it comes: one line, exit 130, nothing left behind."""
    path = _mlp_file(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    outcomes = set()
    for delay in (0.02, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2):
        child = subprocess.Popen([sys.executable, "-m", "hyperonnx", "decompress", str(path), "-o",
                                  str(tmp_path / "p.onnx"), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=child_env(), text=True)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
        if "Traceback" in err and "hyperonnx" not in err or "init_import_site" in err:
            continue  # the interpreter's own start-up (site, runpy), before any hyperonnx code runs
        outcomes.add(child.returncode)
        assert child.returncode in (0, 130), (delay, child.returncode, err[-2000:])
        assert "Traceback" not in err, err[-2000:]
        if child.returncode == 130:
            assert err.strip().splitlines() == ["hyperonnx: interrupted"], err
        (tmp_path / "p.onnx").unlink(missing_ok=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert 130 in outcomes


def test_our_own_binding_key_in_a_file_is_not_trusted(tmp_path):
    """Even this process's own (secret, per-process) binding key, written into a file by onnx.save
    and pointed outside, is dropped when the file is read (hyperonnx.load, bytes to a session)."""
    from hyperonnx.graph import model_io
    outside = _secret_folder(tmp_path)
    folder = tmp_path / "model"
    path = _external_model(folder, {"location": "secret.bin", model_io._BASE_KEY: str(outside)})
    with pytest.raises(hyperonnx.ModelIOError):
        hyperonnx.load(path, load_external_data=False)
    with pytest.raises(hyperonnx.ModelIOError):
        hyperonnx.InferenceSession(path.read_bytes())
    assert _leaks(tmp_path) == []
