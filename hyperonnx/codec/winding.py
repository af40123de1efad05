"""The `winding` codec (docs/FORMAT.md §3): the hyper-compression of arXiv 2409.00592, as the
authors' code does it, with integer trajectory arithmetic and an exact lattice nearest-point search.

Consecutive weights form 2-D points. Inside a square of side L centred at the points' centroid the
codebook is the centroid plus n points of the winding u(j) = (j*g mod M) with g = (1, m), M = m*m,
m = ceil(sqrt(n)): the authors' trajectory corner + (j*v mod L) with v = (L/m^2, L/m), in integers.
Points outside the square fall into ring classes by distance, are scaled into the square, quantised
and scaled back. A pair is stored as index j + (n+1)*k: trajectory step j (n = centroid), class k.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import format as fmt
from . import bitpack

_F32 = np.float32
_CHUNK = 1 << 16  # pairs per nearest-point step: temporaries stay in cache


@dataclass(frozen=True)
class Codebook:
    """The decoder's view of one tensor's attributes, with the derived constants."""

    points: int
    rings: int
    center: np.ndarray  # float32[2]
    side: np.float32
    scales: np.ndarray  # float32[rings + 1]; class 0 has scale 1

    @property
    def m(self) -> int:
        return fmt.winding_modulus(self.points)[0]

    @property
    def modulus(self) -> int:
        return fmt.winding_modulus(self.points)[1]

    @property
    def step(self) -> np.float32:
        return _F32(self.side) / _F32(self.modulus)  # one float32 division, as every decoder does

    @property
    def offset(self) -> np.float32:
        return _F32(-0.5) * _F32(self.side)

    @property
    def size(self) -> int:
        return (self.points + 1) * (self.rings + 1)

    @classmethod
    def from_attrs(cls, attrs: dict) -> "Codebook":
        scales = np.array([1.0, *attrs["ring_scales"]], dtype=_F32)
        return cls(attrs["points"], attrs["rings"], np.array(attrs["center"], dtype=_F32),
                   _F32(attrs["side"]), scales)

    def trajectory(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets (x, y) from the centroid of trajectory steps j (j == n is the centroid itself)."""
        j = j.astype(np.int64)
        ux = (j % self.modulus).astype(_F32)
        uy = ((j * self.m) % self.modulus).astype(_F32)
        on_centroid = j == self.points
        qx = np.where(on_centroid, _F32(0), ux * self.step + self.offset)
        qy = np.where(on_centroid, _F32(0), uy * self.step + self.offset)
        return qx, qy

    def decode_pairs(self, indices: np.ndarray) -> np.ndarray:
        """float32 (pairs, 2) for packed indices; FORMAT.md §3's arithmetic, operation by operation.

        Large inputs look their entries up in the codebook table, decoded by the same arithmetic.
        """
        if indices.size > 4 * self.size:
            return self.decode_pairs(np.arange(self.size))[indices]
        j = indices % (self.points + 1)
        k = indices // (self.points + 1)
        qx, qy = self.trajectory(j)
        scale = self.scales[k]
        out = np.empty((indices.size, 2), dtype=_F32)
        out[:, 0] = self.center[0] + qx * scale
        out[:, 1] = self.center[1] + qy * scale
        return out

    def nearest(self, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
        """Index j in [0, n] of the codebook point nearest to each offset (tx, ty), exactly.

        In units of `step` from the square's corner, trajectory point j = a*m + b sits at
        (a*m + b, b*m): rows b*m of evenly spaced points. Write n = q*m + r. Points with a < q form
        a complete sheared grid, whose nearest point lies in one of the two rows around the target
        (a farther row is at least m away in y, and no nearer in x), next to (x - b) / m in that
        row. The r points of the last, partial column (a = q, b < r) lie on a line; the nearest is
        next to the minimum of a convex quadratic in b. These candidates and the centroid are
        compared at their exact float32 decoded positions.
        """
        m, n = self.m, self.points
        q, r = divmod(n, m)
        # Exact decoded coordinates, looked up: x of step j, and y of row b (step j = b is in row b).
        x_of = self.trajectory(np.arange(n))[0].astype(np.float64)
        y_of = self.trajectory(np.arange(m))[1].astype(np.float64)
        best_j = np.full(tx.shape, n, dtype=np.int64)  # the centroid, at offset (0, 0)
        best_d = tx * tx + ty * ty

        def consider(j: np.ndarray, row_d: np.ndarray) -> None:  # step j in a row at y-cost row_d
            d = np.take(x_of, j) - tx
            d *= d
            d += row_d
            closer = d < best_d
            np.copyto(best_j, j, where=closer)
            np.copyto(best_d, d, where=closer)

        unit = 1.0 / (float(self.step) * m)  # lattice rows are m steps apart
        lx = (tx - float(self.offset)) * unit
        ly = (ty - float(self.offset)) * unit
        row = np.floor(ly).astype(np.int64)
        for b in (np.clip(row, 0, m - 1), np.clip(row + 1, 0, m - 1)):
            row_d = np.take(y_of, b) - ty
            row_d *= row_d
            a = np.floor(lx - b / m).astype(np.int64)
            consider(np.clip(a, 0, q - 1) * m + b, row_d)
            consider(np.clip(a + 1, 0, q - 1) * m + b, row_d)
        if r:  # minimise (q*m + b - x)^2 + (b*m - y)^2 over b in [0, r), x = lx*m, y = ly*m
            b = np.floor((lx - q + m * ly) * (m / (m * m + 1))).astype(np.int64)
            for b in (np.clip(b, 0, r - 1), np.clip(b + 1, 0, r - 1)):
                row_d = np.take(y_of, b) - ty
                row_d *= row_d
                consider(q * m + b, row_d)
        return best_j

    def covering_radius(self) -> float:
        """An upper bound on the distance from any point of the square to its codebook point.

        A target in the square is within m/2 (m at the top edge) of a row in y, and within m of a
        point of that row in x, in units of `step`; a small margin covers float32 rounding.
        """
        return math.sqrt(2.0) * self.m * float(self.step) * (1 + 1e-5) + 4 * float(np.finfo(_F32).eps) * float(self.side)


@dataclass(frozen=True)
class WindingConfig:
    """Encoder settings of the authors' algorithm (their defaults: DESIGN.md §2)."""

    side: float = 0.8  # L
    points: tuple[int, ...] = (1600,)  # trajectory lengths n to try, in order
    max_rings: int = 4  # C max
    max_mean_abs_error: float | None = None  # per-tensor budget; None: always the finest setting

    def __post_init__(self):
        if not (math.isfinite(self.side) and self.side > 0):
            raise ValueError("side must be finite and > 0")
        if not self.points or not all(1 <= n <= fmt.MAX_POINTS for n in self.points):
            raise ValueError(f"points must be a non-empty list of values in [1, {fmt.MAX_POINTS}]")
        if not 0 <= self.max_rings <= fmt.MAX_RINGS:
            raise ValueError(f"max_rings must be in [0, {fmt.MAX_RINGS}]")
        if (max(self.points) + 1) * (self.max_rings + 1) > 1 << fmt.MAX_BITS:
            raise ValueError("points and max_rings give indices wider than 24 bits")

    def candidates(self) -> list[tuple[int, int]]:
        """(n, C) settings to try in order; the first that meets the budget is kept.

        As the authors' code does: C is always its maximum, and the budget picks n from the list
        or, when none meets it, the raw fallback (this reproduces their published figures).
        """
        if self.max_mean_abs_error is None:
            return [(self.points[0], self.max_rings)]
        return [(n, self.max_rings) for n in self.points]


def encode_pairs(pairs: np.ndarray, points: int, max_rings: int, side: float):
    """Quantise float64 (P, 2) points; return (indices, attrs) for one (n, C) setting."""
    center = pairs.mean(axis=0).astype(_F32)
    side32 = _F32(side)
    half = 0.5 * float(side32)
    dx = pairs[:, 0] - float(center[0])
    dy = pairs[:, 1] - float(center[1])
    outside = np.maximum(np.abs(dx), np.abs(dy)) > half
    rings = max_rings if outside.any() else 0
    if rings:
        dist = np.hypot(dx, dy)
        width = (dist.max() - half) / rings  # ring k ends at half + k * width
        cls = np.where(outside, np.clip(np.ceil((dist - half) / width), 1, rings), 0).astype(np.int64)
        radii = half + width * np.arange(1, rings + 1)
        ring_scales = (radii / half).astype(_F32)
    else:
        cls = np.zeros(pairs.shape[0], dtype=np.int64)
        ring_scales = np.zeros(0, dtype=_F32)
    book = Codebook(points, rings, center, side32, np.concatenate([[_F32(1)], ring_scales]))
    scales = book.scales.astype(np.float64)

    def quantise(start: int) -> np.ndarray:
        s = slice(start, start + _CHUNK)
        inv = 1.0 / scales[cls[s]]
        return book.nearest(dx[s] * inv, dy[s] * inv) + (points + 1) * cls[s]

    # numpy releases the GIL inside ufuncs, so chunks quantise in parallel; the result is the same.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        indices = np.concatenate(list(pool.map(quantise, range(0, pairs.shape[0], _CHUNK))))
    attrs = {"bits": max(1, int(indices.max()).bit_length()), "points": points, "rings": rings,
             "center": [float(v) for v in center], "side": float(side32),
             "ring_scales": [float(v) for v in ring_scales]}
    return indices, attrs


def encode(flat: np.ndarray, config: WindingConfig):
    """Encode a finite float32 vector; return (payload, attrs, decoded float32) or None if no
    setting meets the error budget."""
    pairs = np.empty((fmt.num_pairs(flat.size), 2), dtype=np.float64)
    pairs.ravel()[:flat.size] = flat
    if flat.size % 2:  # pad the odd element with the mean of the other coordinates: no pull
        pairs[-1, 1] = flat[1::2].mean() if flat.size > 1 else flat[0]
    for points, rings in config.candidates():
        indices, attrs = encode_pairs(pairs, points, rings, config.side)
        book = Codebook.from_attrs(attrs)
        decoded = book.decode_pairs(indices).ravel()[:flat.size]
        if config.max_mean_abs_error is None or \
                np.mean(np.abs(decoded - flat)) <= config.max_mean_abs_error:
            return bitpack.pack(indices, attrs["bits"]), attrs, decoded
    return None


def decode(payload: np.ndarray, attrs: dict, count: int) -> np.ndarray:
    """Reference decoder: float32 vector of `count` elements (attributes already validated)."""
    book = Codebook.from_attrs(attrs)
    indices = bitpack.unpack(payload, attrs["bits"], fmt.num_pairs(count))
    if indices.size and int(indices.max()) >= book.size:
        raise fmt.FormatError(f"rule 5: seed index {int(indices.max())} is beyond the codebook's "
                              f"{book.size} entries")
    return book.decode_pairs(indices).ravel()[:count]
