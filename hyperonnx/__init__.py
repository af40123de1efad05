"""hyperonnx: hyper-compression of ONNX model weights, decoded by a custom operator at run time.

The names below are imported when first used (PEP 562), so `import hyperonnx` and the command
line start without loading numpy, onnx or onnxruntime (the CLI loads them with signals held off).
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "PRESETS": "codec", "LatticeConfig": "codec", "Seed": "codec", "TrellisConfig": "codec",
    "WindingConfig": "codec", "decode": "codec", "encode": "codec",
    "FormatError": "format",
    "ModelIOError": "graph", "compress": "graph", "decompress": "graph", "inspect_model": "graph",
    "load": "graph", "save": "graph",
    "InferenceSession": "runtime", "get_library_path": "runtime", "session_options": "runtime",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule: hyperonnx.runtime, hyperonnx.graph, ...
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
