"""hyperonnx: hyper-compression of ONNX model weights, decoded by a custom operator at run time."""

from .codec import PRESETS, Seed, WindingConfig, decode, encode
from .format import FormatError

__version__ = "0.1.0"

__all__ = ["PRESETS", "FormatError", "Seed", "WindingConfig", "decode", "encode", "__version__"]
