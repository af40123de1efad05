"""Loading and saving models: clear errors for bad files, atomic writes, external data for models
beyond protobuf's 2 GB limit. The input file is never written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto

PROTOBUF_LIMIT = 2**31 - 1
# Above this many bytes of tensor data the model goes to external data (a margin below 2 GiB
# for the graph structure itself).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ModelIOError(Exception):
    """A model file that cannot be read or written; the message is one line for the user."""


def load(path: str | os.PathLike) -> ModelProto:
    """Load an ONNX model with its external data; raise ModelIOError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise ModelIOError(f"{path}: no such file")
    if path.is_dir():
        raise ModelIOError(f"{path}: is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as e:
        raise ModelIOError(f"{path}: not a readable ONNX model (truncated or not ONNX: {_first_line(e)})") from None
    except OSError as e:
        raise ModelIOError(f"{path}: cannot read: {e.strerror or e}") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.initializer
                                       and not model.graph.output):
        raise ModelIOError(f"{path}: not an ONNX model (no graph)")
    if not model.opset_import and model.ir_version == 0:
        raise ModelIOError(f"{path}: not an ONNX model (no IR version or opset)")
    from .walk import scopes
    for scope in scopes(model):
        for t in scope.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                location = next((e.value for e in t.external_data if e.key == "location"), "")
                if not (path.parent / location).is_file():
                    raise ModelIOError(f"{path}: missing external-data file {location} (tensor {t.name})")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except FileNotFoundError as e:
        raise ModelIOError(f"{path}: missing external-data file {Path(e.filename or '?').name}") from None
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise ModelIOError(f"{path}: cannot read external data: {_first_line(e)}") from None
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _tensor_bytes(model: ModelProto) -> int:
    from .walk import scopes
    total = 0
    for scope in scopes(model):
        total += sum(t.ByteSize() for t in scope.graph.initializer)
        for node in scope.graph.node:
            total += sum(a.t.ByteSize() for a in node.attribute if a.HasField("t"))
    return total


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def save(model: ModelProto, path: str | os.PathLike, *, source: str | os.PathLike | None = None,
         external_data: bool | None = None) -> Path:
    """Write `model` to `path` atomically: a temporary file in the same folder, then a rename, so
    a failure leaves no partial output. `source` (the input file) is refused as the output.
    Models with more tensor data than fits one protobuf are written with their tensors in
    `<name>.data` beside the model (`external_data=True` forces this, False forbids it).
    Returns the path written."""
    path = Path(path)
    if source is not None and (Path(source).resolve() == path.resolve() or _same_file(Path(source), path)):
        raise ModelIOError(f"{path}: output would overwrite the input model; choose another -o")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelIOError(f"{path}: cannot write: folder {folder} does not exist")
    if path.is_dir():
        raise ModelIOError(f"{path}: is a directory")
    if external_data is None:
        external_data = _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    if source is not None and external_data and _same_file(Path(source).parent / data_name, folder / data_name):
        raise ModelIOError(f"{path}: its external data would overwrite the input's {data_name}")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    except OSError as e:
        raise ModelIOError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        tmp_model = tmpdir / path.name
        if external_data:
            onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            # save_model moved the tensors out of the proto; bring them back so `model` stays whole
            onnx.load_external_data_for_model(model, str(tmpdir))
            os.replace(tmpdir / data_name, folder / data_name)
        else:
            data = model.SerializeToString()
            with open(tmp_model, "wb") as fh:
                fh.write(data)
        os.replace(tmp_model, path)
    except OSError as e:
        raise ModelIOError(f"{path}: cannot write: {e.strerror or e}") from None
    except ValueError as e:  # protobuf refuses messages over 2 GB
        raise ModelIOError(f"{path}: cannot serialise: {_first_line(e)} (try external data)") from None
    finally:
        for leftover in tmpdir.iterdir() if tmpdir.exists() else ():
            leftover.unlink()
        if tmpdir.exists():
            tmpdir.rmdir()
    return path
