"""Judging a model's outputs where their meaning lives, not by one norm over each output tensor.

One relative error over a whole output is fooled by outputs that mix scales: a YOLO-style
detector's `[1, 4 + classes, anchors]` output holds pixel coordinates (0-320) beside class scores
(0-1); the coordinates dominate the norm, and the class scores can be destroyed at a total error
of 0.096 (measured). So each float output is cut into *parts*, and every part is judged alone:

- parts: the slices along one small axis (not the batch axis, 2 to MAX_SLICES long, each slice
  holding MIN_SLICE_VALUES values or more over the feeds) whose slices differ in kind (some
  bounded in [0, 1], some not) or in scale (the largest slice's RMS over SCALE_SPREAD times the
  median's): boxes + scores, heads of different scales. Otherwise the whole output is one part;
- each part's error is relative, with a floor that keeps near-zero parts meaningful:
  ||y' - y|| / sqrt(||y||^2 + n * floor^2), floor SCORE_FLOOR for score-like parts (a probability
  of 1e-4 moving to 3e-3 is no change) and VALUE_FLOOR times the output's RMS otherwise; the worst
  feed counts;
- score-like parts (every value in [0, 1] on every feed: a Sigmoid's, a probability map) are
  also judged by their decisions: positions decisively above THRESHOLD (by DECISION_MARGIN) must stay above it,
  and positions decisively below must not cross it, counted against the positives (so a sparse
  score map that loses its few detections, or gains false ones, fails even when its norm barely
  moves): agreement min(kept / positives, 1 - false / positives) >= MIN_SCORE_AGREEMENT.

The allocator predicts and measures every part; an output passes when all its parts do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SLICES = 128  # an axis longer than this is data (anchors, tokens, pixels), not parts
MIN_SLICE_VALUES = 32  # values per slice (over the feeds) below which slices say nothing of kinds or scales
MAX_PARTS = 512  # over all outputs: beyond this, the largest outputs are judged whole
SCALE_SPREAD = 20.0  # slices this much larger than the median one: judged apart
SCORE_FLOOR = 0.05  # absolute floor of a score-like part's error (probability scale)
VALUE_FLOOR = 1e-3  # floor of any other part: this share of its output's RMS
THRESHOLD = 0.5
DECISION_MARGIN = 0.1
MIN_SCORE_AGREEMENT = 0.98


def _bounded(x: np.ndarray) -> bool:
    return bool(x.size) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@dataclass
class _Layout:
    """How one output is cut: the axis (None: whole), per part whether it is score-like, floors."""

    axis: int | None
    scores: np.ndarray  # bool per part
    floors: np.ndarray  # absolute floor per element, per part
    scored: bool  # judged by threshold decisions too


def _layout(references: list[np.ndarray], allow_slices: bool) -> _Layout:
    """The parts of one output, from its values on the feeds."""
    arrays = [r.astype(np.float64) for r in references]
    rms = float(np.sqrt(np.mean([np.mean(a * a) if a.size else 0.0 for a in arrays])))
    bounded = all(_bounded(a) for a in arrays)
    best_axis, best_spread = None, 1.0
    shapes = {a.shape for a in arrays}
    ndim = arrays[0].ndim
    if allow_slices and len({s[1:] for s in shapes}) == 1:
        for axis in range(1 if ndim >= 2 else 0, ndim):
            size = arrays[0].shape[axis]
            if not 2 <= size <= MAX_SLICES:
                continue
            moved = [np.moveaxis(a, axis, 0).reshape(size, -1) for a in arrays]
            stacked = np.concatenate(moved, axis=1)
            if stacked.shape[1] < MIN_SLICE_VALUES:
                continue
            slice_rms = np.sqrt(np.mean(stacked * stacked, axis=1))
            kinds = (stacked.min(axis=1) >= 0) & (stacked.max(axis=1) <= 1)
            median = float(np.median(slice_rms))
            spread = np.inf if kinds.any() and not kinds.all() else \
                float(slice_rms.max()) / max(median, 1e-30 * max(rms, 1e-30))
            if spread > SCALE_SPREAD and spread > best_spread:
                best_axis, best_spread = axis, spread
    if best_axis is None:
        scores = np.array([bounded])
    else:
        size = arrays[0].shape[best_axis]
        stacked = np.concatenate([np.moveaxis(a, best_axis, 0).reshape(size, -1) for a in arrays], axis=1)
        scores = (stacked.min(axis=1) >= 0) & (stacked.max(axis=1) <= 1)
    floors = np.where(scores, SCORE_FLOOR, VALUE_FLOOR * rms)
    return _Layout(best_axis, scores, floors, scored=bool(scores.any()))


def _sums(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Per-part sums of squares."""
    if axis is None:
        return np.array([float(np.sum(x * x))])
    return np.sum(np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1) ** 2, axis=1)


class Judge:
    """The parts of a model's float outputs, fixed from the reference outputs on the sample feeds;
    `errors` gives each part's squared relative error (worst feed) for other outputs."""

    def __init__(self, names: list[str], references: list[list[np.ndarray]],
                 decisions_judged: set[int] = frozenset(), content: dict[int, list[np.ndarray]] | None = None):
        """`references[f][j]`: output j on feed f; `decisions_judged`: outputs whose decisions are
        judged elsewhere (class scores): no threshold decisions, no slicing. `content[j]`: per feed,
        the positions (all axes but the last) of class output j whose decision carries content
        (not the modal class, e.g. a recogniser's characters among its blanks): their scores are
        one more part, so the many easy positions cannot dilute the error where the text is."""
        self.names = names
        sizes = [max(a.shape[ax] if a.ndim else 1 for ax in range(max(1, a.ndim))) for a in references[0]]
        # largest outputs judged whole first when the parts would be too many
        allow = {j: j not in decisions_judged for j in range(len(names))}
        layouts = {j: _layout([f[j] for f in references], allow[j]) for j in range(len(names))}
        for j in sorted(range(len(names)), key=lambda j: -sizes[j]):
            if sum(len(layouts[k].scores) for k in layouts) <= MAX_PARTS:
                break
            if layouts[j].axis is not None:
                layouts[j] = _layout([f[j] for f in references], False)
        self.layouts = [layouts[j] for j in range(len(names))]
        for j in decisions_judged:
            self.layouts[j].scored = False
        self.content = {j: masks for j, masks in (content or {}).items() if any(m.any() for m in masks)}
        self.owner = np.concatenate([np.full(len(l.scores), j) for j, l in enumerate(self.layouts)] +
                                    [np.full(1, j) for j in self.content]).astype(np.int64)
        self.references = references
        self.energy = np.array([np.concatenate([self._energy(l, f[j]) for j, l in enumerate(self.layouts)] +
                                               [self._content_sums(j, k, f[j]) for j in self.content])
                                for k, f in enumerate(references)])

    def _content_sums(self, j: int, feed: int, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return np.array([float(np.sum(x[self.content[j][feed]] ** 2))])

    @staticmethod
    def _energy(layout: _Layout, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        count = x.size / len(layout.scores)
        return _sums(x, layout.axis) + count * layout.floors ** 2

    @property
    def parts(self) -> int:
        return len(self.owner)

    def errors(self, got: list[list[np.ndarray]]) -> np.ndarray:
        """Squared relative error of every part, the worst feed counting."""
        noise = np.array([np.concatenate([_sums(g[j].astype(np.float64) - r[j], l.axis)
                                          for j, l in enumerate(self.layouts)] +
                                         [self._content_sums(j, k, g[j].astype(np.float64) - r[j]) for j in self.content])
                          for k, (g, r) in enumerate(zip(got, self.references))])
        return np.where(self.energy > 0, noise / np.maximum(self.energy, 1e-300), noise).max(axis=0)

    def per_output(self, part_errors: np.ndarray) -> np.ndarray:
        """Each output's worst part."""
        out = np.zeros(len(self.layouts))
        np.maximum.at(out, self.owner, part_errors)
        return out

    def worst_part(self, part_errors: np.ndarray, j: int) -> tuple[int | None, int, float]:
        """(axis, slice index, squared error) of output j's worst part."""
        mine = np.where(self.owner == j)[0][:len(self.layouts[j].scores)]  # its slices (content aside)
        k = int(mine[np.argmax(part_errors[mine])])
        return self.layouts[j].axis, int(k - mine[0]), float(part_errors[k])

    def score_agreement(self, got: list[list[np.ndarray]]) -> np.ndarray:
        """Per output: agreement of the threshold decisions of its score-like parts (1 where none)."""
        agreement = np.ones(len(self.layouts))
        for j, layout in enumerate(self.layouts):
            if not layout.scored:
                continue
            positives = kept = false = 0
            for g, r in zip(got, self.references):
                ref, new = self._score_values(layout, r[j]), self._score_values(layout, g[j])
                pos = ref >= THRESHOLD + DECISION_MARGIN
                neg = ref <= THRESHOLD - DECISION_MARGIN
                positives += int(pos.sum())
                kept += int((new[pos] >= THRESHOLD).sum())
                false += int((new[neg] >= THRESHOLD).sum())
            if positives:
                agreement[j] = min(kept / positives, 1.0 - false / positives)
            elif false:
                agreement[j] = 0.0  # detections where the original had none
        return agreement

    @staticmethod
    def _score_values(layout: _Layout, x: np.ndarray) -> np.ndarray:
        if layout.axis is None:
            return x.ravel() if layout.scores[0] else x.ravel()[:0]
        moved = np.moveaxis(x, layout.axis, 0)
        return moved[layout.scores].ravel()

    def describe(self, j: int) -> str:
        """How output j is judged, for the report."""
        layout = self.layouts[j]
        extra = ", and its content positions apart" if j in self.content else ""
        if layout.axis is None:
            return "whole" + (", scores" if layout.scored else "") + extra
        return (f"{len(layout.scores)} slices along axis {layout.axis} "
                f"({int(layout.scores.sum())} score-like){extra}")
