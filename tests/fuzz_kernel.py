"""Differential fuzzer of the DecodeWeights CPU kernel, run in a child process by
tests/test_kernel_fuzz.py (a crash or hang there is a test failure, not a dead pytest).

Each case corrupts a valid node of any codec (seed bytes, seed length, the lattice and trellis
codecs' scales, attribute values, attribute types, missing attributes, the input count), runs it through
onnxruntime with the library, and compares with the
reference decoder: when onnxruntime succeeds the reference must accept the node and produce the
same bytes; when onnxruntime fails the reference must reject it too.

Fused cases (--fused-cases) put such a node's seed and attributes in a fused operator
(docs/FORMAT.md §8: DecodeMatMul, DecodeGemm, DecodeGather, DecodeConv) fed an activation that
fits the weight or not: onnxruntime must succeed exactly when the reference accepts the seed, the
weight is float32 of a rank the operator takes and the activation fits it, and then agree with
DecodeWeights' weight + the standard operator (tests/fused_models.py's bound; Gather bit for bit).
MatMul and Gemm cases also set accuracy_level: 4 (int8 compute, held to FORMAT.md §8.2's bound),
0, or a value the kernel must refuse.

    python tests/fuzz_kernel.py --cases 2000 --fused-cases 600 --seed 0
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time

import ml_dtypes
import numpy as np
import onnxruntime as ort
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from fused_models import int8_bound, reference as fused_reference, run as fused_run
from runtime_models import make_model

INTS = [-(1 << 63), -(1 << 40), -1, 0, 1, 2, 3, 4, 7, 8, 10, 11, 16, 23, 24, 25, 63, 64, 65, 1000, 1600,
        (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 24, 1 << 31, (1 << 40) - 1, 1 << 40, (1 << 40) + 1,
        (1 << 63) - 1, 5, 6, 15, 17, 127, 128, 255, 4095, 65534, 65535, 65536]
FLOATS = [0.0, -0.0, 1e-45, 1e-38, 1e-30, 0.1, 0.8, 1.0, -1.0, 2.0, 1e10, 3.4e38, float("inf"),
          float("-inf"), float("nan"), -3.0]
LIST_KINDS = {"shape": AttributeProto.INTS, "center": AttributeProto.FLOATS, "ring_scales": AttributeProto.FLOATS}


def base_seeds(rng):
    seeds = []
    for preset in hyperonnx.PRESETS:
        for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
            shape = [(5, 7), (33,), (4, 4, 3), (2,), (1,), (300,)][len(seeds) % 6]
            array = rng.standard_normal(shape) * 0.05
            array.flat[0] = 1.5  # an outlier: rings
            try:
                seed = hyperonnx.encode(array.astype(dtype), preset, min_elements=1)
            except ValueError:  # a bits/weight target below what one scale costs a tiny tensor
                continue
            if seed.codec != "raw":
                seeds.append(seed)
    for shape in ((16, 12), (4, 2, 3, 3)):  # matrices and a convolution kernel, for the fused operators
        for preset in ("paper", "lattice"):
            seeds.append(hyperonnx.encode((rng.standard_normal(shape) * 0.05).astype(np.float32), preset, min_elements=1))
    for bits, group in ((2, 2), (5, 6), (16, 4)):  # lattice seeds at other widths and groups
        config = hyperonnx.LatticeConfig(index_bits=bits, group=group)
        seeds.append(hyperonnx.encode((rng.standard_normal(41) * 0.05).astype(np.float32), config, min_elements=1))
    for k, window, group in ((1, 8, 8), (3, 16, 16), (8, 8, 8)):  # trellis seeds at other widths and groups
        config = hyperonnx.TrellisConfig(index_bits=k, window=window, memory=0, group=group)
        seeds.append(hyperonnx.encode((rng.standard_normal(41) * 0.05).astype(np.float32), config, min_elements=1))
    # matrices whose groups line up with the int8 kernel's tiles and blocks (accuracy_level 4):
    # lattice at 5, 8 (the VBMI loop) and 12 bits (the gather), trellis; K not a multiple of 32
    for shape, config in (((48, 64), hyperonnx.LatticeConfig(index_bits=5, group=64)),
                          ((70, 64), hyperonnx.LatticeConfig(index_bits=8, group=64)),
                          ((40, 80), hyperonnx.LatticeConfig(index_bits=12, group=80)),
                          ((64, 160), hyperonnx.LatticeConfig(index_bits=8, group=32)),
                          ((32, 96), hyperonnx.TrellisConfig(index_bits=3, window=10, memory=0, group=32))):
        seeds.append(hyperonnx.encode((rng.standard_normal(shape) * 0.05).astype(np.float32), config, min_elements=1))
    return seeds


def build(attrs: list[tuple[str, object, int]], payload: np.ndarray, scales: np.ndarray | None):
    inputs = [numpy_helper.from_array(payload, "s")]
    if scales is not None:
        inputs.append(numpy_helper.from_array(scales, "c"))
    node = helper.make_node(fmt.OP_TYPE, ["s", "c"][:len(inputs)], ["w"], domain=fmt.OP_DOMAIN, name="fuzz")
    for name, value, kind in attrs:
        node.attribute.append(helper.make_attribute(name, value, attr_type=kind))
    declared = next((value for name, value, kind in attrs if name == "dtype" and kind == AttributeProto.INT
                     and value in fmt.OUTPUT_DTYPES), TensorProto.FLOAT)
    graph = helper.make_graph([node], "fuzz", [], [helper.make_tensor_value_info("w", declared, None)], inputs)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)])
    return model, node


def mutate(seed: hyperonnx.Seed, rng) -> tuple[list, np.ndarray, np.ndarray | None, str]:
    values = seed.node_attributes()
    attrs = [[name, values[name], kind] for name, kind in fmt.attribute_types(seed.codec).items()]
    payload = np.array(seed.payload, dtype=np.uint8)
    scales = None if seed.scales is None else np.array(seed.scales, dtype=np.float16)
    what = []
    for _ in range(int(rng.integers(1, 4))):
        choice = int(rng.integers(0, 12 if scales is not None else 11))
        if choice == 10:  # the input count: a lattice node without scales, a winding node with some
            scales = None if scales is not None else np.ones(int(rng.integers(0, 4)), np.float16)
            what.append("inputs")
            continue
        if choice == 11:  # the scales: Inf/NaN bit patterns, flipped bits, another length
            bits = scales.view(np.uint16)
            kind = int(rng.integers(0, 3))
            if kind == 0 and bits.size:
                bits[rng.integers(0, bits.size)] = int(rng.choice([0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x0000, 0x8001]))
            elif kind == 1 and bits.size:
                bits[rng.integers(0, bits.size)] ^= np.uint16(1 << int(rng.integers(0, 16)))
            else:
                scales = np.resize(scales, max(0, scales.size + int(rng.choice([-1, 1, 5])))).astype(np.float16)
            what.append("scales")
            continue
        if choice <= 2 and payload.size:  # flip bytes of the seed
            for _ in range(int(rng.integers(1, 4))):
                payload[rng.integers(0, payload.size)] ^= np.uint8(1 << int(rng.integers(0, 8)))
            what.append("flip")
        elif choice == 3 and payload.size:  # every byte 0xFF: indices at the top of the range
            payload[:] = 0xFF
            what.append("ones")
        elif choice == 4:  # resize the seed
            size = max(0, payload.size + int(rng.choice([-3, -1, 1, 2, 100])))
            payload = np.resize(payload, size).astype(np.uint8)
            what.append("resize")
        elif choice == 5:  # drop an attribute
            attrs.pop(int(rng.integers(0, len(attrs))))
            what.append("drop")
        elif choice == 6:  # change an attribute's type
            i = int(rng.integers(0, len(attrs)))
            name = attrs[i][0]
            kind = int(rng.choice([AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.INTS,
                                   AttributeProto.FLOATS, AttributeProto.STRING]))
            value = {AttributeProto.INT: 3, AttributeProto.FLOAT: 0.5, AttributeProto.INTS: [3, 1],
                     AttributeProto.FLOATS: [0.5, 0.25], AttributeProto.STRING: seed.codec}[kind]
            attrs[i] = [name, value, kind]
            what.append(f"type:{name}")
        else:  # change an attribute's value
            i = int(rng.integers(0, len(attrs)))
            name, _, kind = attrs[i]
            if kind == AttributeProto.INT:
                value = int(rng.choice(INTS))
            elif kind == AttributeProto.FLOAT:
                value = float(rng.choice(FLOATS))
            elif kind == AttributeProto.STRING:
                value = str(rng.choice(["", "winding ", "WINDING", "raw", "w\u00e9", "winding", "lattice"]))
            elif kind == AttributeProto.INTS:
                value = [int(rng.choice(INTS)) for _ in range(int(rng.integers(0, 4)))]
            else:
                value = [float(rng.choice(FLOATS)) for _ in range(int(rng.integers(0, 4)))]
            attrs[i] = [name, value, kind]
            what.append(f"value:{name}")
    return attrs, payload, scales, "+".join(what)


def reference(node, payload, scales):
    """(bytes, None) or (None, reason): what the reference decoder makes of the node."""
    try:
        seed = fmt.seed_from_node(node, payload, scales)
        fmt.validate(seed)  # before decode: decode() takes codec "raw" for an in-memory raw tensor
        return hyperonnx.decode(seed).tobytes(), None
    except (fmt.FormatError, ValueError, TypeError, OverflowError, KeyError) as error:
        return None, f"{type(error).__name__}: {error}"


def kernel(model, so):
    try:
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        binding = session.io_binding()
        binding.bind_output("w", "cpu")
        session.run_with_iobinding(binding)
        value = binding.get_outputs()[0]
        return ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes()) if value.tensor_size_in_bytes() else b"", None
    except Exception as error:  # onnxruntime's errors: allowed, the comparison judges them
        return None, str(error).splitlines()[0][:300]


def empty_list_type_confusion(node) -> bool:
    """onnxruntime cannot tell an empty `ints` from an empty `floats`: a known blind spot."""
    types = {**fmt.ATTRIBUTE_TYPES, **fmt.LATTICE_ATTRIBUTE_TYPES}
    return any(a.type in (AttributeProto.INTS, AttributeProto.FLOATS) and not a.ints and not a.floats
               and types.get(a.name) != a.type for a in node.attribute)


FUSED_RANKS = {"DecodeMatMul": (2,), "DecodeGemm": (2,), "DecodeConv": (4,), "DecodeGather": (1, 2, 3, 4)}


def fused_case(seed, rng):
    """(op, op attributes, activation, whether it fits the declared weight, mutation) for a fused case."""
    attrs, payload, scales, what = mutate(seed, rng) if rng.random() < 0.5 else (
        [[n, seed.node_attributes()[n], k] for n, k in fmt.attribute_types(seed.codec).items()],
        np.array(seed.payload, np.uint8), None if seed.scales is None else np.array(seed.scales, np.float16), "valid")
    op = str(rng.choice(list(FUSED_RANKS)))
    shape = next((v for n, v, k in attrs if n == "shape" and k == AttributeProto.INTS), [])
    usable = bool(shape) and all(0 < int(d) <= 4096 for d in shape)  # else an activation that fits nothing
    shape = [int(d) for d in shape] if usable else [3, 3]
    fits = usable and len(shape) in FUSED_RANKS[op]
    wrong = rng.random() < 0.25  # an activation that does not fit
    op_attrs = {}
    level = None  # accuracy_level: absent, 4 (int8), 0, or one the kernel refuses
    if op in fmt.ACCURACY_OPS:
        level = rng.choice([None, 4, 4, 4, 0, int(rng.choice([1, 2, 3, 5, -1, 1 << 40]))])
        level = None if level is None else int(level)
    if op == "DecodeMatMul":
        k = shape[0] + (1 if wrong else 0) if fits else 3
        x = rng.standard_normal((int(rng.integers(1, 12)), k)).astype(np.float32)
    elif op == "DecodeGemm":
        op_attrs["transB"] = int(rng.integers(0, 2))
        k = (shape[1 if op_attrs["transB"] else 0] if fits else 3) + (1 if wrong else 0)
        x = rng.standard_normal((int(rng.integers(1, 12)), k)).astype(np.float32)
    elif op == "DecodeGather":
        rows = shape[0]
        x = rng.integers(-rows, rows, int(rng.integers(1, 6))).astype(np.int64)
        if wrong:
            x[0] = rows if rng.random() < 0.5 else -rows - 1
    else:
        channels = shape[1] if fits else 2
        side = (max(shape[2:]) if fits else 3) + int(rng.integers(0, 3))
        x = rng.standard_normal((1, channels + (1 if wrong else 0), side, side)).astype(np.float32)
        op_attrs["pads"] = [int(v) for v in rng.integers(0, 2, 4)]
    what = f"{op}{'' if level is None else f'[accuracy_level={level}]'}:{what}{':wrong' if wrong else ''}"
    return op, op_attrs, level, attrs, payload, scales, x, fits and not wrong, what


def run_fused(seed, rng, so):
    """(None when onnxruntime and the reference agree, else a failure record; whether onnxruntime
    ran the node; whether it ran it with accuracy_level 4 on a lattice / trellis weight)."""
    op, op_attrs, level, attrs, payload, scales, x, fits, what = fused_case(seed, rng)
    _, node = build(attrs, payload, scales)
    _, reference_error = reference(node, payload, scales)
    if level not in fmt.ACCURACY_LEVELS + (None,):
        reference_error = reference_error or f"accuracy_level {level} is refused"
    valid = reference_error is None and fits
    if valid:
        ref_seed = fmt.seed_from_node(node, payload, scales)
        valid = ref_seed.dtype == TensorProto.FLOAT and len(ref_seed.shape) in FUSED_RANKS[op]
    inits = [numpy_helper.from_array(payload, "s")]
    if scales is not None:
        inits.append(numpy_helper.from_array(scales, "c"))
    fused_node = helper.make_node(op, ["x", "s"] + (["c"] if scales is not None else []), ["y"], domain=fmt.OP_DOMAIN)
    for name, value, kind in attrs:
        fused_node.attribute.append(helper.make_attribute(name, value, attr_type=kind))
    for name, value in op_attrs.items():
        fused_node.attribute.append(helper.make_attribute(fmt.FUSED_ATTRIBUTE_PREFIX + name, value))
    if level is not None:
        fused_node.attribute.append(helper.make_attribute(fmt.ACCURACY_LEVEL, level))
    x_type = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.INT64
    fused = make_model(helper.make_graph([fused_node], "fuzz", [helper.make_tensor_value_info("x", x_type, list(x.shape))],
                                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
                       opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION)])
    try:
        # both weight layouts: packed at kernel creation (the default) and decoded from the seed
        got, kernel_error = fused_run(fused, x, threads=1, packing=str(rng.choice(["auto", "none"]))), None
    except Exception as error:  # onnxruntime's errors: allowed, the comparison judges them
        got, kernel_error = None, str(error).splitlines()[0][:300]
    if not valid:
        if got is None or empty_list_type_confusion(node):
            return None, kernel_error is None, False
        return {"mutation": what, "kernel": "ok", "reference": reference_error or "activation does not fit"}, True, False
    if got is None:
        return {"mutation": what, "kernel": kernel_error, "reference": "ok"}, False, False
    int8 = level == 4 and ref_seed.codec in (fmt.CODEC_LATTICE, fmt.CODEC_TRELLIS)
    want, bound = (int8_bound if int8 else fused_reference)(op, ref_seed, x, op_attrs)
    # the bound holds where the sums are finite (a weight decoded to +-Inf may sum to Inf or NaN
    # in either order)
    finite = np.isfinite(want) & np.isfinite(bound) if got.shape == want.shape else False
    same = got.tobytes() == want.tobytes() if op == "DecodeGather" else \
        got.shape == want.shape and bool(np.all(np.abs(got - want)[finite] <= bound[finite]))
    return (None if same else {"mutation": what, "kernel": "ok", "reference": "ok", "same": False}), True, int8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--fused-cases", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    seeds = base_seeds(rng)
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    counts = {"cases": 0, "ok": 0, "refused": 0, "disagreements": 0}
    failures = []
    start = time.perf_counter()
    for case in range(args.cases):
        seed = seeds[case % len(seeds)]
        attrs, payload, scales, what = mutate(seed, rng)
        model, node = build(attrs, payload, scales)
        got, kernel_error = kernel(model, so)
        expected, reference_error = reference(node, payload, scales)
        counts["cases"] += 1
        counts["ok" if kernel_error is None else "refused"] += 1
        agree = (got is not None and expected is not None and got == expected) or \
                (got is None and expected is None)
        if not agree and got is not None and expected is None and empty_list_type_confusion(node):
            agree = True
        if not agree:
            counts["disagreements"] += 1
            failures.append({"case": case, "mutation": what, "kernel": kernel_error or "ok",
                             "reference": reference_error or "ok", "same_bytes": got == expected})
    counts.update(fused_cases=0, fused_ok=0, fused_refused=0, fused_int8_ok=0)
    for case in range(args.fused_cases):
        failure, ran, int8 = run_fused(seeds[case % len(seeds)], rng, so)
        counts["fused_cases"] += 1
        counts["fused_ok" if ran else "fused_refused"] += 1
        counts["fused_int8_ok"] += int8
        if failure is not None:
            counts["disagreements"] += 1
            failures.append({"case": f"fused {case}", **failure})
    counts["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps({**counts, "failures": failures[:20]}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
