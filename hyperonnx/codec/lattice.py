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
from .rates import plan_widths

_F32 = np.float32
WEIGHTS_PER_INDEX = 2  # an index codes a pair of weights: index_bits / WEIGHTS_PER_INDEX bits per weight
_CHUNK = 1 << 12  # pairs per nearest-point step: (9, chunk) temporaries stay in cache and small
# enough for malloc to reuse them rather than map fresh pages for each (measured 2x faster)
_FAR = _F32(1e18)  # decoded value of the out-of-range padding columns: never the nearest
_CANDIDATES = np.arange(9, dtype=np.int32)[:, None]  # the 3x3 neighbourhood, numbered
_INVERSE_KNOTS = 1 << 14  # phi^-1 table: interpolation error ~1e-7, well inside a lattice cell


# search_generator(b) for b = 2 .. 16, tabulated (the search takes 0.1 s at 16 bits; a test
# checks the table against it)
_GENERATORS = {2: 1, 3: 3, 4: 11, 5: 13, 6: 49, 7: 53, 8: 225, 9: 89, 10: 391, 11: 915, 12: 301,
               13: 6725, 14: 11631, 15: 11933, 16: 19303}


def generator(bits: int) -> int:
    """The encoder's generator for `bits` index bits (see `search_generator`)."""
    return _GENERATORS[bits] if bits in _GENERATORS else search_generator(bits)


def search_generator(bits: int) -> int:
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

    @functools.cached_property
    def row_table(self) -> np.ndarray:
        """phi(u(k)) of each step's row k = (j*g + c) mod N, for j = 0 .. N-1."""
        j = np.arange(self.size, dtype=np.int64)
        return self.table[(j * self.generator + self.offset) % self.size]

    def decode_pairs(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (x, y) of trajectory steps j (before the group scale)."""
        return self.table.take(steps), self.row_table.take(steps)

    @functools.cached_property
    def _search(self):
        n = self.size
        basis = _reduced_basis(n, self.generator)
        inverse = np.linalg.inv(basis.astype(np.float64))
        span = int(np.abs(basis).sum()) + 2  # candidates stray at most this far outside [0, N)
        padded = np.full(n + 2 * span, _FAR, dtype=_F32)
        padded[span:span + n] = self.table
        deltas = np.array([d1 * basis[0] + d2 * basis[1] for d1 in (-1, 0, 1) for d2 in (-1, 0, 1)],
                          dtype=np.int32)[:, :, None]  # (9, 2, 1): column and row offsets
        return basis.astype(np.int32), inverse, span, padded, deltas

    @functools.cached_property
    def _inverse(self) -> tuple[np.ndarray, np.ndarray]:
        """The continuous column m (u = (2m - (N-1)) / N) with phi(u) = t at _INVERSE_KNOTS + 1
        evenly spaced t in [-top, top] (float64 Newton), and the slope to the next knot."""
        a, b = float(self.alpha), float(self.beta)
        top = a + b
        t = np.linspace(-top, top, _INVERSE_KNOTS + 1)
        u = t / top
        for _ in range(8):
            u -= (u * (a + b * u * u) - t) / (a + 3 * b * u * u)
        m = (np.clip(u, -1, 1) * self.size + (self.size - 1)) / 2
        return m.astype(_F32), np.append(np.diff(m), 0).astype(_F32)

    def column(self, t: np.ndarray) -> np.ndarray:
        """float32 continuous column m in [-1/2, N - 1/2] whose phi(u(m)) is close to t (clipped),
        interpolated from a table (an approximation is enough: the search compares the
        neighbourhood exactly)."""
        top = float(self.alpha) + float(self.beta)
        knots, slope = self._inverse
        pos = np.minimum(t, _F32(top), dtype=_F32)
        np.maximum(pos, _F32(-top), out=pos)
        pos += _F32(top)
        pos *= _F32(_INVERSE_KNOTS / (2 * top))
        index = pos.astype(np.int32)
        np.clip(index, 0, _INVERSE_KNOTS - 1, out=index)  # NaN targets (overflowing weights) too
        pos -= index
        pos *= slope.take(index)
        pos += knots.take(index)
        return pos

    def nearest(self, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
        """Step j of the decoded point nearest to each normalised target (tx, ty).

        The 3x3 lattice neighbourhood (reduced basis) of the target's position in the
        uncompanded domain is compared at the exact decoded coordinates; companding makes the
        cells slightly anisotropic, which this neighbourhood covers (tests measure the rate of
        misses against brute force)."""
        c = self.offset
        basis, inverse, span, padded, deltas = self._search
        tx, ty = np.asarray(tx, dtype=_F32), np.asarray(ty, dtype=_F32)
        px = self.column(tx)
        py = self.column(ty)
        py -= _F32(c)
        z1 = np.rint(px * _F32(inverse[0, 0]) + py * _F32(inverse[1, 0])).astype(np.int32)
        z2 = np.rint(px * _F32(inverse[0, 1]) + py * _F32(inverse[1, 1])).astype(np.int32)
        i0 = z1 * basis[0, 0] + z2 * basis[1, 0] + span
        k0 = z1 * basis[0, 1] + z2 * basis[1, 1] + (c + span)
        # All nine candidates at once, (9, n). A non-negative float32's bits order like an int32,
        # so each squared distance keeps its candidate number in its 4 lowest bits and one min
        # over the rows picks the nearest (distances equal to 2^-19 relative: the first one).
        dx = np.take(padded, i0 + deltas[:, 0], mode="clip")
        dx -= tx
        dy = np.take(padded, k0 + deltas[:, 1], mode="clip")
        dy -= ty
        dx *= dx
        dy *= dy
        dx += dy
        keys = dx.view(np.int32)
        keys &= ~np.int32(15)
        keys |= _CANDIDATES
        best = deltas[np.minimum.reduce(keys, axis=0) & 15, 0, 0]
        best += i0
        best -= span
        np.clip(best, 0, self.size - 1, out=best)  # a NaN target (overflowing weights) gets some step
        return best.astype(np.int64)

    def nearest_all(self, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
        """`nearest` chunk by chunk; a large input in one contiguous share of chunks per thread
        (numpy releases the GIL; every pair's step is the same however the work is split)."""
        def run(starts) -> list[np.ndarray]:
            return [self.nearest(tx[s:s + _CHUNK], ty[s:s + _CHUNK]) for s in starts]
        starts = range(0, tx.size, _CHUNK)
        workers = min(os.cpu_count() or 1, len(starts) // 16)  # a thread for each 64 K pairs at most
        if workers <= 1:
            parts = run(starts)
        else:
            share = -(-len(starts) // workers)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = [p for part in pool.map(run, [starts[k:k + share] for k in range(0, len(starts), share)])
                         for p in part]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


MIN_BITS, MAX_BITS = 2, 16  # index bits per pair; 2^16 - 1 points keep j*g below 2^32
MAX_GROUP = 1 << 16


def check_rate_targets(bits: float | None, target_sqnr: float | None) -> None:
    """The rate targets a codec config may carry (at most one): average bits/weight or total SQNR."""
    if bits is not None and target_sqnr is not None:
        raise ValueError("give bits or target_sqnr, not both")
    if bits is not None and not (math.isfinite(bits) and bits > 0):
        raise ValueError("bits must be a positive bits/weight target")
    if target_sqnr is not None and not math.isfinite(target_sqnr):
        raise ValueError("target_sqnr must be finite (dB)")


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
        if not (0 < self.alpha <= fmt.LATTICE_FLOAT_LIMIT and 0 <= self.beta <= fmt.LATTICE_FLOAT_LIMIT):
            raise ValueError("companding needs 0 < alpha <= 2**100 and 0 <= beta <= 2**100")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        check_rate_targets(self.bits, self.target_sqnr)

    @property
    def fixed(self) -> bool:
        return self.bits is None and self.target_sqnr is None

    def at(self, index_bits: int) -> "LatticeConfig":
        return replace(self, index_bits=index_bits, bits=None, target_sqnr=None)

    def trajectory(self) -> Trajectory:
        return _trajectory(self.index_bits, self.alpha, self.beta)


@functools.lru_cache(maxsize=64)
def _trajectory(bits: int, alpha: float, beta: float) -> Trajectory:
    """One shared Trajectory per setting, so its tables are built once per process."""
    return Trajectory(bits, generator(bits), _F32(alpha), _F32(beta))


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


def fit_scales(grouped: np.ndarray, traj: Trajectory, iterations: int,
               valid: np.ndarray | None = None) -> np.ndarray:
    """Per-group scales minimising squared error: start at max|w| (the outermost point), then
    Lloyd steps (nearest steps, then the least-squares scale <w,q>/<q,q> of each group).
    `valid` (bool, shaped like `grouped`) marks the weights; None: every element is one."""
    scales = np.abs(grouped).max(axis=1).astype(np.float64) / float(traj.table[-1])
    for _ in range(iterations):
        q = _decoded_unit(traj, _steps(grouped, scales, traj), grouped.shape)
        if valid is not None:
            q[~valid] = 0  # the padding is no weight
        num = np.einsum("ij,ij->i", grouped, q, dtype=np.float64)
        den = np.einsum("ij,ij->i", q, q, dtype=np.float64)
        scales = np.where(den > 0, np.maximum(num, 0) / np.where(den > 0, den, 1), scales)
    return scales


def _valid(count: int, shape: tuple) -> np.ndarray | None:
    """Mask of the first `count` elements of a (groups, group) array; None when that is all."""
    if count == shape[0] * shape[1]:
        return None
    return (np.arange(shape[0] * shape[1]) < count).reshape(shape)


def store_scales(scales: np.ndarray) -> tuple[np.ndarray, float]:
    """float16 scales and the power-of-two unit they count in (the largest lands in [2^14, 2^15))."""
    top = float(scales.max()) if scales.size else 0.0
    unit = 2.0 ** (math.frexp(top)[1] - 15) if top > 0 else 1.0  # top = f * 2^e, f in [0.5, 1)
    unit = min(max(unit, 2.0 ** -126), fmt.LATTICE_FLOAT_LIMIT)  # a normal float32, within rule 2
    return (scales / unit).astype(np.float16), unit


def decode_scales(scales16: np.ndarray, unit: float) -> np.ndarray:
    """FORMAT.md §7.3: S = float32(h) * scale_unit, one float32 multiplication."""
    return scales16.astype(_F32) * _F32(unit)


def quantise(flat: np.ndarray, config: LatticeConfig):
    """(steps, float16 scales, scale unit, trajectory) of a finite float32 vector at config.index_bits."""
    traj = config.trajectory()
    grouped = _grouped(flat, config.group)
    scales16, unit = store_scales(fit_scales(grouped, traj, config.iterations, _valid(flat.size, grouped.shape)))
    steps = _steps(grouped, decode_scales(scales16, unit).astype(np.float64), traj)
    return steps[:fmt.num_pairs(flat.size)], scales16, unit, traj


def encode(flat: np.ndarray, config: LatticeConfig):
    """Encode a finite float32 vector at config.index_bits; return (payload, scales16, attrs, decoded)."""
    steps, scales16, unit, traj = quantise(flat, config)
    attrs = {"bits": config.index_bits, "generator": traj.generator, "group": config.group,
             "alpha": float(traj.alpha), "beta": float(traj.beta), "scale_unit": float(_F32(unit))}
    # decode(payload, ...) unpacks these same steps: skip the round trip
    return bitpack.pack(steps, config.index_bits), scales16, attrs, _values(traj, steps, scales16, unit, config.group, flat.size)


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
    values = np.zeros(scales16.size * group, dtype=_F32)
    values[0:2 * x.size:2] = x
    values[1:2 * y.size:2] = y
    values.reshape(-1, group)[...] *= decode_scales(scales16, unit)[:, None]
    return values[:count]


def _sample(flat: np.ndarray, group: int) -> np.ndarray:
    """A deterministic sample of about 64 groups (every stride-th group) of a tensor."""
    groups = -(-flat.size // group)
    stride = max(1, groups // 64)
    if stride == 1:
        return flat
    # whole strides only (a tensor whose size is not a multiple of the group ends in a partial one)
    return flat[:flat.size // (stride * group) * stride * group].reshape(-1, stride * group)[:, :group].ravel()


def _group_errors(flats: list[np.ndarray], config: LatticeConfig) -> np.ndarray:
    """Squared error of each vector of `flats` at config.index_bits, all quantised in one pass
    (groups are independent; scales unrounded: float16 adds ~-66 dB, nothing a plan sees)."""
    traj = config.trajectory()
    grouped = np.concatenate([_grouped(f, config.group) for f in flats])
    valid = np.concatenate([_grouped(np.ones(f.size, _F32), config.group) for f in flats]) > 0
    scales = fit_scales(grouped, traj, config.iterations, valid)
    decoded = _decoded_unit(traj, _steps(grouped, scales, traj), grouped.shape) * scales[:, None].astype(_F32)
    err = np.where(valid, decoded - grouped, _F32(0)).astype(np.float64)
    owner = np.repeat(np.arange(len(flats)), [-(-f.size // config.group) for f in flats])
    return np.bincount(owner, weights=np.einsum("ij,ij->i", err, err), minlength=len(flats))


@functools.lru_cache(maxsize=16)
def _error_curve(config: LatticeConfig) -> np.ndarray:
    """Squared error at each width min_index_bits..max_index_bits relative to config.index_bits,
    measured once on a fixed Gaussian sample: about 1/2 per index bit (6.02 dB per bit/weight),
    with the wobble of each width's lattice (odd and even widths pack differently)."""
    sample = np.random.default_rng(0).standard_normal(1 << 14).astype(_F32)
    errors = np.array([_group_errors([sample], config.at(b))[0]
                       for b in range(config.min_index_bits, config.max_index_bits + 1)])
    return errors / errors[config.index_bits - config.min_index_bits]


def probe_setting(config: LatticeConfig) -> LatticeConfig:
    """The setting an allocator measures a tensor's response with: the config itself (encoding
    costs the same at every width)."""
    return config


def seed_bits(size: int, config: LatticeConfig) -> int:
    """Bits of a tensor of `size` weights at config.index_bits: the seed and its float16 scales."""
    return fmt.num_pairs(size) * config.index_bits + 16 * -(-size // config.group)


def ladder_errors(samples: list[np.ndarray], sizes: list[int], config: LatticeConfig) -> np.ndarray:
    """Estimated squared error of each whole tensor (its `sample`, scaled by its size) at every
    width min_index_bits..max_index_bits: (tensors, widths). One width is measured, the others
    follow `_error_curve`."""
    reference = config.at(min(max(config.index_bits, config.min_index_bits), config.max_index_bits))
    weight = np.array(sizes, dtype=np.float64) / np.maximum(1, [s.size for s in samples])
    return (weight * _group_errors(samples, reference))[:, None] * _error_curve(reference)[None, :]


def plan(flats: list[np.ndarray], config: LatticeConfig) -> list[int]:
    """Index bits per tensor meeting config.bits (average bits/weight, scales included, at most the
    target) or config.target_sqnr (dB over all tensors, estimated): greedy marginal return, each
    step the upgrade that removes the most squared error per added bit.

    Each tensor's error is measured on a sample at one width (config.index_bits, within the
    range) and extrapolated to the others along `_error_curve` (measured: the same widths on
    MiniLM as measuring every width, at a tenth of the time)."""
    return plan_samples([sample(f, config.group) for f in flats], [f.size for f in flats], config)


def sample(flat: np.ndarray, group: int) -> np.ndarray:
    """What `plan_samples` needs of a tensor (a copy: the tensor itself can be freed)."""
    return np.array(_sample(flat, group), dtype=np.float32)


def plan_samples(samples: list[np.ndarray], sizes: list[int], config: LatticeConfig) -> list[int]:
    """`plan` from each tensor's `sample` and element count: a model larger than memory is
    planned one tensor at a time."""
    if config.fixed or not samples:
        return [config.index_bits] * len(samples)
    widths = range(config.min_index_bits, config.max_index_bits + 1)
    noise = ladder_errors(samples, sizes, config)
    sizes = np.array(sizes, dtype=np.float64)
    weight = sizes / np.maximum(1, [s.size for s in samples])  # sampled sums scaled to whole tensors
    signals = weight * np.array([np.dot(x, x) for x in (s.astype(np.float64) for s in samples)])
    pairs = np.array([fmt.num_pairs(int(n)) for n in sizes], dtype=np.float64)
    scale_bits = np.array([16 * -(-int(n) // config.group) for n in sizes], dtype=np.float64)
    # A bits target starts every tensor one index bit below the average width the budget affords
    # (rounded): the energy-weighted objective would otherwise starve low-energy tensors a network
    # is sensitive to (PP-OCRv4's recogniser read 0 % of its lines at 5 bits/weight, 79 % with it).
    start = 0
    if config.bits is not None:
        floor = math.floor(2 * (config.bits - 16 / config.group) + 0.5) - 1
        start = int(np.clip(floor - widths[0], 0, len(widths) - 1))
    return plan_widths(noise, signals, sizes, pairs, scale_bits, widths, config, start)
