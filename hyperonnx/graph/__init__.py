"""Graph passes over ONNX models, one per module, each stating what it ensures:

- compress.py   — eligible float weights -> uint8 seeds + DecodeWeights nodes (+ function fallback)
- fuse.py       — DecodeWeights read only by MatMul / Gemm / Gather / Conv -> fused operators (and back)
- function.py   — the DecodeWeights FunctionProto from standard ops (runs without the library)
- decompress.py — DecodeWeights nodes -> plain initializers (the reference decoder's output)
- inspect.py    — a read-only summary of what a model holds
- model_io.py   — load with clear errors, atomic save, external data beyond 2 GB
"""

from .compress import DEFAULT_MIN_ELEMENTS, CompressReport, TensorReport, compress, compress_model
from .decompress import decompress, decompress_model
from .function import build_function
from .inspect import inspect_model
from .model_io import ModelIOError, load, save

__all__ = ["DEFAULT_MIN_ELEMENTS", "CompressReport", "ModelIOError", "TensorReport", "build_function",
           "compress", "compress_model", "decompress", "decompress_model", "inspect_model", "load", "save"]
