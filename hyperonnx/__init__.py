"""hyperonnx: hyper-compression of ONNX model weights, decoded by a custom operator at run time."""

from .codec import PRESETS, LatticeConfig, Seed, TrellisConfig, WindingConfig, decode, encode
from .format import FormatError
from .graph import ModelIOError, compress, decompress, inspect_model, load, save
from .runtime import InferenceSession, get_library_path, session_options

__version__ = "0.1.0"

__all__ = ["PRESETS", "FormatError", "InferenceSession", "LatticeConfig", "ModelIOError", "Seed", "TrellisConfig", "WindingConfig",
           "compress", "decode", "decompress", "encode", "get_library_path", "inspect_model", "load",
           "save", "session_options", "__version__"]
