"""The compression pass: every eligible float weight becomes a uint8 seed and a DecodeWeights node.

What this pass ensures:
- each compressed tensor keeps its name: a DecodeWeights node in the graph where the tensor lived
  (main graph or an If/Loop/Scan body at any depth) outputs it, placed before every consumer, so
  consumers, graph inputs, outputs and value_info are untouched;
- a tensor's seed is an initializer of that same graph, with a fresh name;
- tensors with the same dtype, shape and bytes in one graph are encoded once and decoded once
  (the others become Identity of the first);
- tensors the codec keeps raw, integer tensors, small tensors, graph inputs and excluded names stay
  byte for byte; seeds of an already-compressed model are uint8 and so never touched: compressing
  twice changes nothing;
- the model imports opset `ai.hyperonnx` at the least format version holding its codecs and,
  unless disabled, holds the model-local function that decodes DecodeWeights from standard ops
  (function.py; `lattice` nodes need default-domain opset 17, below it the model needs the library).

Why plain protobuf rather than onnx-graphsurgeon: the rewrite is local (drop one initializer or
Constant, add one initializer and one node in the same graph), and a graphsurgeon import/export
round trip rebuilds every graph: it converts all tensors to numpy (external data included),
re-sorts nodes and drops doc strings, metadata and value_info it does not model. Editing the
protobuf in place keeps everything else of the model exactly as it was. (onnx-ir is not a
dependency.)
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from .. import codec
from .. import format as fmt
from . import allocate, samples
from . import function as function_mod
from .fuse import fuse_model, set_accuracy_level
from .model_io import SpillFile, tensor_array
from .walk import NameMaker, all_names, default_opset, scopes

DEFAULT_MIN_ELEMENTS = 1024
DEFAULT_CODEC = "lattice"  # with no preset and no target: this codec at the default output budget
ALLOCATIONS = ("outputs", "weights")
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
DTYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16",
               TensorProto.BFLOAT16: "bfloat16"}


@dataclass
class TensorReport:
    name: str
    graph: str  # "" for the main graph, else the subgraph's path
    source: str  # "initializer" or "Constant"
    shape: list
    dtype: str
    orig_bytes: int
    seed_bytes: int  # bytes in the compressed model (orig_bytes when kept raw)
    compressed: bool
    reason: str = ""  # why kept raw, or "shared with X"
    bits_per_weight: float = 0.0
    sqnr_db: float | None = None
    max_abs_err: float = 0.0
    attrs: dict = field(default_factory=dict)
    sensitivity: float | None = None  # output-aware allocation: output error per unit weight error
    predicted_output_error: float | None = None  # this tensor's share of the output error, predicted
    # which rule set its width: "outputs" (measured), "floor" (allocate.FLOOR_SQNR), "unreached" or
    # "rare If branch" (allocate.FALLBACK_SQNR), None for the weight planner
    rule: str | None = None


@dataclass
class CompressReport:
    tensors: list[TensorReport] = field(default_factory=list)
    seconds: float = 0.0
    preset: str = ""
    min_elements: int = DEFAULT_MIN_ELEMENTS
    function_fallback: bool = True
    target: str = ""  # the rate or quality target the widths were chosen for
    allocation: object = None  # allocate.Allocation when the widths were chosen on the outputs
    notes: list[str] = field(default_factory=list)  # one line each: fallbacks, warnings
    accuracy_level: int = 0  # fused MatMul / Gemm compute: 0 float32, 4 int8
    accuracy_nodes: int = 0  # the fused MatMul / Gemm nodes it applies to

    @property
    def compressed(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.compressed]

    def to_dict(self) -> dict:
        orig = sum(t.orig_bytes for t in self.tensors)
        seed = sum(t.seed_bytes for t in self.tensors)
        return {"preset": self.preset, "target": self.target, "min_elements": self.min_elements,
                "function_fallback": self.function_fallback, "seconds": round(self.seconds, 3),
                "allocation": self.allocation.to_dict() if self.allocation is not None else None,
                "notes": self.notes, "accuracy_level": self.accuracy_level, "accuracy_nodes": self.accuracy_nodes,
                "tensors_considered": len(self.tensors), "tensors_compressed": len(self.compressed),
                "weight_bytes_before": orig, "weight_bytes_after": seed,
                "tensors": [asdict(t) for t in self.tensors]}


@dataclass
class _Site:
    """Where one candidate tensor lives."""

    scope: object  # walk.Scope
    tensor: TensorProto
    source: str  # "initializer" | "Constant"
    node_index: int = -1  # the Constant node's position


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


def find_candidates(model: ModelProto, *, min_elements: int = DEFAULT_MIN_ELEMENTS,
                    include: Sequence[str] | None = None, exclude: Sequence[str] | None = None):
    """(eligible sites, skipped (name, reason)) — eligible: float32/16/bf16 initializers and
    Constant values with >= min_elements elements, passing include/exclude. Initializers that the
    main graph also lists as inputs (the IR < 4 export style, torch.onnx's
    keep_initializers_as_inputs) are weights too: compressing one removes it from the inputs. A
    subgraph's inputs are its formal parameters: initializers named like them are skipped."""
    eligible, skipped = [], []
    # a lattice node's float16 scales are part of a seed, never a weight
    decode_inputs = {name for s in scopes(model) for n in s.graph.node for name in fmt.seed_inputs(n)}
    for scope in scopes(model):
        graph = scope.graph
        inputs = {v.name for v in graph.input}
        sites = [_Site(scope, t, "initializer") for t in graph.initializer]
        for i, node in enumerate(graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        t = TensorProto()
                        t.CopyFrom(a.t)
                        t.name = node.output[0]
                        sites.append(_Site(scope, t, "Constant", i))
        for site in sites:
            t = site.tensor
            if t.data_type not in FLOAT_TYPES or t.name in decode_inputs:
                continue  # integers, seeds (uint8, and float16 scales), strings: never weights
            count = math.prod(t.dims)
            if t.name in inputs and site.source == "initializer" and not scope.is_main:
                skipped.append((t.name, "subgraph input"))
            elif count < max(1, min_elements):
                continue
            elif include and not _matches(t.name, include):
                skipped.append((t.name, "not matched by --include"))
            elif _matches(t.name, exclude):
                skipped.append((t.name, "matched by --exclude"))
            else:
                eligible.append(site)
    return eligible, skipped


class _SiteArrays(Sequence):
    """The sites' tensors, each read only when asked for: `codec.plan` reads none for a fixed
    config, so a model larger than memory still streams one tensor at a time."""

    def __init__(self, sites: list[_Site]):
        self.sites = sites

    def __len__(self) -> int:
        return len(self.sites)

    def __getitem__(self, i: int) -> np.ndarray:
        return tensor_array(self.sites[i].tensor)


def _sqnr(ref: np.ndarray, approx: np.ndarray) -> tuple[float | None, float]:
    r = ref.astype(np.float64).ravel()
    err = approx.astype(np.float64).ravel() - r
    noise = float(np.dot(err, err))
    signal = float(np.dot(r, r))
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    if noise == 0.0:
        return None, max_abs  # exact: infinite SQNR
    return (10.0 * math.log10(signal / noise) if signal > 0 else -math.inf), max_abs


def compress_model(model: ModelProto, config=None, *, bits: float | None = None,
                   target_sqnr: float | None = None, max_output_error: float | None = None,
                   inputs=None, allocation: str = "outputs", min_elements: int = DEFAULT_MIN_ELEMENTS,
                   include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                   function_fallback: bool = True,
                   progress: Callable[[int, int, str], None] | None = None,
                   spill: SpillFile | None = None, fuse: bool = True, accuracy_level: int = 0) -> CompressReport:
    """Compress `model` in place (see the module docstring); return the per-tensor report.
    With `spill`, seeds go to that scratch file as they are made, not into memory. With `fuse`,
    weights read only by MatMul / Gemm / Gather / Conv then become fused operators (fuse.py);
    `accuracy_level` 4 makes the fused MatMul / Gemm compute in int8 (docs/FORMAT.md §8).

    Rates (see `compress`): no preset and no target -> the default output budget; `bits` or
    `max_output_error` -> widths chosen on the model's outputs (allocate.py) on `inputs` (feeds)
    or generated ones; `target_sqnr`, `allocation="weights"` or a model that cannot run here ->
    the weight-error planner (codec.plan)."""
    start = time.perf_counter()
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, not {allocation!r}")
    if max_output_error is not None and not (math.isfinite(max_output_error) and max_output_error > 0):
        raise ValueError("max_output_error must be a positive relative error (e.g. 0.05)")
    if max_output_error is not None and (bits is not None or target_sqnr is not None):
        raise ValueError("give one target: bits, target_sqnr or max_output_error")
    if accuracy_level not in fmt.ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must be 0 (float32 compute) or 4 (int8), not {accuracy_level!r}")
    if accuracy_level and not fuse:
        raise ValueError("accuracy_level applies to fused operators: not with fuse=False (--no-fuse)")
    untargeted = bits is None and target_sqnr is None and max_output_error is None
    if config is None:
        config = DEFAULT_CODEC
    config_obj = codec.resolve_config(config, bits=bits, target_sqnr=target_sqnr)
    # one loop for every mode: a preset named without a target (the default's included) meets the
    # default output budget; a Config object is taken as it is
    if untargeted and isinstance(config, str) and isinstance(config_obj, (codec.LatticeConfig, codec.TrellisConfig)) \
            and config_obj.bits is None and config_obj.target_sqnr is None:
        max_output_error = allocate.DEFAULT_MAX_OUTPUT_ERROR
    rate_config = isinstance(config_obj, (codec.LatticeConfig, codec.TrellisConfig))
    if max_output_error is not None and not rate_config:
        raise ValueError("max_output_error needs a lattice or trellis preset or config")
    report = CompressReport(preset=config if isinstance(config, str) else repr(config_obj),
                            min_elements=min_elements, function_fallback=function_fallback)
    from .validate import check_model
    check_model(model)  # an already compressed input: its nodes must follow FORMAT.md (validate.py)
    sites, _skipped = find_candidates(model, min_elements=min_elements, include=include, exclude=exclude)
    chosen: dict[int, object] = {}  # site index -> Seed chosen by the allocator (None: keep raw)
    configs = None
    runs_here = True  # whether the model runs here to be measured
    output_aware = rate_config and (max_output_error is not None or config_obj.bits is not None)
    if output_aware:
        report.target = (f"max output error {max_output_error:g}" if max_output_error is not None
                         else f"{config_obj.bits:g} bits/weight")
    elif rate_config and config_obj.target_sqnr is not None:
        report.target = f"weight SQNR {config_obj.target_sqnr:g} dB"
    if output_aware and allocation == "outputs" and sites:
        feeds = samples.as_feeds(inputs, model) if inputs is not None else None
        try:
            chosen, report.allocation = allocate.allocate(
                model, sites, config_obj.at(config_obj.index_bits), max_output_error=max_output_error,
                bits=config_obj.bits, feeds=feeds, min_elements=min_elements, progress=_staged(progress))
            report.notes.extend(report.allocation.notes)
        except allocate.CannotRun as why:
            if feeds is not None:  # the user's own inputs: never silently measured on something else
                raise ValueError(f"the sample inputs cannot be run: {why}") from None
            runs_here = False
            fallback = (f"weight SQNR {allocate.FALLBACK_SQNR:g} dB" if max_output_error is not None
                        else f"{config_obj.bits:g} bits/weight")
            report.notes.append(f"output-aware allocation skipped ({why}): widths from the weight-error "
                                f"planner ({fallback})")
            warnings.warn(report.notes[-1], stacklevel=2)
            if max_output_error is not None:
                config_obj = codec.resolve_config(config_obj.at(config_obj.index_bits),
                                                  target_sqnr=allocate.FALLBACK_SQNR)
            report.target = fallback + " (weight planner)"
    elif output_aware and allocation == "weights":
        if max_output_error is not None:
            raise ValueError("max_output_error needs the output-aware allocation, not allocation='weights'")
        report.target += " (weight planner)"
    assessor = None
    if report.allocation is None:
        # one rate target over the whole model: index widths chosen per tensor before encoding
        configs = codec.plan(_SiteArrays(sites), config_obj, min_elements=min_elements)
        if sites and runs_here:  # the result is measured on the outputs all the same (not chosen by them)
            try:
                assessor = allocate.Assessor(model, sites, inputs=samples.as_feeds(inputs, model)
                                             if inputs is not None else None, min_elements=min_elements)
            except allocate.CannotRun as why:
                if inputs is not None:  # the user's own inputs: a clear stop, as for the allocation
                    raise ValueError(f"the sample inputs cannot be run: {why}") from None
                report.notes.append(f"output fidelity not measured ({why})")
    decoded_weights: dict[str, np.ndarray] = {}
    version = max((o.version for o in model.opset_import if o.domain == fmt.OP_DOMAIN),
                  default=min(fmt.KNOWN_VERSIONS))  # the least version holding the codecs used
    names = NameMaker(all_names(model))
    first_of: dict[tuple, str] = {}  # (graph id, dtype, dims, digest) -> name of the decoded tensor
    new_nodes: dict[int, list] = {}  # id(graph) -> nodes to put first in that graph
    replaced_constants: dict[int, dict[int, object]] = {}  # id(graph) -> {node index: new node}
    removed_inits: dict[int, set[str]] = {}
    graphs = {}
    for i, site in enumerate(sites):
        t, graph = site.tensor, site.scope.graph
        graphs[id(graph)] = (graph, len(site.scope.parents))
        if progress:
            progress(i, len(sites), t.name)
        array = tensor_array(t)  # one weight in memory at a time, external data included
        dtype_name = DTYPE_NAMES[t.data_type]
        entry = TensorReport(t.name, site.scope.path, site.source, list(t.dims), dtype_name,
                             int(array.nbytes), int(array.nbytes), False)
        report.tensors.append(entry)
        key = (id(graph), t.data_type, tuple(t.dims), hashlib.sha256(array.tobytes()).hexdigest())
        if key in first_of:
            first = first_of[key]
            entry.compressed, entry.seed_bytes, entry.reason = True, 0, f"shared with {first}"
            if first in decoded_weights:
                decoded_weights.update(assessor.overrides(i, decoded_weights[first]))
            node = helper.make_node("Identity", [first], [t.name], name=f"DecodeWeights/{t.name}")
        else:
            if i in chosen:
                seed = chosen[i]
                info = report.allocation.tensors.get(t.name, {})
                entry.sensitivity = info.get("sensitivity")
                entry.predicted_output_error = info.get("predicted_output_error")
                entry.rule = info.get("rule")
                if seed is None:
                    entry.reason = "kept exact: the output budget needs it"
                    continue
            else:  # the planner's width; tensors the allocator left out are non-finite: raw
                seed = codec.encode(array, configs[i] if configs else config_obj, min_elements=min_elements)
            if seed.codec == "raw":
                entry.reason = str(seed.attrs.get("reason", "raw"))
                continue
            decoded = codec.decode(seed)
            if assessor is not None:
                decoded_weights.update(assessor.overrides(i, decoded))
            entry.compressed, entry.seed_bytes = True, seed.nbytes
            entry.bits_per_weight = seed.bits_per_weight
            entry.sqnr_db, entry.max_abs_err = _sqnr(array, decoded)
            entry.attrs = {k: v for k, v in seed.attrs.items()}
            seed_name = names(f"{t.name}.seed")
            initializer = spill.tensor if spill is not None else numpy_helper.from_array
            graph.initializer.append(initializer(seed.payload, seed_name))
            scales_name = None
            if seed.scales is not None:
                scales_name = names(f"{t.name}.scales")
                graph.initializer.append(initializer(seed.scales, scales_name))
            node = fmt.make_node(seed, seed_name, t.name, scales_name)
            version = max(version, seed.version)
            first_of[key] = t.name
        if site.source == "initializer":
            removed_inits.setdefault(id(graph), set()).add(t.name)
            new_nodes.setdefault(id(graph), []).append(node)
        else:
            replaced_constants.setdefault(id(graph), {})[site.node_index] = node
    if progress:
        progress(len(sites), len(sites), "")
    if assessor is not None:
        report.allocation = assessor.assess(decoded_weights, report.target or f"preset {report.preset}")
        report.notes.extend(report.allocation.notes)
        del assessor, decoded_weights

    # Apply: initializers out, their decode nodes first in the graph (their only input is an
    # initializer of the same graph, so the first position is topologically valid and precedes
    # every consumer, including nodes of subgraphs); a Constant's decode node takes its place.
    # Aliases (Identity) of shared tensors: sites list initializers before Constants, and
    # Constants in node order, so an alias's source is decoded at the front or at an earlier
    # Constant's position: after the decode nodes, or at its own Constant's position, it follows it.
    # Deepest graphs first: rewriting a parent's node list re-creates its nodes, and with them
    # the subgraphs they hold, so those must be final by then.
    for gid, (graph, _depth) in sorted(graphs.items(), key=lambda kv: -kv[1][1]):
        gone = removed_inits.get(gid, set())
        if gone:
            keep = [t for t in graph.initializer if t.name not in gone]
            del graph.initializer[:]
            graph.initializer.extend(keep)
            if graph is model.graph and any(v.name in gone for v in graph.input):
                listed = [v for v in graph.input if v.name in gone]
                report.notes.append(f"{len(listed)} compressed weight(s) were also graph inputs (the IR < 4 "
                                    "export style): they are weights of the compressed model, no longer inputs")
                keep_inputs = [v for v in graph.input if v.name not in gone]
                del graph.input[:]
                graph.input.extend(keep_inputs)
                model.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
        replacements = replaced_constants.get(gid, {})
        front = new_nodes.get(gid, [])
        front = [n for n in front if n.op_type != "Identity"] + [n for n in front if n.op_type == "Identity"]
        ordered = front + [replacements.get(i, node) for i, node in enumerate(graph.node)]
        del graph.node[:]
        graph.node.extend(ordered)

    if any(t.compressed for t in report.tensors) or _has_decode_nodes(model):
        _ensure_opset(model, version)
        if function_fallback:
            _ensure_function(model)
    if fuse:
        fuse_model(model, function_fallback)
        report.accuracy_level = accuracy_level
        report.accuracy_nodes = set_accuracy_level(model, accuracy_level)
    report.seconds = time.perf_counter() - start
    return report


def _staged(progress):
    """The allocator's progress (done, total, name, stage) for a callback that may take only the
    first three (the Python API's documented signature)."""
    if progress is None:
        return None
    import inspect
    try:
        takes_stage = len(inspect.signature(progress).parameters) >= 4
    except (TypeError, ValueError):
        takes_stage = False
    return progress if takes_stage else (lambda done, total, name, stage: progress(done, total, f"{stage} {name}"))


def _has_decode_nodes(model: ModelProto) -> bool:
    return any(n.op_type == fmt.OP_TYPE and n.domain == fmt.OP_DOMAIN
               for s in scopes(model) for n in s.graph.node)


def _ensure_opset(model: ModelProto, version: int) -> None:
    """Import ai.hyperonnx at `version`: the least format version holding every codec used."""
    for opset in model.opset_import:
        if opset.domain == fmt.OP_DOMAIN:
            opset.version = max(opset.version, version)
            return
    model.opset_import.append(helper.make_opsetid(fmt.OP_DOMAIN, version))


def _ensure_function(model: ModelProto) -> bool:
    """Give the model the DecodeWeights function that decodes all its codecs, in place of an
    earlier one (a model compressed again may have gained lattice nodes); False, and no function,
    when no body decodes them at the model's opset (the model then needs the library):
    below MIN_OPSET, `lattice` below LATTICE_MIN_OPSET, `trellis` together with another codec."""
    opset = default_opset(model)
    codecs = {next((a.s for a in n.attribute if a.name == "codec"), b"").decode("utf-8", "replace")
              for s in scopes(model) for n in s.graph.node if n.op_type == fmt.OP_TYPE and n.domain == fmt.OP_DOMAIN}
    ours = next((f for f in model.functions if f.domain == fmt.OP_DOMAIN and f.name == fmt.OP_TYPE), None)
    if not function_mod.decodes(codecs, opset):
        if ours is not None:
            model.functions.remove(ours)
        return False
    built = function_mod.build_function_for(codecs, opset)
    if ours is not None:
        ours.CopyFrom(built)
    else:
        model.functions.append(built)
    # model-local functions need IR version 8, default attribute values (the lattice body) 9
    model.ir_version = max(model.ir_version, 9 if built.attribute_proto else 8)
    return True


def compress(model_or_path, config=None, *, bits: float | None = None,
             target_sqnr: float | None = None, max_output_error: float | None = None,
             inputs=None, allocation: str = "outputs", min_elements: int = DEFAULT_MIN_ELEMENTS,
             include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
             function_fallback: bool = True,
             progress: Callable[[int, int, str], None] | None = None,
             return_report: bool = False, fuse: bool = True, accuracy_level: int = 0, base_dir=None):
    """Compress an ONNX model (a ModelProto, left unmodified, or a path, external data included).

    Returns the compressed onnx.ModelProto, or (model, CompressReport) with return_report=True.
    `config` is a preset name ("paper", "lattice", ...), a WindingConfig or a LatticeConfig.
    With no config and no target, the lattice codec meets the default output budget
    (allocate.DEFAULT_MAX_OUTPUT_ERROR: relative error of every float output on the sample inputs).
    Targets (one at most): `max_output_error` (that budget), `bits` (average bits/weight; widths
    chosen for the least output error), `target_sqnr` (dB of weight error: the weight planner).
    `inputs`: sample inputs (an .npz path or folder, a feed dict, or a list of them; default:
    generated from the graph's input specs). `allocation="weights"` uses the weight-error planner
    for `bits` too. `include`/`exclude` are
    fnmatch-style name patterns; `function_fallback` adds the standard-ops DecodeWeights function
    so the model runs without the hyperonnx library; `fuse` turns weights read only by MatMul / Gemm /
    Gather / Conv into fused operators (docs/FORMAT.md §8: computed from the seed, never decoded
    whole; fuse=False keeps plain DecodeWeights nodes); `accuracy_level=4` makes the fused MatMul /
    Gemm compute in int8 with the library (activations quantised per block, integer dot products;
    float32 in the function fallback), 0 in float32. `base_dir`: the folder a ModelProto's external
    data is relative to (model_io.bind_external_data: without it such a model is refused).
    """
    from .model_io import bind_external_data, load
    if isinstance(model_or_path, ModelProto):
        model = ModelProto()
        model.CopyFrom(model_or_path)
        bind_external_data(model, base_dir)
    else:
        model = load(model_or_path)
    report = compress_model(model, config, bits=bits, target_sqnr=target_sqnr,
                            max_output_error=max_output_error, inputs=inputs, allocation=allocation,
                            min_elements=min_elements, include=include,
                            exclude=exclude, function_fallback=function_fallback, progress=progress, fuse=fuse,
                            accuracy_level=accuracy_level)
    return (model, report) if return_report else model
