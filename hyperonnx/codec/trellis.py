"""The `trellis` codec (docs/FORMAT.md §9): weights as a function of a sliding window of the seed.

Every `group` consecutive weights share one float16 scale and one circular bit stream of
k * group bits (k = `index_bits`, the bits per weight). Weight t of a group is

    w_t = h(window_t) * S,   window_t = the L bits of the group's stream from bit k*t on (circular),

so neighbouring weights share L - k bits: the stream is a walk on a bitshift trellis of 2^L states,
and h (a Gaussian-like value of each state, through a fixed permutation of the states: FORMAT.md
§9.3) is computed, never stored. Decoding a weight needs its window only (random access).

Encoding picks the walk of least squared error: a Viterbi search over the 2^L states, O(2^L) per
weight. It runs backwards in time, so that the states a step minimises over are 2^k contiguous
blocks of the cost array (vectorised in numpy here and in the native encoder of the custom-op
library). The walk is tail-biting (the last windows wrap to the group's first bits, nothing extra
is stored): a short first pass across the wrap picks the L - k bits the ends share, a second pass
finds the best walk through them. `viterbi` below is the reference; the library's
`HyperonnxTrellisViterbi` computes the same states bit for bit, on every core.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from .. import format as fmt
from . import bitpack
from .rates import plan_widths
from .lattice import check_rate_targets, decode_scales, store_scales

_F32 = np.float32
WEIGHTS_PER_INDEX = 1  # k index bits per weight: index_bits / WEIGHTS_PER_INDEX bits per weight
MIN_BITS, MAX_BITS = fmt.TRELLIS_BITS
MAX_WINDOW = fmt.TRELLIS_MAX_WINDOW
_WRAP = 16  # weights on each side of the wrap in the first tail-biting pass
MAX_SEARCH_GROUP = 4096  # the encoder's largest group (its search keeps G * 2^(L-k) values)
_BATCH = 256  # groups per numpy Viterbi batch (the back pointers: batch * group * 2^(L-k) bytes)


@dataclass(frozen=True)
class TrellisConfig:
    """Encoder settings of the trellis codec.

    Rate: `index_bits` k per weight plus 16/group for the scales, or a target over a set of
    tensors, `bits` (average bits/weight) or `target_sqnr` (dB), met by per-tensor k (`plan`).
    The window is L = max(`window`, k + `memory`) bits, at most 16: the encoder's work grows as
    2^L per weight, whatever k.
    """

    index_bits: int = 4
    window: int = 12  # the least L
    memory: int = 8  # the least L - k: the bits a window shares with the next one
    group: int = 128  # weights per float16 scale and per tail-biting walk (a multiple of 8)
    # a walk at each of these multiples of the group's root-mean-square, then the least-squares
    # scale of each walk; the best per group is kept (each one costs a search)
    scales: tuple[float, ...] = (1.1, 1.25, 1.4)
    # the multiples from k = 6 on: the group's extremes, clipped at the largest |h| times the
    # scale, dominate the error at high rates (MiniLM at k = 8: +2 dB over `scales`)
    wide_scales: tuple[float, ...] = (1.25, 1.6, 2.0)
    bits: float | None = None
    target_sqnr: float | None = None
    min_index_bits: int = 1  # range the rate allocation chooses from
    max_index_bits: int = 8

    def __post_init__(self):
        if not MIN_BITS <= self.index_bits <= MAX_BITS:
            raise ValueError(f"index_bits must be in [{MIN_BITS}, {MAX_BITS}]")
        if not MIN_BITS <= self.min_index_bits <= self.max_index_bits <= MAX_BITS:
            raise ValueError(f"need {MIN_BITS} <= min_index_bits <= max_index_bits <= {MAX_BITS}")
        if not 0 <= self.memory <= MAX_WINDOW - 1:
            raise ValueError(f"memory must be in [0, {MAX_WINDOW - 1}]")
        if not 1 <= self.window <= MAX_WINDOW:
            raise ValueError(f"window must be in [1, {MAX_WINDOW}]")
        if self.group % 8 or not 8 <= self.group <= MAX_SEARCH_GROUP:
            raise ValueError(f"group must be a multiple of 8 in [8, {MAX_SEARCH_GROUP}]")
        if self.index_bits * self.group < self.effective_window:
            raise ValueError(f"a group's stream (index_bits * group bits) must hold a window of {self.effective_window} bits")
        for multiples in (self.scales, self.wide_scales):
            if not multiples or not all(math.isfinite(m) and m > 0 for m in multiples):
                raise ValueError("scales and wide_scales must be one or more finite multiples > 0")
        check_rate_targets(self.bits, self.target_sqnr)

    @property
    def fixed(self) -> bool:
        return self.bits is None and self.target_sqnr is None

    @property
    def effective_window(self) -> int:
        """L at this config's k: max(window, k + memory), at most MAX_WINDOW."""
        return min(max(self.window, self.index_bits + self.memory), MAX_WINDOW)

    def at(self, index_bits: int) -> "TrellisConfig":
        """This setting at k = index_bits bits per weight, without a rate target (the planner's
        per-tensor options; an allocator may choose among them)."""
        return replace(self, index_bits=index_bits, bits=None, target_sqnr=None)


@functools.lru_cache(maxsize=32)
def values(window: int) -> np.ndarray:
    """h(s) for every state s < 2^L, float32: FORMAT.md §9.3 operation by operation."""
    size = 1 << window
    s = np.arange(size, dtype=np.uint64)
    r = ((s * np.uint64(fmt.TRELLIS_MULTIPLIER)) & np.uint64(size - 1)).astype(np.int64)
    u = (2 * r + 1 - size).astype(_F32) * _F32(2.0 ** -window)
    a, b, c, d = (_F32(v) for v in fmt.TRELLIS_MAP)
    t = u * u
    num = t * b
    num = num + a
    num = u * num
    den = t * d
    den = den + c
    den = den * t
    den = _F32(1) - den
    out = num / den
    out.setflags(write=False)
    return out


def _padded(count: int, group: int) -> int:
    return -(-count // group) * group


def viterbi(targets: np.ndarray, k: int, window: int) -> np.ndarray:
    """Reference encoder: for targets (groups, G) float32 (weights / scale), the windows
    (groups, G) uint32 of the tail-biting walk of least squared error (ties: the first state)."""
    groups, size = targets.shape
    out = np.empty((groups, size), dtype=np.uint32)
    h = values(window)
    for start in range(0, groups, _BATCH):
        x = targets[start:start + _BATCH]
        wrap = min(_WRAP, size // 2)
        # pass 1: the walk across the wrap (last `wrap` weights, then the first `wrap`), free ends;
        # its window at weight 0 fixes the L - k bits the group's ends share
        across = np.concatenate([x[:, size - wrap:], x[:, :wrap]], axis=1)
        first = _walk(across, h, k, window, None)[:, wrap]
        shared = first & np.uint32((1 << (window - k)) - 1)
        out[start:start + _BATCH] = _walk(x, h, k, window, shared)
    return out


def _walk(x: np.ndarray, h: np.ndarray, k: int, window: int, shared: np.ndarray | None) -> np.ndarray:
    """Least-squared-error walk of windows for each row of x. Backwards in time:
    window_t = ((window_{t+1} << k) | chunk_t) mod 2^L, so the best predecessor of window_t is the
    least of the 2^k states (j << (L - k)) | (window_t >> k). `shared` (or None: free ends) fixes
    the low L - k bits of window_0, which are the high ones of window_{G-1} (tail-biting)."""
    batch, size = x.shape
    states = 1 << window
    low = states >> k  # 2^(L-k)
    rows = np.arange(batch)
    cost = (x[:, -1:] - h[None, :]) ** 2
    if shared is not None:  # window_{G-1} >> k == shared
        allowed = (np.arange(states, dtype=np.uint32)[None, :] >> np.uint32(k)) == shared[:, None]
        cost = np.where(allowed, cost, _F32(np.inf))
    back = np.empty((size, batch, low), dtype=np.uint8)
    for t in range(size - 2, -1, -1):
        blocks = cost.reshape(batch, 1 << k, low)
        arg = blocks.argmin(axis=1)
        back[t] = arg
        best = np.take_along_axis(blocks, arg[:, None, :], axis=1)[:, 0, :]
        d = x[:, t:t + 1] - h[None, :]
        cost = np.repeat(best, 1 << k, axis=1) + d * d
    if shared is not None:  # window_0 & (2^(L-k) - 1) == shared
        allowed = (np.arange(states, dtype=np.uint32)[None, :] & np.uint32(low - 1)) == shared[:, None]
        cost = np.where(allowed, cost, _F32(np.inf))
    s = cost.argmin(axis=1).astype(np.uint32)
    out = np.empty((batch, size), dtype=np.uint32)
    for t in range(size):
        out[:, t] = s
        if t < size - 1:
            s = (back[t][rows, s >> np.uint32(k)].astype(np.uint32) << np.uint32(window - k)) | (s >> np.uint32(k))
    return out


@functools.lru_cache(maxsize=1)
def _native():
    """The library's HyperonnxTrellisViterbi, or None when the library is not built."""
    from .. import runtime
    try:
        lib = ctypes.CDLL(runtime.get_library_path())
        fn = lib.HyperonnxTrellisViterbi
    except (OSError, AttributeError, RuntimeError, FileNotFoundError):
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                   ctypes.c_uint32, ctypes.c_void_p]
    return fn


def native_viterbi(targets: np.ndarray, k: int, window: int, threads: int = 0) -> np.ndarray | None:
    """`viterbi` in the custom-op library on `threads` threads (0: every core), or None when the
    library is not available. Byte-identical to `viterbi` for any thread count."""
    fn = _native()
    if fn is None:
        return None
    targets = np.ascontiguousarray(targets, dtype=_F32)
    out = np.empty(targets.shape, dtype=np.uint32)
    error = fn(targets.ctypes.data, targets.shape[0], targets.shape[1], k, window,
               threads or os.cpu_count() or 1, out.ctypes.data)
    if error:
        raise RuntimeError(error.decode())
    return out


def search(targets: np.ndarray, k: int, window: int) -> np.ndarray:
    """The encoder's walks: native when the library is there, else the numpy reference."""
    out = native_viterbi(targets, k, window) if targets.size else None
    return viterbi(targets, k, window) if out is None else out


def _rms_scales(grouped: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", grouped, grouped, dtype=np.float64) / grouped.shape[1])


def _fit(grouped: np.ndarray, config: TrellisConfig) -> tuple[np.ndarray, np.ndarray]:
    """(windows, scales float64) per group: a walk at each of config.scales (k >= 6:
    config.wide_scales) times the group's root-mean-square, each with its least-squares scale;
    the one of least error per group (the first on ties)."""
    k, window = config.index_bits, config.effective_window
    h = values(window).astype(np.float64)
    rms = _rms_scales(grouped)
    windows = scales = error = None
    for multiple in config.scales if k < 6 else config.wide_scales:
        walk = _walks(grouped, rms * multiple, k, window)
        fitted, err = _refit(grouped, h[walk], rms * multiple)
        if windows is None:
            windows, scales, error = walk, fitted, err
        else:
            better = err < error
            windows[better], scales[better], error[better] = walk[better], fitted[better], err[better]
    return windows, scales


def _walks(grouped: np.ndarray, scales: np.ndarray, k: int, window: int) -> np.ndarray:
    inv = np.divide(1.0, scales, out=np.zeros(scales.shape), where=scales > 0)
    inv = np.minimum(inv, np.finfo(_F32).max).astype(_F32)  # subnormal scales: see lattice._steps
    return search(grouped * inv[:, None], k, window)


def _refit(grouped: np.ndarray, q: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares scale <w,q>/<q,q> of each group's walk (the old one where <q,q> = 0) and the
    squared error it leaves."""
    num = np.einsum("ij,ij->i", grouped, q)
    den = np.einsum("ij,ij->i", q, q)
    fitted = np.where(den > 0, np.maximum(num, 0) / np.where(den > 0, den, 1), scales)
    error = np.einsum("ij,ij->i", grouped, grouped) - 2 * fitted * num + fitted * fitted * den
    return fitted, error


def _grouped(flat: np.ndarray, group: int) -> np.ndarray:
    """float32 (groups, group) view of the weights, the tail padded with zeros."""
    grouped = np.zeros((_padded(flat.size, group) // group, group), dtype=_F32)
    grouped.ravel()[:flat.size] = flat
    return grouped


def pack(windows: np.ndarray, k: int) -> np.ndarray:
    """The seed of a tensor's walks: chunk t of a group (its window's low k bits) at stream bits
    [k*t, k*t + k) of the group, groups one after another (FORMAT.md §4 packing)."""
    return bitpack.pack(windows.ravel() & np.uint32((1 << k) - 1), k)


def unpack_windows(payload: np.ndarray, k: int, window: int, groups: int, group: int) -> np.ndarray:
    """Window of every weight (groups, group) from a seed: chunks t, t+1, ... of the group
    (circular), chunk i places at bit k*i."""
    chunks = bitpack.unpack(payload, k, groups * group).reshape(groups, group)
    out = np.zeros((groups, group), dtype=np.uint32)
    for i in range(-(-window // k)):
        out |= np.roll(chunks, -i, axis=1) << np.uint32(k * i)
    return out & np.uint32((1 << window) - 1)


def encode(flat: np.ndarray, config: TrellisConfig):
    """Encode a finite float32 vector; return (payload, scales16, attrs, decoded)."""
    k, window = config.index_bits, config.effective_window
    grouped = _grouped(flat, config.group)
    windows, scales = _fit(grouped, config)
    scales16, unit = store_scales(scales)
    attrs = {"bits": k, "window": window, "group": config.group, "scale_unit": float(_F32(unit))}
    return pack(windows, k), scales16, attrs, _values(windows, scales16, unit, window, flat.size)


def decode(payload: np.ndarray, scales16: np.ndarray, attrs: dict, count: int) -> np.ndarray:
    """Reference decoder (FORMAT.md §9.3): float32 vector of `count` elements (attributes and
    input sizes already validated)."""
    k, window, group = attrs["bits"], attrs["window"], attrs["group"]
    scales16 = np.asarray(scales16, dtype=np.float16)
    windows = unpack_windows(payload, k, window, scales16.size, group)
    return _values(windows, scales16, attrs["scale_unit"], window, count)


def _values(windows: np.ndarray, scales16: np.ndarray, unit: float, window: int, count: int) -> np.ndarray:
    """w = h(window) * S per element, float32."""
    out = values(window)[windows] * decode_scales(scales16, unit)[:, None]
    return out.ravel()[:count]


def sample(flat: np.ndarray, group: int) -> np.ndarray:
    """What `plan_samples` needs of a tensor: about 64 groups (every stride-th), a copy."""
    groups = -(-flat.size // group)
    stride = max(1, groups // 64)
    if stride > 1:
        flat = flat[:groups // stride * stride * group].reshape(-1, stride * group)[:, :group].ravel()
    return np.array(flat, dtype=np.float32)


def _errors(samples: list[np.ndarray], config: TrellisConfig) -> np.ndarray:
    """Squared error of each sample at config.index_bits (scales unrounded)."""
    grouped = np.concatenate([_grouped(s, config.group) for s in samples])
    windows, scales = _fit(grouped, config)
    err = (values(config.effective_window)[windows] * scales[:, None] - grouped).astype(np.float64)
    # zero padding decodes near zero, not exactly: count only the weights
    valid = np.concatenate([_grouped(np.ones(s.size, _F32), config.group) for s in samples]) > 0
    per_group = np.einsum("ij,ij->i", np.where(valid, err, 0), np.where(valid, err, 0))
    owner = np.repeat(np.arange(len(samples)), [-(-s.size // config.group) for s in samples])
    return np.bincount(owner, weights=per_group, minlength=len(samples))


@functools.lru_cache(maxsize=16)
def _error_curve(config: TrellisConfig) -> np.ndarray:
    """Squared error at each k in [min_index_bits, max_index_bits] relative to config.index_bits,
    measured once on a fixed Gaussian sample (about 1/4 per bit)."""
    sample_ = np.random.default_rng(0).standard_normal(1 << 13).astype(_F32)
    errors = np.array([_errors([sample_], config.at(b))[0]
                       for b in range(config.min_index_bits, config.max_index_bits + 1)])
    return errors / errors[config.index_bits - config.min_index_bits]


def probe_setting(config: TrellisConfig) -> TrellisConfig:
    """The setting an allocator measures a tensor's response with at this k: the least window,
    L = max(window, k), so the search costs the same at every k (measured on Gaussian weights:
    k = 7 at L = 12 is 0.3 dB below L = 15 and 6x faster to encode; k = 5 equal)."""
    return replace(config, memory=0)


def seed_bits(size: int, config: TrellisConfig) -> int:
    """Bits of a tensor of `size` weights at config.index_bits: the streams of its whole groups
    and their float16 scales."""
    return _padded(size, config.group) * config.index_bits + 16 * -(-size // config.group)


def ladder_errors(samples: list[np.ndarray], sizes: list[int], config: TrellisConfig) -> np.ndarray:
    """Estimated squared error of each whole tensor (its `sample`, scaled by its size) at every k
    in [min_index_bits, max_index_bits]: (tensors, rates). One k is searched, the others follow
    `_error_curve`."""
    reference = config.at(min(max(config.index_bits, config.min_index_bits), config.max_index_bits))
    weight = np.array(sizes, dtype=np.float64) / np.maximum(1, [s.size for s in samples])
    return (weight * _errors(samples, reference))[:, None] * _error_curve(reference)[None, :]


def plan_samples(samples: list[np.ndarray], sizes: list[int], config: TrellisConfig) -> list[int]:
    """Bits per weight k of each tensor meeting config.bits (average bits/weight, scales included,
    at most the target) or config.target_sqnr (dB over all tensors, estimated): the shared greedy
    (rates.plan_widths). Each tensor's error is measured on its sample at config.index_bits and
    extrapolated along `_error_curve`."""
    if config.fixed or not samples:
        return [config.index_bits] * len(samples)
    widths = range(config.min_index_bits, config.max_index_bits + 1)
    noise = ladder_errors(samples, sizes, config)
    sizes = np.array(sizes, dtype=np.float64)
    weight = sizes / np.maximum(1, [s.size for s in samples])
    signals = weight * np.array([np.dot(x, x) for x in (s.astype(np.float64) for s in samples)])
    coded = np.array([_padded(int(n), config.group) for n in sizes], dtype=np.float64)
    # as lattice.plan_samples: start one bit below the average the budget affords, so that the
    # energy-weighted objective cannot starve low-energy tensors
    start = 0
    if config.bits is not None:
        start = int(np.clip(math.floor(config.bits - 16 / config.group) - 1 - widths[0], 0, len(widths) - 1))
    return plan_widths(noise, signals, sizes, coded, 16 * coded / config.group, widths, config, start)
