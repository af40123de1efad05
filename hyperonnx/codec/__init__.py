"""Hyper-compression codec: `encode(array, config) -> Seed` and the reference `decode(seed)`.

The reference decoder defines the bits every kernel must reproduce (docs/FORMAT.md).
"""

from __future__ import annotations

import numpy as np
from .. import format as fmt
from ..format import Seed
from . import winding
from .winding import WindingConfig

PRESETS: dict[str, WindingConfig] = {
    # The authors' three published settings (DESIGN.md §2); "paper" is their MobileNetV3 one.
    "paper": WindingConfig(side=0.8, points=(1600,), max_rings=4),
    "paper-unet": WindingConfig(side=0.1, points=(225,), max_rings=3),
    "paper-llama": WindingConfig(side=0.1, points=(1600,), max_rings=3, max_mean_abs_error=0.006),
}
DEFAULT_PRESET = "paper"
DEFAULT_MIN_ELEMENTS = 16


def resolve_config(config: str | WindingConfig | None) -> WindingConfig:
    if config is None:
        return PRESETS[DEFAULT_PRESET]
    if isinstance(config, str):
        try:
            return PRESETS[config]
        except KeyError:
            raise ValueError(f"unknown preset {config!r}; choose one of {', '.join(PRESETS)}") from None
    if isinstance(config, WindingConfig):
        return config
    raise TypeError(f"config must be a preset name or a WindingConfig, not {type(config).__name__}")


def onnx_dtype(dtype: np.dtype) -> int:
    """ONNX TensorProto data type of a float dtype the codec accepts."""
    for code, np_dtype in fmt.OUTPUT_DTYPES.items():
        if np_dtype == dtype:
            return code
    raise TypeError(f"cannot compress {dtype} tensors: float32, float16 and bfloat16 only")


def _raw(array: np.ndarray, reason: str) -> Seed:
    return Seed("raw", tuple(array.shape), onnx_dtype(array.dtype), np.zeros(0, np.uint8),
                {"reason": reason}, array.copy())


def encode(array: np.ndarray, config: str | WindingConfig | None = None, *,
           min_elements: int = DEFAULT_MIN_ELEMENTS) -> Seed:
    """Compress a float tensor. Returns a `raw` seed (the tensor kept exactly) when it is smaller
    than `min_elements`, holds NaN or Inf, or no setting meets the config's error budget."""
    array = np.asarray(array)
    dtype = onnx_dtype(array.dtype)
    config = resolve_config(config)
    if array.size < max(1, min_elements):
        return _raw(array, "small")
    flat = array.astype(np.float32).ravel()
    if not np.isfinite(flat).all():
        return _raw(array, "non-finite")
    result = winding.encode(flat, config)
    if result is None:
        return _raw(array, "error budget")
    payload, attrs, decoded = result
    if not np.isfinite(decoded.astype(array.dtype)).all():
        return _raw(array, "out of range")  # a float16 output that would overflow
    return Seed(fmt.CODEC_WINDING, tuple(int(d) for d in array.shape), dtype, payload, attrs)


def decode(seed: Seed) -> np.ndarray:
    """Reference decoder: the tensor a seed stands for, in its original shape and dtype."""
    if seed.codec == "raw":
        return seed.array.copy()
    fmt.validate(seed)
    values = winding.decode(seed.payload, seed.attrs, seed.num_elements)
    return values.astype(fmt.OUTPUT_DTYPES[seed.dtype]).reshape(seed.shape)


__all__ = ["PRESETS", "Seed", "WindingConfig", "decode", "encode", "resolve_config"]
