"""`hyperonnx bench rd`: the rate-distortion plot. SQNR (dB) against bits/weight on MiniLM-L6's 36
encoder weight matrices, for hyperonnx's lattice codec at every index width from 3 to 8 bits/weight,
its trellis codec at 2 to 8 bits/weight and the paper presets, against integer round-to-nearest
with float16 scales per group of 32 and 128 weights (int4 and int8 among them), llama.cpp's
quantizers (points measured on the same matrices, issue 15) and the Gaussian rate-distortion bound
(6.02 dB per bit). Writes the PNG and the points as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import codec
from .codec import measure, minilm_weights, rtn

RTN_BITS = range(3, 9)
LATTICE_INDEX_BITS = range(6, 17)  # per pair: 3 .. 8 bits/weight before the scales
RATE_TARGETS = (3.25, 4.25, 5.25)  # bits/weight met by per-tensor index widths (LatticeConfig.bits)
PAPER_PRESETS = ("paper-unet", "paper")
LATTICE = "hyperonnx lattice (group 128)"
TARGETS = "hyperonnx lattice, per-tensor rates (bits=3.25 / 4.25 / 5.25)"
TRELLIS_BITS = range(2, 9)  # k bits/weight, window L = max(12, k + 8) (at most 16)
TRELLIS = "hyperonnx trellis (group 128)"
TRELLIS_TARGETS = "hyperonnx trellis, per-tensor k (bits=3.25 / 4.25 / 5.25)"
# llama.cpp's calibration-free quantizers on the same 36 matrices (no imatrix; idealised 256-wide
# blocks for the K and IQ4_XS types), as measured for issue 15: (label, bits/weight, SQNR dB)
LLAMA_CPP = [("IQ4_XS", 4.25, 22.0), ("Q4_K", 4.50, 22.7), ("IQ4_NL", 4.50, 22.1), ("Q3_K", 3.44, 16.2),
             ("IQ3_S", 3.44, 15.3)]
LLAMA = "llama.cpp (no imatrix; issue 15's measurements)"
BOUND = "Gaussian rate-distortion bound (6.02 dB/bit)"


def curves(tensors) -> dict[str, list[tuple[float, float]]]:
    """{label: [(bits/weight, SQNR dB), ...]} for every method of the plot."""
    series = {LATTICE: [], TARGETS: [], TRELLIS: [], TRELLIS_TARGETS: [], "int RTN, group 128, symmetric": [],
              "int RTN, group 128, asymmetric": [], "int RTN, group 32, asymmetric": [],
              "hyperonnx paper presets (authors' algorithm)": []}
    for b in LATTICE_INDEX_BITS:
        row = measure(tensors, codec.LatticeConfig(index_bits=b))
        series[LATTICE].append((row["bits_per_weight"], row["sqnr_db"]))
    for bits in RATE_TARGETS:
        row = measure(tensors, codec.LatticeConfig(bits=bits))
        series[TARGETS].append((row["bits_per_weight"], row["sqnr_db"]))
    for k in TRELLIS_BITS:
        row = measure(tensors, codec.TrellisConfig(index_bits=k))
        series[TRELLIS].append((row["bits_per_weight"], row["sqnr_db"]))
    for bits in RATE_TARGETS:
        row = measure(tensors, codec.TrellisConfig(bits=bits))
        series[TRELLIS_TARGETS].append((row["bits_per_weight"], row["sqnr_db"]))
    series[LLAMA] = [(bits, sqnr) for _, bits, sqnr in LLAMA_CPP]
    series[BOUND] = [(bits, 20 * math.log10(2) * bits) for bits in (2, 8)]
    for bits in RTN_BITS:
        series["int RTN, group 128, symmetric"].append(rtn(tensors, bits, 128, True))
        series["int RTN, group 128, asymmetric"].append(rtn(tensors, bits, 128, False))
        series["int RTN, group 32, asymmetric"].append(rtn(tensors, bits, 32, False))
    for preset in PAPER_PRESETS:
        row = measure(tensors, preset)
        series["hyperonnx paper presets (authors' algorithm)"].append((row["bits_per_weight"], row["sqnr_db"]))
    return series


def plot(series: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=130)
    styles = {LATTICE: dict(color="C3", marker="o", linewidth=2.2),
              TARGETS: dict(color="C4", marker="*", linestyle="none", markersize=12),
              "int RTN, group 128, symmetric": dict(color="C0", marker="s", linestyle="--"),
              "int RTN, group 128, asymmetric": dict(color="C2", marker="^", linestyle="--"),
              "int RTN, group 32, asymmetric": dict(color="C1", marker="v", linestyle="--"),
              "hyperonnx paper presets (authors' algorithm)": dict(color="C7", marker="x", linestyle="none",
                                                                   markersize=9, markeredgewidth=2),
              TRELLIS: dict(color="C5", marker="D", linewidth=2.2),
              TRELLIS_TARGETS: dict(color="C9", marker="P", linestyle="none", markersize=10),
              LLAMA: dict(color="k", marker="o", linestyle="none", markerfacecolor="none", markersize=8),
              BOUND: dict(color="0.5", linestyle=":", linewidth=1.2)}
    for label, points in series.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, label=label, **styles.get(label, {}))
    for (label, _, _), (x, y) in zip(LLAMA_CPP, series[LLAMA]):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=7)
    for x, y in series["int RTN, group 128, symmetric"]:
        bits = round(x - 16 / 128)
        if bits in (4, 8):
            ax.annotate(f"int{bits}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color="C0")
    ax.set_xlabel("bits per weight (scales and zero points included)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Rate–distortion on MiniLM-L6's 36 encoder weight matrices (10.6 M weights)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    series = curves(minilm_weights())
    print(f"{'method':46} {'bits/w':>7} {'SQNR dB':>8}")
    for label, points in series.items():
        for bits, sqnr in points:
            print(f"{label:46} {bits:7.3f} {sqnr:8.2f}")
    plot(series, out)
    out.with_suffix(".json").write_text(json.dumps({k: [list(p) for p in v] for k, v in series.items()}, indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
