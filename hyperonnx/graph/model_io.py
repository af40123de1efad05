"""Loading and saving models: clear errors for bad files, atomic writes, external data for models
beyond protobuf's 2 GB limit. The input file is never written.

Models larger than memory: `load(path, load_external_data=False)` leaves external tensors in
their files (each bound to the model's folder, see `bind_external_data`);
`tensor_array` reads one such tensor when a pass needs it, new tensors can go to a `SpillFile`,
and `save` copies them into the output one at a time. So `hyperonnx compress` holds one weight
at a time (and its encoder's temporaries), whatever the model's size."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto, helper, numpy_helper

PROTOBUF_LIMIT = 2**31 - 1
# Above this many bytes of tensor data the model goes to external data (a margin below 2 GiB
# for the graph structure itself).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the .onnx file
_COPY_CHUNK = 16 << 20
# The external-data entry that binds a tensor to the folder its `location` is relative to. Its
# name is new in every process, so no file can carry it: a key read from a file (onnx's own
# `basepath` included) is never trusted, and a ModelProto's external data is read only once the
# caller has named its folder (`bind_external_data`, the `base_dir=` arguments).
_BASE_KEY = f"hyperonnx.base.{secrets.token_hex(8)}"


class ModelIOError(Exception):
    """A model file that cannot be read or written; the message is one line for the user."""


def all_tensors(model: ModelProto):
    """Every tensor with data in the model: initializers and node attributes, all graphs."""
    from .walk import scopes
    for scope in scopes(model):
        yield from scope.graph.initializer
        for node in scope.graph.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def load(path: str | os.PathLike, load_external_data: bool = True) -> ModelProto:
    """Load an ONNX model; raise ModelIOError with a one-line reason.

    With `load_external_data=False` external tensors stay in their files (read them with
    `tensor_array`; `save` copies them): for models larger than memory."""
    path = Path(path)
    if not path.exists():
        raise ModelIOError(f"{path}: no such file")
    if path.is_dir():
        raise ModelIOError(f"{path}: is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as e:
        raise ModelIOError(f"{path}: not a readable ONNX model (truncated or not ONNX: {first_line(e)})") from None
    except OSError as e:
        raise ModelIOError(f"{path}: cannot read: {e.strerror or e}") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.initializer
                                       and not model.graph.output):
        raise ModelIOError(f"{path}: not an ONNX model (no graph)")
    if not model.opset_import and model.ir_version == 0:
        raise ModelIOError(f"{path}: not an ONNX model (no IR version or opset)")
    for t in all_tensors(model):
        if _is_external(t):
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            if location and not _contained(path.parent, location)[1]:
                raise ModelIOError(f"{path}: tensor {t.name}: external data {location!r} is outside the model's folder")
            if not location or not (path.parent / location).is_file():
                raise ModelIOError(f"{path}: missing external-data file {location} (tensor {t.name})")
    try:  # a clear error now for a location outside the folder or a bad range
        bind_external_data(forget_bindings(model), path.parent)
        if load_external_data:  # read by our checked reader, not onnx's (one containment rule)
            inline_external_data(model)
    except ModelIOError as e:
        raise ModelIOError(f"{path}: {e}") from None
    except OSError as e:
        raise ModelIOError(f"{path}: cannot read external data: {e.strerror or e}") from None
    return model


def _contained(base: Path, location: str) -> tuple[Path, bool]:
    """(the file `location` names relative to `base`, whether it lies inside `base`): no absolute
    path, no `..` out of it, no symbolic link leading out of it."""
    root = Path(base).resolve()
    if not location or os.path.isabs(location) or "\0" in location:
        return root, False
    file = (root / location).resolve()
    return file, file != root and file.is_relative_to(root)


def has_external_data(model: ModelProto) -> bool:
    return any(_is_external(t) for t in all_tensors(model))


def forget_bindings(model: ModelProto) -> ModelProto:
    """Drop every folder binding (a model read from a file or bytes: whatever keys it carries,
    even this process's own, say nothing about where its data is)."""
    for t in all_tensors(model):
        if _is_external(t) and _BASE_KEY in _entries(t):
            _set_entries(t, {k: v for k, v in _entries(t).items() if k != _BASE_KEY})
    return model


def bind_external_data(model: ModelProto, base_dir: str | os.PathLike | None) -> ModelProto:
    """Bind every external tensor of `model` to `base_dir`, the folder its `location` is relative
    to (checked now: inside that folder, within its file). Tensors already bound (by `load`, by
    an earlier call, spilled by this process) keep their folder; with `base_dir` None, an unbound
    external tensor is a ModelIOError: its folder is not guessed (not the working directory, not a
    key from the file). Returns `model`, changed in place."""
    for t in all_tensors(model):
        if not _is_external(t) or _BASE_KEY in _entries(t):
            continue
        if base_dir is None:
            location = _entries(t).get("location", "")
            raise ModelIOError(f"tensor {t.name}: its data is in the external file {location!r}; give the folder "
                               "it is relative to (base_dir=, the model's folder) or load the model with "
                               "hyperonnx.load(path)")
        # keys from the file other than onnx's own layout keys are dropped: never trusted
        entries = {k: v for k, v in _entries(t).items() if k in ("location", "offset", "length", "checksum")}
        _set_entries(t, {**entries, _BASE_KEY: str(Path(base_dir).resolve())})
        _external_source(t)
    return model


def _entries(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _set_entries(t: TensorProto, entries: dict[str, str]) -> None:
    del t.external_data[:]
    for key, value in entries.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def _external_source(t: TensorProto) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, checked: inside its folder, within the file."""
    info = _entries(t)
    location = info.get("location", "")
    if _BASE_KEY not in info:
        raise ModelIOError(f"tensor {t.name}: its data is in the external file {location!r}; give the folder "
                           "it is relative to (base_dir=, the model's folder) or load the model with "
                           "hyperonnx.load(path)")
    file, inside = _contained(Path(info[_BASE_KEY]), location)
    if not inside or not file.is_file():
        raise ModelIOError(f"tensor {t.name}: external data {location!r} is missing or outside the model's folder")
    try:
        size = file.stat().st_size
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else size - offset
    except (OSError, ValueError) as e:
        raise ModelIOError(f"tensor {t.name}: bad external-data entry: {first_line(e)}") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelIOError(f"tensor {t.name}: external data [{offset}, {offset + length}) lies beyond "
                           f"{location} ({size} bytes)")
    return file, offset, length


def tensor_array(t: TensorProto) -> np.ndarray:
    """A tensor's value, its external data read from its file when it was not loaded."""
    if not _is_external(t):
        try:
            return numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:  # data that does not fill the declared shape: name the tensor
            raise ModelIOError(f"tensor {t.name}: its data does not match its shape {list(t.dims)} "
                               f"({TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type}): "
                               f"{first_line(e)}") from None
    file, offset, length = _external_source(t)
    expected = math.prod(t.dims) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize \
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.UINT8) else None
    if expected is not None and expected != length:
        raise ModelIOError(f"tensor {t.name}: external data holds {length} bytes, its shape needs {expected}")
    inline = TensorProto(name=t.name, dims=t.dims, data_type=t.data_type)
    with open(file, "rb") as fh:
        fh.seek(offset)
        inline.raw_data = fh.read(length)
    return numpy_helper.to_array(inline)


class SpillFile:
    """A scratch file beside the output for tensors a run creates (the seeds of a model larger
    than memory): each is written out at once and stands in the model as an external reference,
    which `save` copies into the output. Removed on exit, an interruption included."""

    def __init__(self, folder: str | os.PathLike, prefix: str = ".hyperonnx"):
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=f"{prefix}.spill.", dir=folder))
            self._file = open(self.folder / "spill.data", "wb")
        except OSError as e:
            raise ModelIOError(f"cannot write: {folder}: {e.strerror or e}") from None

    def tensor(self, array: np.ndarray, name: str) -> TensorProto:
        """An initializer `name` holding `array`, its bytes in the scratch file."""
        inline = numpy_helper.from_array(array, name)
        t = TensorProto(name=name, dims=inline.dims, data_type=inline.data_type,
                        data_location=TensorProto.EXTERNAL)
        offset = self._file.tell()
        self._file.write(inline.raw_data)
        self._file.flush()  # save() reads it through another handle
        _set_entries(t, {"location": "spill.data", "offset": str(offset), "length": str(self._file.tell() - offset),
                         _BASE_KEY: str(self.folder.resolve())})
        return t

    def close(self) -> None:
        self._file.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "SpillFile":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def first_line(e: BaseException) -> str:
    """An exception's message as one line for the user (its type's name when it has none)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _data_bytes(t: TensorProto) -> int:
    if _is_external(t):
        try:
            return _external_source(t)[2]
        except ModelIOError:
            return 0
    return t.ByteSize()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _write_external(t: TensorProto, out, location: str):
    """Append `t`'s data to the open file `out` and point `t` there; return the undo."""
    offset = out.tell()
    old_entries, was_external = _entries(t), _is_external(t)
    if was_external:  # copy from its own file, a chunk at a time
        file, start, length = _external_source(t)
        with open(file, "rb") as src:
            src.seek(start)
            left = length
            while left:
                chunk = src.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise ModelIOError(f"tensor {t.name}: external data ends early")
                out.write(chunk)
                left -= len(chunk)
        data = None
    else:
        data = t.raw_data
        out.write(data)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
    _set_entries(t, {"location": location, "offset": str(offset), "length": str(out.tell() - offset)})

    def undo():
        _set_entries(t, old_entries)
        if not was_external:
            t.ClearField("data_location")
            t.raw_data = data
    return undo


def inline_external_data(model: ModelProto) -> None:
    """Read every external tensor of `model` into the model itself (for a copy handed to
    onnxruntime as bytes, which has no folder to find the data in)."""
    for t in all_tensors(model):
        if _is_external(t):
            _write_inline(t)


def _write_inline(t: TensorProto):
    """Read an external tensor into `t.raw_data`; return the undo."""
    old_entries = _entries(t)
    file, start, length = _external_source(t)
    with open(file, "rb") as src:
        src.seek(start)
        t.raw_data = src.read(length)
    t.ClearField("data_location")  # as numpy_helper writes an inline tensor: the same bytes out
    del t.external_data[:]

    def undo():
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        _set_entries(t, old_entries)
    return undo


def writable_folder(path: str | os.PathLike) -> Path:
    """The folder `path` would be written in; ModelIOError when it is missing or read-only, or
    `path` is a directory (checked before a long run, not after it)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelIOError(f"{path}: cannot write: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelIOError(f"{path}: cannot write: folder {folder} is not writable")
    if path.is_dir():
        raise ModelIOError(f"{path}: is a directory")
    return folder


def check_output(path: str | os.PathLike, source: str | os.PathLike | None = None,
                 others: Sequence[str | os.PathLike] = (), model: ModelProto | None = None) -> Path:
    """Before a long run: `path` is neither the input model `source` nor one of `others` (files
    the same run writes), its folder takes files, and (given the input `model`) its external-data
    file `<path>.data` is none the model reads. Returns the folder; ModelIOError if not."""
    path = Path(path)
    if source is not None and (Path(source).resolve() == path.resolve() or _same_file(Path(source), path)):
        raise ModelIOError(f"{path}: would overwrite the input model; choose another path")
    for other in others:
        if Path(other).resolve() == path.resolve() or _same_file(Path(other), path):
            raise ModelIOError(f"{path}: is also {other}; choose another path")
    folder = writable_folder(path)
    if model is not None:  # the output's external data must not replace a file the input reads
        data = folder / (path.name + ".data")
        for t in all_tensors(model):
            if _is_external(t) and _BASE_KEY in _entries(t) and _same_file(_external_source(t)[0], data):
                raise ModelIOError(f"{path}: its external data would overwrite {data.name}, which the input "
                                   "model reads its tensors from; choose another output name")
    return folder


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a small file (a report) as `save` writes models: into a temporary folder beside it
    (the file gets the usual permissions), then a rename."""
    path = Path(path)
    folder = writable_folder(path)
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
        try:
            (tmpdir / path.name).write_bytes(data)
            os.replace(tmpdir / path.name, path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    except OSError as e:
        raise ModelIOError(f"{path}: cannot write: {e.strerror or e}") from None


def _unbind(model: ModelProto, before: set[int]) -> None:
    """Drop the folder binding from the tensors that did not have it (`before`: their positions
    in `all_tensors` order)."""
    for i, t in enumerate(all_tensors(model)):
        if i in before:
            _set_entries(t, {k: v for k, v in _entries(t).items() if k != _BASE_KEY})


@contextlib.contextmanager
def bound(model: ModelProto, base_dir: str | os.PathLike | None):
    """`bind_external_data` for the duration of a block; the model is left as it was after it."""
    unbound = {i for i, t in enumerate(all_tensors(model)) if _is_external(t) and _BASE_KEY not in _entries(t)}
    if not unbound or base_dir is None:
        yield model
        return
    try:
        yield bind_external_data(model, base_dir)
    finally:
        _unbind(model, unbound)


def save(model: ModelProto, path: str | os.PathLike, *, source: str | os.PathLike | None = None,
         external_data: bool | None = None, base_dir: str | os.PathLike | None = None) -> Path:
    """See `_save`; `base_dir`: the folder the external data of a ModelProto that `load` did not
    read is relative to (its tensors are read from there, checked as `load` checks them; without
    it such a model is refused, see `bind_external_data`)."""
    with bound(model, base_dir):
        return _save(model, path, source=source, external_data=external_data)


def _save(model: ModelProto, path: str | os.PathLike, *, source: str | os.PathLike | None = None,
          external_data: bool | None = None) -> Path:
    """Write `model` to `path` atomically: a temporary file in the same folder, then a rename, so
    a failure or an interruption leaves no partial output. `source` (the input file) is refused
    as the output. Models with more tensor data than fits one protobuf are written with their
    tensors in `<name>.data` beside the model (`external_data=True` forces this, False forbids
    it); tensors still in their files (`load(..., load_external_data=False)`) are copied a chunk
    at a time. `model` is left as it was. Returns the path written."""
    path = Path(path)
    folder = check_output(path, source)
    tensors = list(all_tensors(model))
    if external_data is None:
        external_data = sum(_data_bytes(t) for t in tensors) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    read_from = [_external_source(t)[0] for t in tensors if _is_external(t)]
    # an earlier run's <output>.data beside the output is replaced, unless this model reads from it
    if external_data and any(_same_file(f, folder / data_name) for f in read_from):
        raise ModelIOError(f"{path}: its external data would overwrite {data_name}, which the input model "
                           "reads its tensors from; choose another output name")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    except OSError as e:
        raise ModelIOError(f"{path}: cannot write: {e.strerror or e}") from None
    moved_data = None
    try:
        undo = []
        try:
            if external_data:
                with open(tmpdir / data_name, "wb") as out:
                    for t in tensors:
                        if _is_external(t) or (t.HasField("raw_data") and t.ByteSize() >= EXTERNAL_MIN_BYTES):
                            undo.append(_write_external(t, out, data_name))
            else:
                undo.extend(_write_inline(t) for t in tensors if _is_external(t))
            with open(tmpdir / path.name, "wb") as fh:
                fh.write(model.SerializeToString())
        finally:
            for step in reversed(undo):
                step()
        if external_data:
            # the data first, the model last: until the model is in place nothing is written;
            # a failure or an interruption between the two renames removes the data again
            moved_data = folder / data_name
            os.replace(tmpdir / data_name, moved_data)
        os.replace(tmpdir / path.name, path)
        moved_data = None
    except OSError as e:
        raise ModelIOError(f"{path}: cannot write: {e.strerror or e}") from None
    except ValueError as e:  # protobuf refuses messages over 2 GB
        raise ModelIOError(f"{path}: cannot serialise: {first_line(e)} (try external data)") from None
    finally:
        if moved_data is not None:
            moved_data.unlink(missing_ok=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path
