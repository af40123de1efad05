"""Running compressed models in stock onnxruntime: the custom-op library and ready sessions.

Plain onnxruntime, two lines::

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())

Or `hyperonnx.InferenceSession(path, providers=..., mode=...)`, an `onnxruntime.InferenceSession`.
Fused operators (docs/FORMAT.md §8, what `compress` makes by default) need nothing from either mode:
their kernels read the seed once when the session is created and keep it encoded, decoding only
what each run computes with (no per-run decode of whole weights). The modes are for the
DecodeWeights nodes a model still has (all of them with `compress --no-fuse`):

- ``mode="load"``: every DecodeWeights node fed by an initializer runs once, when the session is
  created; onnxruntime then gets the decoded tensors as plain initializers (no cost per run, and
  its optimisers see them like any other weight). Inference costs what the original model costs;
  memory holds the full-size weights, twice with onnxruntime 1.32, which copies external
  initializers on the CPU although its API asks the caller to keep them alive (checked: zeroing
  our buffers after creation leaves the outputs unchanged).
- ``mode="stream"``: the DecodeWeights nodes run on every run and their outputs are released
  after their last consumer, so memory holds the seeds plus the weights in flight. Constant
  folding is switched off so onnxruntime does not expand the weights at load time. A large table
  read only by a Gather (an embedding) is decoded and gathered in row blocks, so not even it is
  ever whole in memory.

``packing`` (`InferenceSession`, `session_options`) says what a fused kernel makes of its weight
when the session is created: ``"auto"`` (the default) transcodes it once into the layout its
compute reads fastest (int8 compute, accuracy_level 4: int8 in dot-product order with its scales,
about 1 byte a weight beside the seed), ``"none"`` keeps only the seed and decodes from it on
every run (today's smallest memory, for memory-tight devices). Plain onnxruntime: the session
config entry ``hyperonnx.packing`` set before the library is registered.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import pathlib
import re
import tempfile
import weakref
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import format as fmt
from .graph.decompress import read_seed
from .graph.fuse import set_accuracy_level
from .distribution import install_hint
from .graph.walk import scopes

MIN_ORT_VERSION = (1, 20)  # the library asks for ORT API version 20 (custom_ops/include/hyperonnx/ort_api.h)
_MIN_ORT = ".".join(map(str, MIN_ORT_VERSION))
LIBRARY_NAMES = ("libhyperonnx_ops.so", "libhyperonnx_ops.dylib", "hyperonnx_ops.dll")
MODES = ("load", "stream")
PACKINGS = ("auto", "none")  # fused kernels: transcode the weight at creation, or decode from the seed
PACKING_CONFIG_KEY = "hyperonnx.packing"  # read by the library when it is registered (custom_ops/ops.cc)
_PLACEHOLDER_LOCATION = "hyperonnx-decoded-at-session-creation"


def _ort():
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"hyperonnx's runtime needs onnxruntime >= {_MIN_ORT} ({install_hint('cpu')} "
                          f"or {install_hint('gpu')})") from error
    found = tuple(int(part) for part in re.findall(r"\d+", onnxruntime.__version__)[:2])
    if found < MIN_ORT_VERSION:
        raise RuntimeError(f"hyperonnx's custom-op library needs onnxruntime >= {_MIN_ORT} (ORT API version "
                           f"{MIN_ORT_VERSION[1]}); "
                           f"this is onnxruntime {onnxruntime.__version__}: pip install -U onnxruntime")
    return onnxruntime


def get_library_path() -> str:
    """Path of the custom-op library (libhyperonnx_ops.so) built and installed with the package.

    $HYPERONNX_LIBRARY overrides it (e.g. an AddressSanitizer build)."""
    override = os.environ.get("HYPERONNX_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"HYPERONNX_LIBRARY={override} does not exist")
        return os.path.abspath(override)
    import hyperonnx

    # Every entry of the package path: a normal install has one; an editable install by
    # scikit-build-core has the source tree and the site-packages folder holding the library.
    for folder in list(getattr(hyperonnx, "__path__", [])) + [os.path.dirname(__file__)]:
        for name in LIBRARY_NAMES:
            candidate = pathlib.Path(folder) / name
            if candidate.is_file():
                return str(candidate.resolve())
    raise FileNotFoundError("hyperonnx's custom-op library is not installed next to the package; "
                            "build it with `pip install .` (needs a C++17 compiler and CMake)")


_REGISTERED: "weakref.WeakSet" = weakref.WeakSet()  # options that hold the library already


def _packing_entry(sess_options) -> str:
    try:
        return sess_options.get_session_config_entry(PACKING_CONFIG_KEY) or "auto"
    except RuntimeError:  # not set
        return "auto"


def _set_packing(sess_options, packing: str | None) -> None:
    """The fused kernels' packing on `sess_options`, before the library is registered on it (the
    library reads it then); None keeps what the options say."""
    if packing is None:
        return
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, not {packing!r}")
    if sess_options in _REGISTERED:
        if _packing_entry(sess_options) != packing:
            raise ValueError(f"these session options hold the library with packing={_packing_entry(sess_options)!r} "
                             f"already; use fresh options for packing={packing!r}")
        return
    sess_options.add_session_config_entry(PACKING_CONFIG_KEY, packing)


def register(sess_options, packing: str | None = None) -> Any:
    """Register the custom ops on an `onnxruntime.SessionOptions` (once); returns it.

    packing: the fused kernels' weight layout (module docstring): ``"auto"`` or ``"none"``; None
    keeps the options' ``hyperonnx.packing`` entry (absent: auto)."""
    _ort()
    _set_packing(sess_options, packing)
    if sess_options in _REGISTERED:
        return sess_options  # a second registration makes session creation fail ("Domain already set")
    try:
        sess_options.register_custom_ops_library(get_library_path())
    except Exception as error:  # onnxruntime raises its own Fail; add what to do about it
        raise RuntimeError(f"could not register hyperonnx's custom ops: {error}") from error
    _REGISTERED.add(sess_options)
    return sess_options


def _disable_constant_folding(so) -> None:
    key = "optimization.disable_specified_optimizers"
    try:
        current = [name for name in so.get_session_config_entry(key).split(",") if name]
    except RuntimeError:  # not set
        current = []
    if "ConstantFolding" not in current:
        so.add_session_config_entry(key, ",".join(current + ["ConstantFolding"]))


def session_options(mode: str = "stream", sess_options=None, packing: str | None = None):
    """`onnxruntime.SessionOptions` with the DecodeWeights library registered.

    Any mode: the DecodeWeights nodes run inside onnxruntime. ``"stream"`` also disables constant
    folding, so no weight is expanded while the session is created. Decoding once at session
    creation (``"load"``) needs the model rewrite that `InferenceSession` does; plain
    onnxruntime with these options decodes on every run (it does not fold custom ops).
    packing: the fused kernels' weight layout, ``"auto"`` or ``"none"`` (module docstring).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    ort = _ort()
    so = sess_options if sess_options is not None else ort.SessionOptions()
    register(so, packing)
    if mode == "stream":
        _disable_constant_folding(so)
    return so


def _load_model(path_or_model, base_dir=None) -> tuple[onnx.ModelProto, str | None]:
    from .graph.model_io import bind_external_data, forget_bindings, has_external_data, inline_external_data, load
    if isinstance(path_or_model, (onnx.ModelProto, bytes, bytearray, memoryview)):
        if isinstance(path_or_model, onnx.ModelProto):
            model = onnx.ModelProto()
            model.CopyFrom(path_or_model)  # the caller's model stays as it is
        else:
            model = forget_bindings(onnx.load_from_string(bytes(path_or_model)))
        if has_external_data(model):
            # read here, from `base_dir` only (checked: inside it), never by onnxruntime relative
            # to the working directory; without base_dir a clear error
            inline_external_data(bind_external_data(model, base_dir))
        return model, None
    path = os.fspath(path_or_model)
    return load(path), path  # a clear ModelIOError for an unreadable file


def _decode_nodes(graph: onnx.GraphProto) -> list[int]:
    """Positions of the main graph's DecodeWeights nodes whose inputs (seed, and scales for the
    lattice codec) are all initializers."""
    initializers = {t.name for t in graph.initializer}
    return [i for i, node in enumerate(graph.node)
            if node.domain == fmt.OP_DOMAIN and node.op_type == fmt.OP_TYPE
            and 1 <= len(node.input) <= 2 and all(name in initializers for name in node.input)
            and len(node.output) == 1]


def _check_opset(model: onnx.ModelProto) -> None:
    """FORMAT.md's rules, by the validator every path applies (graph/validate.py), before
    onnxruntime sees the model: rule 1 (a known version) and rule 8 (no codec or operator under a
    version older than it), which a kernel cannot see, and rules 2-4, 6 and 9 (the kernels
    apply them too; rules 5 and 7, a scan of every seed, are the kernels')."""
    from .graph.validate import check_model
    check_model(model, indices=False)


def _attribute(node: onnx.NodeProto, name: str):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of `graph` (or of its subgraphs, implicitly) reads, plus its outputs."""
    used = {output.name for output in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                used |= _used_names(sub)
    return used


def decode_initializers(model: onnx.ModelProto, providers=None, intra_op_num_threads: int = 0):
    """Run the model's initializer-fed DecodeWeights nodes once, in onnxruntime.

    Returns (node positions, output names, OrtValues): the decoded tensors, in numpy buffers they keep alive."""
    ort = _ort()
    positions = _decode_nodes(model.graph)
    if not positions:
        return [], [], []
    nodes = [model.graph.node[i] for i in positions]
    feeds: dict[str, np.ndarray] = {}  # the seeds (and scales), read once
    outputs = []
    for node in nodes:
        # FORMAT.md section 5 before any buffer is allocated: a declared shape is then backed by a
        # seed of matching length, so a hostile node cannot make us allocate more than ~64x its seed.
        seed = read_seed(node, (model.graph,))
        fmt.validate(seed)
        feeds[node.input[0]] = seed.payload
        if len(node.input) > 1:
            feeds[node.input[1]] = seed.scales
        outputs.append(helper.make_tensor_value_info(node.output[0], _attribute(node, "dtype"), None))
    # The seeds enter as inputs, not initializers: a decoder model holding them would copy every
    # seed three times more (its proto, its bytes, onnxruntime's copy) at the peak of load mode.
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))
              for name, array in feeds.items()]
    graph = helper.make_graph(nodes, "hyperonnx_decode", inputs, outputs)
    decoder = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    so = session_options("stream")
    so.intra_op_num_threads = intra_op_num_threads
    session = ort.InferenceSession(decoder.SerializeToString(), so, providers=["CPUExecutionProvider"])
    # The kernel writes straight into buffers we own, which become the external initializers.
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(array))
    names, values = [], []
    for node, output in zip(nodes, outputs):
        dtype = output.type.tensor_type.elem_type
        shape = [int(d) for d in _attribute(node, "shape")]
        buffer = np.empty(shape, dtype=np.float32 if dtype == TensorProto.FLOAT else np.uint16)
        value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buffer, dtype)  # keeps `buffer` alive
        binding.bind_ortvalue_output(node.output[0], value)
        names.append(node.output[0])
        values.append(value)
    session.run_with_iobinding(binding)
    return positions, names, list(values)


def _strip_decoders(model: onnx.ModelProto, positions: list[int]) -> onnx.ModelProto:
    """`model` without the nodes at `positions` (modified in place); their outputs become
    placeholder initializers that the decoded tensors replace (add_external_initializers)."""
    graph = model.graph
    nodes = [_copy(graph.node[i]) for i in positions]
    for i in sorted(positions, reverse=True):
        del graph.node[i]
    used = _used_names(graph)
    seeds = {name for node in nodes for name in node.input}
    for i in reversed(range(len(graph.initializer))):  # in place: no copy of the other tensors
        if graph.initializer[i].name in seeds and graph.initializer[i].name not in used:
            del graph.initializer[i]
    for node in nodes:
        placeholder = TensorProto(name=node.output[0], data_type=int(_attribute(node, "dtype")),
                                  dims=[int(d) for d in _attribute(node, "shape")],
                                  data_location=TensorProto.EXTERNAL)
        entry = placeholder.external_data.add()
        entry.key, entry.value = "location", _PLACEHOLDER_LOCATION
        graph.initializer.append(placeholder)
    return model


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


STREAM_BLOCK_BYTES = 4 << 20  # decoded bytes per row block of a gathered weight in stream mode
_MIN_OPSET_FOR_BLOCKS = 13  # Unsqueeze with axes as an input
_BLOCK_DTYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)  # onnxruntime has no bfloat16 Where on the CPU


def _release_freed_memory() -> None:
    """Hand the heap memory Python just freed back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _onnx_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _row_blocks(rows: int, row_pairs: int, bits: int, itemsize: int, group: int = 2) -> list[tuple[int, int]]:
    """Row ranges of about STREAM_BLOCK_BYTES decoded, each starting on a seed byte boundary and
    (lattice, trellis) on a scale group boundary."""
    align = math.lcm(8 // math.gcd(8, (row_pairs * bits) % 8 or 8), group // math.gcd(group, 2 * row_pairs))
    step = max(align, STREAM_BLOCK_BYTES // (2 * row_pairs * itemsize) // align * align)
    return [(low, min(rows, low + step)) for low in range(0, rows, step)]


def _split_gathered(model: onnx.ModelProto) -> int:
    """Stream mode: a large decoded weight whose only reader is one Gather on axis 0 (an embedding
    table) is decoded in row blocks, each block gathered and merged before the next is decoded, so
    onnxruntime holds one block instead of the whole table. The blocks decode the same pairs with
    the same attributes (bit-identical rows); ids out of range still fail in a Gather of their own.
    Rewrites `model` in place; returns the number of weights split."""
    graph = model.graph
    if _onnx_opset(model) < _MIN_OPSET_FOR_BLOCKS:
        return 0
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    implicit = {output.name for output in graph.output}  # read other than by a node's input list
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                implicit |= _used_names(sub)
    initializers = {t.name: t for t in graph.initializer}
    split = 0
    for position in sorted(_decode_nodes(graph), reverse=True):
        decode = graph.node[position]
        weight, seed_name = decode.output[0], decode.input[0]
        shape, dtype, bits = (_attribute(decode, k) for k in ("shape", "dtype", "bits"))
        users = readers.get(weight, [])
        codec = _attribute(decode, "codec")
        scaled = codec in (fmt.CODEC_LATTICE.encode(), fmt.CODEC_TRELLIS.encode())
        trellis = codec == fmt.CODEC_TRELLIS.encode()
        group = _attribute(decode, "group") if scaled else 2
        if (len(users) != 1 or weight in implicit or codec not in (fmt.CODEC_WINDING.encode(), *(c.encode() for c in fmt.SCALED_CODECS))
                or not shape or dtype not in _BLOCK_DTYPES or not isinstance(bits, int) or not isinstance(group, int)
                or group < 2 or group % 2 or bits < 1):
            continue
        gather = users[0]
        if (gather.op_type != "Gather" or gather.domain not in ("", "ai.onnx") or list(gather.input[:1]) != [weight]
                or weight in gather.input[1:] or (_attribute(gather, "axis") or 0) != 0):
            continue
        row = math.prod(shape[1:])
        itemsize = np.dtype(fmt.OUTPUT_DTYPES[dtype]).itemsize
        dims = list(initializers[seed_name].dims)
        scales = initializers.get(decode.input[1]) if len(decode.input) > 1 else None
        # bits per pair of weights: a trellis group of G weights is G*k/8 bytes, 2k bits a pair
        pair_bits = 2 * bits if trellis else bits
        seed_bytes = (-(-shape[0] * row // group) * group * bits // 8 if trellis
                      else (shape[0] * row // 2 * bits + 7) // 8)
        if (row % 2 or shape[0] * row * itemsize < 2 * STREAM_BLOCK_BYTES or dims != [seed_bytes]
                or (scaled and (scales is None or list(scales.dims) != [-(-shape[0] * row // group)]))):
            continue  # small, odd rows, or a seed or scales the kernel will refuse as they stand
        nodes, tensors = _gather_in_blocks(decode, gather, shape, dtype, pair_bits, itemsize, group, seed_bytes)
        where = next(i for i, node in enumerate(graph.node) if node is gather)
        for i in sorted((position, where), reverse=True):
            del graph.node[i]
        where -= position < where
        for offset, node in enumerate(nodes):
            graph.node.insert(where + offset, node)
        graph.initializer.extend(tensors)
        split += 1
    return split


def _gather_in_blocks(decode, gather, shape, dtype, bits, itemsize, group, seed_bytes):
    """Nodes and initializers computing gather's output from row blocks of decode's weight (`bits`
    per pair of weights; the last block's seed ends at `seed_bytes`: a trellis seed holds its
    last group whole). Each block's seed (and the scales of a lattice or trellis node: blocks
    start on group boundaries) is a Slice of
    the node's input at run time (a small copy; the tensor data is never touched here, so the
    rewrite costs no memory beyond the graph)."""
    rows, row = shape[0], math.prod(shape[1:])
    ids, out = gather.input[1], gather.output[0]
    prefix = f"{decode.output[0]}/stream_block"
    const = numpy_helper.from_array
    tensors = [TensorProto(name=f"{prefix}.zeros", dims=[rows] + [1] * (len(shape) - 1), data_type=dtype,
                           raw_data=bytes(rows * itemsize)),
               const(np.array(rows, np.int64), f"{prefix}.rows"), const(np.array(0, np.int64), f"{prefix}.zero"),
               const(np.arange(-len(shape) + 1, 0, dtype=np.int64), f"{prefix}.axes")]
    node = helper.make_node
    # The whole-table Gather of zeros: the merge's start, and onnxruntime's own range check of ids.
    nodes = [node("Gather", [f"{prefix}.zeros", ids], [f"{prefix}.acc"], name=f"{prefix}/check"),
             node("Cast", [ids], [f"{prefix}.ids"], to=TensorProto.INT64),
             node("Less", [f"{prefix}.ids", f"{prefix}.zero"], [f"{prefix}.negative"]),
             node("Add", [f"{prefix}.ids", f"{prefix}.rows"], [f"{prefix}.wrapped"]),
             node("Where", [f"{prefix}.negative", f"{prefix}.wrapped", f"{prefix}.ids"], [f"{prefix}.row"])]
    accumulated = f"{prefix}.acc"
    blocks = _row_blocks(rows, row // 2, bits, itemsize, group)
    for b, (low, high) in enumerate(blocks):
        p = f"{prefix}{b}"
        first = low * (row // 2) * bits // 8
        last = seed_bytes if high == rows else (high * (row // 2) * bits + 7) // 8
        tensors += [const(np.array([first], np.int64), f"{p}.first"), const(np.array([last], np.int64), f"{p}.last"),
                    const(np.array(low, np.int64), f"{p}.low"), const(np.array(high - low, np.int64), f"{p}.rows")]
        block = _copy(decode)
        block.name, block.input[0], block.output[0] = f"{p}/decode", f"{p}.seed", f"{p}.weight"
        for attribute in block.attribute:
            if attribute.name == "shape":
                attribute.ints[:] = [high - low] + list(shape[1:])
        result = out if b == len(blocks) - 1 else f"{p}.acc"
        nodes.append(node("Slice", [decode.input[0], f"{p}.first", f"{p}.last"], [f"{p}.seed"]))
        if len(decode.input) > 1:  # lattice, trellis: the block's groups of scales (low * row is a group multiple)
            tensors += [const(np.array([low * row // group], np.int64), f"{p}.scales_first"),
                        const(np.array([-(-high * row // group)], np.int64), f"{p}.scales_last")]
            nodes.append(node("Slice", [decode.input[1], f"{p}.scales_first", f"{p}.scales_last"], [f"{p}.scales"]))
            block.input[1] = f"{p}.scales"
        nodes += [block,
                  node("Sub", [f"{prefix}.row", f"{p}.low"], [f"{p}.local"]),
                  node("GreaterOrEqual", [f"{p}.local", f"{prefix}.zero"], [f"{p}.above"]),
                  node("Less", [f"{p}.local", f"{p}.rows"], [f"{p}.below"]),
                  node("And", [f"{p}.above", f"{p}.below"], [f"{p}.inside"]),
                  node("Where", [f"{p}.inside", f"{p}.local", f"{prefix}.zero"], [f"{p}.index"]),
                  node("Gather", [f"{p}.weight", f"{p}.index"], [f"{p}.rows_read"]),
                  node("Unsqueeze", [f"{p}.inside", f"{prefix}.axes"], [f"{p}.mask"]),
                  node("Where", [f"{p}.mask", f"{p}.rows_read", accumulated], [result])]
        accumulated = result
    return nodes, tensors


@functools.lru_cache(maxsize=None)
def _session_class():
    ort = _ort()

    class HyperonnxSession(ort.InferenceSession):
        """onnxruntime.InferenceSession that keeps the weights decoded at creation alive."""

        def __init__(self, source, so, providers, provider_options, decoded, mode, **kwargs):
            self.hyperonnx_mode = mode
            self._hyperonnx_decoded = decoded  # add_external_initializers: must outlive the session
            super().__init__(source, so, providers, provider_options, **kwargs)

    return HyperonnxSession


def InferenceSession(path_or_model, sess_options=None, providers: Sequence | None = None,  # noqa: N802
                     provider_options=None, *, mode: str = "load", accuracy_level: int | None = None,
                     base_dir=None, packing: str = "auto", **kwargs):
    """An `onnxruntime.InferenceSession` for a hyperonnx-compressed model (any model works).

    path_or_model: a path, serialized bytes or an `onnx.ModelProto` (not modified).
    mode: ``"load"`` (decode once at creation; the default) or ``"stream"`` (decode on every run).
    accuracy_level: the fused MatMul / Gemm nodes' compute (docs/FORMAT.md §8): 4 int8, 0 float32;
    None (default) keeps what the model says.
    packing: what the fused kernels make of their weights at creation: ``"auto"`` (default: the
    layout their compute reads fastest, e.g. int8 in dot-product order for accuracy_level 4, about
    1 byte a weight more) or ``"none"`` (decode from the seed on every run: least memory).
    sess_options: optional `onnxruntime.SessionOptions`; the library is registered on it (and, in
    load mode, the decoded weights are added to it: use a fresh one per session).
    providers: default ``["CPUExecutionProvider"]``; other arguments are onnxruntime's.
    base_dir: the folder the external data of a ModelProto or bytes is relative to (without it
    such a model is refused; a path's folder is its own).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, not {packing!r}")
    cls = _session_class()
    if providers is None:
        providers = ["CPUExecutionProvider"]
    so = session_options(mode, sess_options, packing)
    model, path = _load_model(path_or_model, base_dir)
    if accuracy_level is not None and set_accuracy_level(model, accuracy_level):
        path = None  # onnxruntime gets our changed copy, not the file
    if mode == "stream":
        _check_opset(model)
        if not _split_gathered(model) and path is not None:
            del model
            return cls(path, so, providers, provider_options, [], mode, **kwargs)
        # Through a file, with our copy gone first: onnxruntime's copy of the model is then the
        # only one while the session is created (stream mode is about peak memory).
        with tempfile.TemporaryDirectory(prefix="hyperonnx-stream-") as folder:
            rewritten = os.path.join(folder, "model.onnx")
            large = model.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF
            onnx.save(model, rewritten, save_as_external_data=large, location="model.data")
            del model
            _release_freed_memory()
            return cls(rewritten, so, providers, provider_options, [], mode, **kwargs)
    _check_opset(model)
    positions, names, values = decode_initializers(model, intra_op_num_threads=so.intra_op_num_threads)
    if not positions and path is not None:
        del model
        return cls(path, so, providers, provider_options, [], mode, **kwargs)
    serialized = _strip_decoders(model, positions).SerializeToString()
    del model
    _release_freed_memory()  # the compressed model and the decoder's seeds
    if names:
        so.add_external_initializers(names, values)
    session = cls(serialized, so, providers, provider_options, values, mode, **kwargs)
    del serialized
    _release_freed_memory()
    return session


__all__ = ["InferenceSession", "MIN_ORT_VERSION", "PACKINGS", "decode_initializers", "get_library_path", "register",
           "session_options"]
