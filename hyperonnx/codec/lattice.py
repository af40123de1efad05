"""The `lattice` codec (docs/FORMAT.md §7): group-scaled pairs on a companded Kronecker trajectory.

Consecutive weights form 2-D points; every `group` consecutive weights share one float16 scale.
A pair is stored as one step j of a rank-1 (Kronecker) lattice trajectory of N = 2^b - 1 points,
    j -> (i, k) = (j, (j*g + c) mod N),   c = (g - 1) / 2,
mapped coordinate-wise to u = (2*i - (N-1)) / N in (-1, 1) and companded by the odd cubic
phi(u) = u * (alpha + beta*u*u) so points are denser near 0, as weights are. The generator g is
chosen to maximise the lattice's minimum distance (near-hexagonal), c makes the point set
symmetric about the origin (error without bias) and step (N-1)/2 decodes to exactly (0, 0).

The decoder needs no table: integer index arithmetic and a handful of float32 operations. The
encoder finds the nearest point arithmetically: it inverts phi, expresses the target in a reduced
basis of the lattice, and compares the surrounding lattice points at their exact decoded values.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .. import format as fmt
from . import bitpack

_F32 = np.float32
_CHUNK = 1 << 15  # pairs per nearest-point step: temporaries stay in cache
_FAR = _F32(1e18)  # decoded value of the out-of-range padding columns: never the nearest


@functools.lru_cache(maxsize=None)
def generator(bits: int) -> int:
    """The odd g in [1, N) whose lattice {(i, k): k = g*i mod N} has the longest shortest vector
    (ties: the smallest g). Deterministic; the encoder stores g, so decoders never search."""
    n = (1 << bits) - 1
    if n < 3:
        return 1
    g = np.arange(1, n, 2, dtype=np.int64)
    best = np.full(g.shape, np.inf)
    # the shortest vector (t, t*g - s*N) of a 2-D lattice of determinant N has t <= 1.08*sqrt(N)
    for t in range(1, int(1.1 * math.sqrt(n)) + 2):
        r = (t * g) % n
        r = np.minimum(r, n - r)
        np.minimum(best, float(t * t) + r.astype(np.float64) ** 2, out=best)
    return int(g[np.argmax(best)])  # argmax returns the first (smallest) g among ties


def _reduced_basis(n: int, g: int) -> np.ndarray:
    """Lagrange-Gauss reduced basis (rows) of the lattice spanned by (1, g) and (0, n)."""
    a, b = (1, g % n), (0, n)
    if a[0] * a[0] + a[1] * a[1] > b[0] * b[0] + b[1] * b[1]:
        a, b = b, a
    while True:
        na = a[0] * a[0] + a[1] * a[1]
        mu = round((a[0] * b[0] + a[1] * b[1]) / na)
        b = (b[0] - mu * a[0], b[1] - mu * a[1])
        if b[0] * b[0] + b[1] * b[1] >= na:
            return np.array([a, b], dtype=np.int64)
        a, b = b, a


@dataclass(frozen=True)
class Trajectory:
    """One tensor's trajectory: N points, generator g, companding coefficients (float32)."""

    bits: int
    generator: int
    alpha: np.float32
    beta: np.float32

    @property
    def size(self) -> int:
        return (1 << self.bits) - 1

    @property
    def offset(self) -> int:  # c of FORMAT.md §7.3
        return (self.generator - 1) // 2

    def coordinate(self, m: np.ndarray) -> np.ndarray:
        """phi(u(m)) in float32 for integer coordinates m in [0, N): FORMAT.md §7.3, op by op."""
        n = self.size
        r = _F32(1) / _F32(n)
        u = (2 * np.asarray(m, dtype=np.int64) - (n - 1)).astype(_F32) * r
        t = u * u
        t = t * self.beta
        t = t + self.alpha
        return u * t

    @functools.cached_property
    def table(self) -> np.ndarray:
        """phi(u(m)) for m = 0 .. N-1: the decoded coordinate values."""
        return self.coordinate(np.arange(self.size))

    def decode_pairs(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (x, y) of trajectory steps j (before the group scale)."""
        j = steps.astype(np.int64)
        k = (j * self.generator + self.offset) % self.size
        return self.table[j], self.table[k]

    @functools.cached_property
    def _search(self):
        n = self.size
        basis = _reduced_basis(n, self.generator)
        inverse = np.linalg.inv(basis.astype(np.float64))
        span = int(np.abs(basis).sum()) + 2  # candidates stray at most this far outside [0, N)
        padded = np.full(n + 2 * span, _FAR, dtype=_F32)
        padded[span:span + n] = self.table
        deltas = [tuple(int(v) for v in (d1 * basis[0] + d2 * basis[1]))
                  for d1 in (-1, 0, 1) for d2 in (-1, 0, 1)]
        return inverse, span, padded, deltas

    def invert(self, t: np.ndarray) -> np.ndarray:
        """float32 u in [-1, 1] with phi(u) close to t (clipped): Newton on the monotone cubic
        (an approximation is enough: the search compares the neighbourhood exactly)."""
        a, b = _F32(self.alpha), _F32(self.beta)
        top = a + b
        t = np.clip(t, -top, top).astype(_F32)
        u = t / top
        for _ in range(3):
            u2 = u * u
            u -= (u * (a + b * u2) - t) / (a + _F32(3) * b * u2)
        return np.clip(u, _F32(-1), _F32(1))

    def nearest(self, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
        """Step j of the decoded point nearest to each normalised target (tx, ty).

        The 3x3 lattice neighbourhood (reduced basis) of the target's position in the
        uncompanded domain is compared at the exact decoded coordinates; companding makes the
        cells slightly anisotropic, which this neighbourhood covers (tests measure the rate of
        misses against brute force)."""
        n, c = self.size, self.offset
        inverse, span, padded, deltas = self._search
        half = _F32(0.5 * n)
        px = self.invert(tx) * half + _F32(0.5 * (n - 1))  # continuous column, 0 .. N-1
        py = self.invert(ty) * half + _F32(0.5 * (n - 1) - c)
        z1 = np.rint(px * _F32(inverse[0, 0]) + py * _F32(inverse[1, 0])).astype(np.int32)
        z2 = np.rint(px * _F32(inverse[0, 1]) + py * _F32(inverse[1, 1])).astype(np.int32)
        basis = _reduced_basis(n, self.generator).astype(np.int32)
        i0 = z1 * basis[0, 0] + z2 * basis[1, 0] + span
        k0 = z1 * basis[0, 1] + z2 * basis[1, 1] + (c + span)
        tx = tx.astype(_F32)
        ty = ty.astype(_F32)
        best_d = np.full(tx.shape, np.inf, dtype=_F32)
        best_i = np.zeros(tx.shape, dtype=np.int32)
        for di, dk in deltas:
            i = i0 + di
            dx = np.take(padded, i, mode="clip") - tx
            dy = np.take(padded, k0 + dk, mode="clip") - ty
            dx *= dx
            dy *= dy
            dx += dy
            closer = dx < best_d
            np.copyto(best_d, dx, where=closer)
            np.copyto(best_i, i, where=closer)
        return (best_i - span).astype(np.int64)


    def nearest_all(self, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
        """`nearest` over chunks in threads (numpy releases the GIL; the result is the same)."""
        def run(start: int) -> np.ndarray:
            return self.nearest(tx[start:start + _CHUNK], ty[start:start + _CHUNK])
        if tx.size <= _CHUNK:
            return self.nearest(tx, ty)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return np.concatenate(list(pool.map(run, range(0, tx.size, _CHUNK))))


MIN_BITS, MAX_BITS = 2, 16  # index bits per pair; 2^16 - 1 points keep j*g below 2^32
MAX_GROUP = 1 << 16


@dataclass(frozen=True)
class LatticeConfig:
    """Encoder settings of the lattice codec.

    Rate: `index_bits` per pair of weights (b/2 bits per weight, plus 16/group for the scales),
    or a target over a set of tensors: `bits` (average bits/weight, scales included) or
    `target_sqnr` (dB, energy-weighted), met by per-tensor index widths (`plan`).
    """

    index_bits: int = 8
    group: int = 128  # weights per float16 scale (even)
    alpha: float = 0.5  # companding phi(u) = u * (alpha + beta*u^2)
    beta: float = 0.5
    iterations: int = 1  # Lloyd steps on the group scales after the max|w| start
    bits: float | None = None
    target_sqnr: float | None = None
    min_index_bits: int = 4  # range the rate allocation chooses from
    max_index_bits: int = 16

    def __post_init__(self):
        if not MIN_BITS <= self.index_bits <= MAX_BITS:
            raise ValueError(f"index_bits must be in [{MIN_BITS}, {MAX_BITS}]")
        if not MIN_BITS <= self.min_index_bits <= self.max_index_bits <= MAX_BITS:
            raise ValueError(f"need {MIN_BITS} <= min_index_bits <= max_index_bits <= {MAX_BITS}")
        if self.group % 2 or not 2 <= self.group <= MAX_GROUP:
            raise ValueError(f"group must be even and in [2, {MAX_GROUP}]")
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta) and self.alpha > 0 and self.beta >= 0):
            raise ValueError("companding needs finite alpha > 0 and beta >= 0")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        if self.bits is not None and self.target_sqnr is not None:
            raise ValueError("give bits or target_sqnr, not both")
        if self.bits is not None and not (math.isfinite(self.bits) and self.bits > 0):
            raise ValueError("bits must be a positive bits/weight target")
        if self.target_sqnr is not None and not math.isfinite(self.target_sqnr):
            raise ValueError("target_sqnr must be finite (dB)")

    @property
    def fixed(self) -> bool:
        return self.bits is None and self.target_sqnr is None

    def at(self, index_bits: int) -> "LatticeConfig":
        return replace(self, index_bits=index_bits, bits=None, target_sqnr=None)

    def trajectory(self) -> Trajectory:
        return Trajectory(self.index_bits, generator(self.index_bits), _F32(self.alpha), _F32(self.beta))


def _grouped(flat: np.ndarray, group: int) -> np.ndarray:
    """float32 (groups, group) view of the weights, the tail padded with zeros: a zero pair is
    coded exactly, adds nothing to a group's least-squares sums and is dropped on decode."""
    grouped = np.zeros((-(-flat.size // group), group), dtype=_F32)
    grouped.ravel()[:flat.size] = flat
    return grouped


def _steps(grouped: np.ndarray, scales: np.ndarray, traj: Trajectory) -> np.ndarray:
    """Nearest steps of every pair, the weights divided by their group's scale."""
    inv = np.divide(1.0, scales, out=np.zeros(scales.shape), where=scales > 0)
    # a subnormal scale's inverse overflows float32: clip it (its weights are as small, so the
    # targets stay finite) rather than let inf * 0 put NaN into the search
    inv = np.minimum(inv, np.finfo(_F32).max).astype(_F32)
    targets = (grouped * inv[:, None]).ravel()
    return traj.nearest_all(targets[0::2], targets[1::2])


def _decoded_unit(traj: Trajectory, steps: np.ndarray, shape: tuple) -> np.ndarray:
    """phi(u) of every element (before the group scale), shaped like the grouped weights."""
    x, y = traj.decode_pairs(steps)
    out = np.empty(shape, dtype=_F32)
    out.reshape(-1, 2)[:, 0] = x
    out.reshape(-1, 2)[:, 1] = y
    return out


def fit_scales(grouped: np.ndarray, traj: Trajectory, iterations: int, count: int) -> np.ndarray:
    """Per-group scales minimising squared error: start at max|w| (the outermost point), then
    Lloyd steps (nearest steps, then the least-squares scale <w,q>/<q,q> of each group)."""
    scales = np.abs(grouped).max(axis=1).astype(np.float64) / float(traj.table[-1])
    for _ in range(iterations):
        q = _decoded_unit(traj, _steps(grouped, scales, traj), grouped.shape)
        q.ravel()[count:] = 0  # the padding is no weight
        num = np.einsum("ij,ij->i", grouped, q, dtype=np.float64)
        den = np.einsum("ij,ij->i", q, q, dtype=np.float64)
        scales = np.where(den > 0, np.maximum(num, 0) / np.where(den > 0, den, 1), scales)
    return scales


def store_scales(scales: np.ndarray) -> tuple[np.ndarray, float]:
    """float16 scales and the power-of-two unit they count in (the largest lands in [2^14, 2^15))."""
    top = float(scales.max()) if scales.size else 0.0
    unit = 2.0 ** (math.frexp(top)[1] - 15) if top > 0 else 1.0  # top = f * 2^e, f in [0.5, 1)
    unit = min(max(unit, 2.0 ** -126), 2.0 ** 100)  # a normal float32
    return (scales / unit).astype(np.float16), unit


def decode_scales(scales16: np.ndarray, unit: float) -> np.ndarray:
    """FORMAT.md §7.3: S = float32(h) * scale_unit, one float32 multiplication."""
    return scales16.astype(_F32) * _F32(unit)


def quantise(flat: np.ndarray, config: LatticeConfig):
    """(steps, float16 scales, scale unit, trajectory) of a finite float32 vector at config.index_bits."""
    traj = config.trajectory()
    grouped = _grouped(flat, config.group)
    scales16, unit = store_scales(fit_scales(grouped, traj, config.iterations, flat.size))
    steps = _steps(grouped, decode_scales(scales16, unit).astype(np.float64), traj)
    return steps[:fmt.num_pairs(flat.size)], scales16, unit, traj


def encode(flat: np.ndarray, config: LatticeConfig):
    """Encode a finite float32 vector at config.index_bits; return (payload, scales16, attrs, decoded)."""
    steps, scales16, unit, traj = quantise(flat, config)
    attrs = {"bits": config.index_bits, "generator": traj.generator, "group": config.group,
             "alpha": float(traj.alpha), "beta": float(traj.beta), "scale_unit": float(_F32(unit))}
    payload = bitpack.pack(steps, config.index_bits)
    return payload, scales16, attrs, decode(payload, scales16, attrs, flat.size)


def decode(payload: np.ndarray, scales16: np.ndarray, attrs: dict, count: int) -> np.ndarray:
    """Reference decoder (FORMAT.md §7.3): float32 vector of `count` elements (attributes and
    input sizes already validated)."""
    traj = Trajectory(attrs["bits"], attrs["generator"], _F32(attrs["alpha"]), _F32(attrs["beta"]))
    steps = bitpack.unpack(payload, attrs["bits"], fmt.num_pairs(count))
    if steps.size and int(steps.max()) >= traj.size:
        raise fmt.FormatError(f"rule 7: seed index {int(steps.max())} is beyond the trajectory's {traj.size} points")
    return _values(traj, steps, np.asarray(scales16, dtype=np.float16), attrs["scale_unit"],
                   attrs["group"], count)


def _values(traj: Trajectory, steps, scales16, unit: float, group: int, count: int) -> np.ndarray:
    """w = phi(u) * S per element (FORMAT.md §7.3), float32."""
    x, y = traj.decode_pairs(steps)
    values = np.stack([x, y], axis=1).ravel()[:count]
    return values * np.repeat(decode_scales(scales16, unit), group)[:count]


def _sample(flat: np.ndarray, group: int) -> np.ndarray:
    """A deterministic sample of about 64 groups (every stride-th group) of a tensor."""
    groups = -(-flat.size // group)
    stride = max(1, groups // 64)
    if stride == 1:
        return flat
    return flat[:groups // stride * stride * group].reshape(-1, stride * group)[:, :group].ravel()


def encode_sample(flat: np.ndarray, config: LatticeConfig) -> np.ndarray:
    """Decoded values (float32) of `flat` at `config`, without packing."""
    steps, scales16, unit, traj = quantise(flat, config)
    return _values(traj, steps, scales16, unit, config.group, flat.size)


def plan(flats: list[np.ndarray], config: LatticeConfig) -> list[int]:
    """Index bits per tensor meeting config.bits (average bits/weight, scales included, at most the
    target) or config.target_sqnr (dB over all tensors, estimated): greedy marginal return, each
    step the upgrade that removes the most squared error per added bit."""
    if config.fixed or not flats:
        return [config.index_bits] * len(flats)
    rates = range(config.min_index_bits, config.max_index_bits + 1)
    sizes = np.array([f.size for f in flats], dtype=np.float64)
    signal, noise = 0.0, []
    for f in flats:
        sample = _sample(f, config.group)
        x = sample.astype(np.float64)
        weight = f.size / max(1, sample.size)  # sampled sums scaled to the whole tensor
        signal += weight * float(np.sum(x * x))
        noise.append([weight * float(np.sum((encode_sample(sample, config.at(b)) - x) ** 2)) for b in rates])
    noise = np.array(noise)  # (tensors, rates), scaled to whole tensors
    level = np.zeros(len(flats), dtype=np.int64)
    pairs = np.array([fmt.num_pairs(int(n)) for n in sizes], dtype=np.float64)
    scale_bits = np.array([16 * -(-int(n) // config.group) for n in sizes], dtype=np.float64)
    total_bits = float(np.sum(pairs * rates[0] + scale_bits))
    budget = config.bits * float(sizes.sum()) if config.bits is not None else math.inf
    if total_bits > budget:
        raise ValueError(f"bits={config.bits} is below the least rate of these tensors, "
                         f"{total_bits / sizes.sum():.3f} bits/weight (index_bits={rates[0]}, group={config.group})")
    allowed = signal / 10 ** (config.target_sqnr / 10) if config.target_sqnr is not None else -1.0
    current = float(noise[np.arange(len(flats)), level].sum())
    while current > allowed:
        room = level < len(rates) - 1
        gain = np.where(room, noise[np.arange(len(flats)), level] -
                        noise[np.arange(len(flats)), np.minimum(level + 1, len(rates) - 1)], -np.inf)
        value = np.where(room & (total_bits + pairs <= budget), gain / pairs, -np.inf)
        best = int(np.argmax(value))
        if not value[best] > 0:
            break
        level[best] += 1
        total_bits += pairs[best]
        current -= gain[best]
    return [rates[i] for i in level]

