"""The weight-error planner shared by the rate codecs (lattice, trellis): one index width per
tensor for an average bits/weight or a total SQNR target."""

from __future__ import annotations

import math

import numpy as np

# Per-tensor floors (dB of weight SQNR). An energy-weighted total lets small tensors starve
# (`--target-sqnr 40` left a recogniser's tensors at 6.7 dB and it read nothing), so no tensor
# goes below MIN_TENSOR_SQNR, nor more than TARGET_SLACK below a target_sqnr.
MIN_TENSOR_SQNR = 12.0
TARGET_SLACK = 10.0


def floor_db(config) -> float:
    """The least weight SQNR any one tensor gets under `config`'s rate target."""
    if config.target_sqnr is not None:
        return max(MIN_TENSOR_SQNR, config.target_sqnr - TARGET_SLACK)
    return MIN_TENSOR_SQNR


def plan_widths(noise: np.ndarray, signals: np.ndarray, sizes: np.ndarray, unit_bits: np.ndarray,
                scale_bits: np.ndarray, widths: range, config, start: int) -> list[int]:
    """Greedy marginal return: every tensor starts at `start` (an index into `widths`) or at the
    least width meeting `floor_db(config)` for it, whichever is higher (both lowered to 0 where
    the budget cannot hold them), then each step takes the one-width upgrade that removes the
    most squared error per added bit, until config.target_sqnr is met or no upgrade fits in
    config.bits. `noise` (tensors, widths) is each tensor's squared error at each width,
    `signals` its sum of squares, `unit_bits` the bits one more index bit costs it, `scale_bits`
    its scales' bits."""
    budget = config.bits * float(sizes.sum()) if config.bits is not None else math.inf
    total_bits = float(np.sum(unit_bits * widths[0] + scale_bits))
    if total_bits > budget:
        raise ValueError(f"bits={config.bits} is below the least rate of these tensors, "
                         f"{total_bits / sizes.sum():.3f} bits/weight (index_bits={widths[0]}, group={config.group})")
    floor = np.argmax(noise <= (signals / 10 ** (floor_db(config) / 10))[:, None], axis=1)
    floor = np.where((noise <= (signals / 10 ** (floor_db(config) / 10))[:, None]).any(axis=1), floor,
                     len(widths) - 1)
    level = np.maximum(floor, start).astype(np.int64)
    if float(np.sum(unit_bits * np.take(widths, level) + scale_bits)) > budget:
        level = np.full(len(noise), 0 if float(np.sum(unit_bits * widths[start] + scale_bits)) > budget
                        else start, dtype=np.int64)
    total_bits = float(np.sum(unit_bits * np.take(widths, level) + scale_bits))
    signal = float(np.sum(signals))
    allowed = signal / 10 ** (config.target_sqnr / 10) if config.target_sqnr is not None else -1.0
    index = np.arange(len(noise))
    current = float(noise[index, level].sum())
    while current > allowed:
        room = level < len(widths) - 1
        gain = np.where(room, noise[index, level] - noise[index, np.minimum(level + 1, len(widths) - 1)], -np.inf)
        value = np.where(room & (total_bits + unit_bits <= budget), gain / unit_bits, -np.inf)
        best = int(np.argmax(value))
        if not value[best] > 0:
            break
        level[best] += 1
        total_bits += unit_bits[best]
        current -= gain[best]
    return [widths[i] for i in level]
