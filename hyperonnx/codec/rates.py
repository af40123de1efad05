"""The weight-error planner shared by the rate codecs (lattice, trellis): one index width per
tensor for an average bits/weight or a total SQNR target."""

from __future__ import annotations

import math

import numpy as np


def plan_widths(noise: np.ndarray, signal: float, sizes: np.ndarray, unit_bits: np.ndarray,
                scale_bits: np.ndarray, widths: range, config, start: int) -> list[int]:
    """Greedy marginal return: every tensor starts at `start` (an index into `widths`, lowered to
    0 where the budget cannot hold it), then each step takes the one-width upgrade that removes the
    most squared error per added bit, until config.target_sqnr is met or no upgrade fits in
    config.bits. `noise` (tensors, widths) is each tensor's squared error at each width, `unit_bits`
    the bits one more index bit costs it, `scale_bits` its scales' bits."""
    budget = config.bits * float(sizes.sum()) if config.bits is not None else math.inf
    total_bits = float(np.sum(unit_bits * widths[0] + scale_bits))
    if total_bits > budget:
        raise ValueError(f"bits={config.bits} is below the least rate of these tensors, "
                         f"{total_bits / sizes.sum():.3f} bits/weight (index_bits={widths[0]}, group={config.group})")
    if float(np.sum(unit_bits * widths[start] + scale_bits)) > budget:
        start = 0
    level = np.full(len(noise), start, dtype=np.int64)
    total_bits = float(np.sum(unit_bits * widths[start] + scale_bits))
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
