"""Hyper-compression codec: `encode(array, config) -> Seed` and the reference `decode(seed)`.

The reference decoder defines the bits every kernel must reproduce (docs/FORMAT.md).
"""

from __future__ import annotations

import numpy as np
from .. import format as fmt
from ..format import Seed
import dataclasses

from . import lattice, trellis, winding
from .lattice import LatticeConfig
from .trellis import TrellisConfig
from .winding import WindingConfig

Config = WindingConfig | LatticeConfig | TrellisConfig
RateConfig = LatticeConfig | TrellisConfig  # configs with a rate target met by per-tensor widths (`plan`)

PRESETS: dict[str, Config] = {
    # The authors' three published settings (DESIGN.md §2); "paper" is their MobileNetV3 one.
    "paper": WindingConfig(side=0.8, points=(1600,), max_rings=4),
    "paper-unet": WindingConfig(side=0.1, points=(225,), max_rings=3),
    "paper-llama": WindingConfig(side=0.1, points=(1600,), max_rings=3, max_mean_abs_error=0.006),
    # Format version 2 (docs/FORMAT.md §7): group scales on a companded Kronecker lattice,
    # 8 index bits per pair (4.125 bits/weight); `bits=` / `target_sqnr=` pick rates per tensor.
    "lattice": LatticeConfig(),
    # The default: the lattice codec at 4.25 bits/weight on average over the tensors compressed
    # together (a model), index widths chosen per tensor; the size of onnxruntime's int4 weights.
    "lattice-4.25": LatticeConfig(bits=4.25),
    # Format version 3 (docs/FORMAT.md §8): a tail-biting bitshift trellis, 4 bits per weight
    # with a 12-bit window and a float16 scale per 128 (4.125 bits/weight); `bits=` / `target_sqnr=`
    # pick k per tensor.
    "trellis": TrellisConfig(),
    # the trellis codec at 4.25 bits/weight on average over the tensors compressed together, k
    # chosen per tensor (as lattice-4.25)
    "trellis-4.25": TrellisConfig(bits=4.25),
    # the same with a 14-bit window: +0.15 dB, encoding 4x slower
    "trellis-4.25-l14": TrellisConfig(window=14, bits=4.25),
}
DEFAULT_PRESET = "lattice-4.25"
DEFAULT_MIN_ELEMENTS = 16


def resolve_config(config: str | Config | None, *, bits: float | None = None,
                   target_sqnr: float | None = None) -> Config:
    """The config a preset name (or None: the default preset) stands for; `bits` (average
    bits/weight) or `target_sqnr` (dB) set the rate target of a lattice config."""
    if config is None:
        config = PRESETS[DEFAULT_PRESET]
    elif isinstance(config, str):
        try:
            config = PRESETS[config]
        except KeyError:
            raise ValueError(f"unknown preset {config!r}; choose one of {', '.join(PRESETS)}") from None
    elif not isinstance(config, (WindingConfig, LatticeConfig, TrellisConfig)):
        raise TypeError(f"config must be a preset name, a WindingConfig, a LatticeConfig or a "
                        f"TrellisConfig, not {type(config).__name__}")
    if bits is not None or target_sqnr is not None:
        if not isinstance(config, (LatticeConfig, TrellisConfig)):
            raise ValueError("bits= and target_sqnr= need a lattice or trellis preset or config")
        config = dataclasses.replace(config, bits=bits, target_sqnr=target_sqnr)
    return config


def _compressible(array: np.ndarray, min_elements: int) -> bool:
    return array.size >= max(1, min_elements) and bool(np.isfinite(array.astype(np.float32)).all())


def plan(arrays: list[np.ndarray], config: str | Config | None = None, *,
         min_elements: int = DEFAULT_MIN_ELEMENTS, **targets) -> list[Config]:
    """Per-tensor configs for a set of tensors: a lattice or trellis config with a `bits` or
    `target_sqnr` target gets one index width per tensor (`config.at(width)`), chosen over the
    whole set (the codec module's plan_samples); any other config is returned as is for every
    tensor."""
    config = resolve_config(config, **targets)
    if not isinstance(config, (LatticeConfig, TrellisConfig)) or config.fixed:
        return [config] * len(arrays)
    module = module_of(config)
    chosen, samples, sizes = [], [], []
    for i, array in enumerate(arrays):  # one tensor at a time (arrays may read each from disk)
        array = np.asarray(array)
        if _compressible(array, min_elements):
            chosen.append(i)
            samples.append(module.sample(array.astype(np.float32).ravel(), config.group))
            sizes.append(array.size)
    with np.errstate(over="ignore", invalid="ignore"):  # huge values: see encode
        widths = module.plan_samples(samples, sizes, config)
    configs = [config.at(config.index_bits)] * len(arrays)
    for i, width in zip(chosen, widths):
        configs[i] = config.at(width)
    return configs


def module_of(config: RateConfig):
    """The codec module of a rate config (sample, ladder_errors, seed_bits, plan_samples, encode)."""
    return lattice if isinstance(config, LatticeConfig) else trellis


def onnx_dtype(dtype: np.dtype) -> int:
    """ONNX TensorProto data type of a float dtype the codec accepts."""
    for code, np_dtype in fmt.OUTPUT_DTYPES.items():
        if np_dtype == dtype:
            return code
    raise TypeError(f"cannot compress {dtype} tensors: float32, float16 and bfloat16 only")


def _raw(array: np.ndarray, reason: str) -> Seed:
    return Seed("raw", tuple(array.shape), onnx_dtype(array.dtype), np.zeros(0, np.uint8),
                {"reason": reason}, array.copy())


def encode(array: np.ndarray, config: str | Config | None = None, *,
           min_elements: int = DEFAULT_MIN_ELEMENTS, bits: float | None = None,
           target_sqnr: float | None = None) -> Seed:
    """Compress a float tensor. Returns a `raw` seed (the tensor kept exactly) when it is smaller
    than `min_elements`, holds NaN or Inf, no setting meets the config's error budget, or its
    decoded values would overflow its dtype. `bits`/`target_sqnr` (lattice and trellis) pick the
    index width for this tensor alone; for a whole model, `plan` shares the target across tensors."""
    array = np.asarray(array)
    dtype = onnx_dtype(array.dtype)
    config = resolve_config(config, bits=bits, target_sqnr=target_sqnr)
    if array.size < max(1, min_elements):
        return _raw(array, "small")
    flat = array.astype(np.float32).ravel()
    if not np.isfinite(flat).all():
        return _raw(array, "non-finite")
    shape = tuple(int(d) for d in array.shape)
    # Values near the float32 limit overflow a codec's float32 centre, scales or decoded values
    # to Inf/NaN; that is no error: such a tensor is kept raw below.
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(config, (LatticeConfig, TrellisConfig)):
            module = module_of(config)
            if not config.fixed:
                config = config.at(module.plan_samples([module.sample(flat, config.group)], [flat.size], config)[0])
            payload, scales, attrs, decoded = module.encode(flat, config)
            codec_name = fmt.CODEC_LATTICE if module is lattice else fmt.CODEC_TRELLIS
            seed = Seed(codec_name, shape, dtype, payload, attrs, scales=scales)
        else:
            result = winding.encode(flat, config)
            if result is None:
                return _raw(array, "error budget")
            payload, attrs, decoded = result
            seed = Seed(fmt.CODEC_WINDING, shape, dtype, payload, attrs)
        if not np.isfinite(decoded.astype(array.dtype)).all():
            return _raw(array, "out of range")  # e.g. a float16 output that would overflow
    try:
        fmt.validate(seed)  # an attribute that overflowed (an Inf ring scale no pair uses)
    except fmt.FormatError:
        return _raw(array, "out of range")
    return seed


def decode(seed: Seed) -> np.ndarray:
    """Reference decoder: the tensor a seed stands for, in its original shape and dtype."""
    if seed.codec == "raw":
        return seed.array.copy()
    fmt.validate(seed)
    if seed.codec == fmt.CODEC_LATTICE:
        values = lattice.decode(seed.payload, seed.scales, seed.attrs, seed.num_elements)
    elif seed.codec == fmt.CODEC_TRELLIS:
        values = trellis.decode(seed.payload, seed.scales, seed.attrs, seed.num_elements)
    else:
        values = winding.decode(seed.payload, seed.attrs, seed.num_elements)
    with np.errstate(over="ignore"):  # float16 overflows to +-Inf, as FORMAT.md §3 says
        return values.astype(fmt.OUTPUT_DTYPES[seed.dtype]).reshape(seed.shape)


__all__ = ["PRESETS", "LatticeConfig", "Seed", "TrellisConfig", "WindingConfig", "decode", "encode", "plan",
           "resolve_config"]
