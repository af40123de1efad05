"""Output-aware bit allocation: each tensor gets the width the model's outputs need.

What this pass ensures:
- every output budget is checked on the model itself: after the widths are chosen, the whole
  compressed model (every tensor decoded, bit-exact with the kernels) runs on the sample inputs and
  its measured error is what the report and the one-line summary say;
- a quality target (`max_output_error`) returns the least bits found whose measured error meets it
  on every float output: when the first choice misses, the widths are raised where the measurement
  says the error comes from and measured again; a tensor may end up kept exactly (raw) when that is
  the cheapest way to meet the budget;
- a size target (`bits`, average bits/weight over the tensors compressed) returns the least
  predicted output error for that size;
- tensors the sample inputs never reach (an If branch not taken) are not starved: they get the
  width at which their own weight error is FALLBACK_SQNR dB below the weights.

How: a probe session runs a copy of the model in which every candidate weight is an overridable
graph input. Each tensor is encoded at the PROBE_RATES with the target codec (its `probe_setting`: trellis at
its least window) and the model runs
with only that tensor replaced: that gives the tensor's *response*, its output error as a
function of its weight error (log-log interpolated between the points, the end slopes beyond
them); the other widths' weight errors are interpolated log-linearly in the width. Errors of
different tensors add (independent noise), so a greedy choice of the upgrade with the most output
error removed per added bit is close to optimal. The measured error of the whole model then
corrects the prediction (per output), and the loop repeats.

Error measures (documented in README "Choosing the size"):
- float outputs: relative error ||y' - y|| / ||y|| on each sample feed, the worst feed counting
  (the cosine of the flattened outputs is about 1 - err^2 / 2), within `max_output_error`;
- class scores (outputs of a final Softmax / LogSoftmax, or named like logits / probabilities):
  argmax over the last axis must agree with the original's on MIN_ARGMAX_AGREEMENT of the
  decisive positions (top class ahead of the runner-up by DECISIVE_MARGIN in probability).
  Probabilities are judged by these decisions alone: a few flipped near-ties dominate their
  relative error (PP-OCRv4's recogniser reads its lines at a probability error of 0.2); logits
  must meet both. Decisions that are all one class (PP-OCRv4's blank on generated images) vouch
  for nothing: those probabilities must meet the error budget too (measured: judged by blank
  decisions alone, a trellis plan at 10x passed while reading 0 % of the lines);
- integer and boolean outputs (argmax, indices): reported as the share of elements changed.
"""

from __future__ import annotations

import hashlib
import re
import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from .. import codec
from ..codec import LatticeConfig, RateConfig
from .model_io import first_line, inline_external_data, tensor_array
from .fidelity import MIN_SCORE_AGREEMENT, Judge
from .samples import FEED_BYTES, graph_inputs, plausible

DEFAULT_MAX_OUTPUT_ERROR = 0.1  # relative error of each float output (cosine ~0.995)
DEFAULT_SAMPLES = 4  # generated feeds when the user gives none
PROBE_RATES = (3, 5, 7)  # bits/weight at which each tensor's output error is measured (interpolated between)
FALLBACK_SQNR = 40.0  # dB: weights the sample inputs never reach (and the weight planner's default)
# dB: the least weight SQNR of any tensor, whatever its measured response says. Sample feeds are
# few and may miss what a tensor does on real data (a detector's class head measured harmless at
# 7-8 dB destroyed every score); the floor is a prior that no measurement lowers.
FLOOR_SQNR = 12.0
MAX_PROBE_BYTES = 1 << 29  # candidate weights beyond this: the weight planner (memory: compress peaks near
# 11x the weights with the probe session, e.g. 1.0 GB for MiniLM-L6's 90 MB)
TARGET_MARGIN = 0.9  # plan for this share of the budget (squared): prediction error
MAX_ROUNDS = 8
BRACKET = 2.0  # a target bracketed this close (squared error) is settled: 1.3 bought nothing on MiniLM
CLASS_START = 0.2  # relative error of class probabilities the first plan aims at
_CLASS_NAME = re.compile(r"logit|prob", re.I)
MIN_ARGMAX_AGREEMENT = 0.99  # class outputs: share of decisive positions whose top class stays
DECISIVE_MARGIN = 0.5  # a position is decisive when its top probability leads the next by this


class CannotRun(Exception):
    """The model cannot be run here (custom ops, unresolved shapes, inputs it needs): the caller
    falls back to the weight planner and says why in one line."""


@dataclass
class Allocation:
    """What the allocator chose and measured, for the report."""

    inputs: str  # where the sample inputs came from
    target: str  # "max_output_error 0.05" or "bits 4.25"
    outputs: list[dict] = field(default_factory=list)  # per output: name, kind, measured, budget
    tensors: dict[str, dict] = field(default_factory=dict)  # name -> width, sensitivity, predicted share
    rounds: int = 0
    seconds: float = 0.0
    met: bool = True
    notes: list[str] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)  # how many tensor names each rule held

    def summary(self) -> str:
        parts = []
        for o in self.outputs:
            if o["kind"] == "float":
                where = f" (worst slice {o['worst_slice']['index']} on axis {o['worst_slice']['axis']})" \
                    if "worst_slice" in o else ""
                parts.append(f"{o['name']} rel err {o['measured']:.4f}{where}")
                for key, label in (("argmax_agreement", "argmax"), ("score_agreement", "score decision")):
                    if o.get(key) is not None:
                        parts.append(f"{o['name']} {label} agreement {o[key]:.4f}")
            else:
                parts.append(f"{o['name']} {o['measured']:.2%} changed")
        if self.quality_target:
            verdict = f"within {self.target}" if self.met else f"MISSES {self.target}"
        else:
            verdict = (f"at {self.target}; within the default max_output_error {DEFAULT_MAX_OUTPUT_ERROR:g}"
                       if self.met else f"at {self.target}; WARNING: misses the default max_output_error "
                                        f"{DEFAULT_MAX_OUTPUT_ERROR:g}")
        rounds = f"{self.rounds} round{'s' if self.rounds != 1 else ''}, " if self.rounds else ""
        return f"outputs on {self.inputs}: {', '.join(parts)} ({verdict}; {rounds}{self.seconds:.1f} s)"

    @property
    def quality_target(self) -> bool:
        """Whether the target was an output budget (else a size or a weight rule, measured after)."""
        return self.target.startswith("max_output_error")

    @property
    def budget_missed(self) -> bool:
        """An output budget that the result misses (a size or weight rule misses none)."""
        return self.quality_target and not self.met

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "target": self.target, "met": self.met, "rounds": self.rounds,
                "seconds": round(self.seconds, 3), "outputs": self.outputs, "rules": self.rules,
                "notes": self.notes}


class Probe:
    """Runs a copy of the model with any candidate weight replaced (weights become graph inputs
    whose initializers are their defaults) on the sample feeds, and compares with the original."""

    def __init__(self, model: ModelProto, names: list[str], feeds: list[dict] | None, sample_count: int):
        import onnxruntime as ort
        work = ModelProto()
        work.CopyFrom(model)
        inline_external_data(work)  # a model loaded without its data: the session gets the bytes
        self.movable = _expose(work, set(names))
        self.outputs = [o.name for o in model.graph.output]
        # the conditions of the main graph's If nodes, read on every feed: a branch the feeds do
        # not all take is measured in a regime real data may not share
        self.conditions = sorted({n.input[0] for n in model.graph.node if n.op_type == "If"} - set(self.outputs))
        for name in self.conditions:
            work.graph.output.append(helper.make_tensor_value_info(name, TensorProto.BOOL, None))
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            from .. import runtime
            runtime.register(options)  # models compressed before may hold DecodeWeights nodes
        except Exception:  # noqa: BLE001 - without the library such a model fails below, clearly
            pass
        try:
            self.session = ort.InferenceSession(work.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            raise CannotRun(f"onnxruntime cannot load the model here: {first_line(error)[:300]}") from None
        del work
        producer = {o: n for n in model.graph.node for o in n.output}
        scores = [_scores_of(producer, o) for o in self.outputs]  # per output: what class scores it may hold
        if feeds is None:
            try:
                named = [k for k, kind in enumerate(scores) if kind]
                feeds, regime = plausible(model, sample_count, run=lambda f: self.session.run(self.outputs, f),
                                          class_outputs=named)
                self.source = f"{len(feeds)} generated feed{'s' if len(feeds) != 1 else ''}" + \
                    (f" ({regime})" if regime else "")
            except Exception as error:  # noqa: BLE001
                raise CannotRun(f"no generated input runs the model: {first_line(error)[:300]}; give --inputs") from None
        else:
            self.source = f"{len(feeds)} given feed{'s' if len(feeds) != 1 else ''}"
        self.feeds = _batched(model, feeds)
        try:
            self.reference = self.run({})
            self.taken = {name: {bool(np.asarray(v).any()) for v in values} for name, values in
                          zip(self.conditions, zip(*[self.session.run(self.conditions, f) for f in self.feeds]))}
        except Exception as error:  # noqa: BLE001
            raise CannotRun(f"onnxruntime cannot run the model on the sample inputs: {first_line(error)[:300]}") from None
        self.float_outputs = [i for i, r in enumerate(self.reference[0]) if np.issubdtype(r.dtype, np.floating)]
        if not self.float_outputs:
            raise CannotRun("the model has no float output to measure")
        # class scores (a Softmax / LogSoftmax or a final linear layer at the end, through ops that
        # only move values, or an output named like logits or probabilities): their decisions,
        # argmax over the last axis, are what they are judged by
        kinds = {i: scores[i] for i in self.float_outputs}
        for i, kind in kinds.items():  # a linear layer's output over a sequence of many classes
            if kind == "linear":
                kinds[i] = "logits" if _sequence_classes(self.reference[0][i]) >= SEQUENCE_CLASSES else None
        self.classes = [j for j, i in enumerate(self.float_outputs)
                        if kinds[i] and self.reference[0][i].ndim >= 1 and self.reference[0][i].shape[-1] > 1]
        self.decisive = {j: [_decisive(f[self.float_outputs[j]]) for f in self.reference] for j in self.classes}
        off_modal = {}
        for j in self.classes:
            tops = [f[self.float_outputs[j]].argmax(-1) for f in self.reference]
            values, counts = np.unique(np.concatenate([t.ravel() for t in tops]), return_counts=True)
            # every position off the modal class: restricted to the decisive ones (none on PP-OCRv4's
            # generated lines) its recogniser read 33 of 96 lines at 7.05x while judged within
            off_modal[j] = [t != values[np.argmax(counts)] for t in tops]
        self.judge = Judge([self.outputs[i] for i in self.float_outputs],
                           [[f[i] for i in self.float_outputs] for f in self.reference], set(self.classes),
                           content={j: off_modal[j] for j in self.classes
                                    if self.reference[0][self.float_outputs[j]].ndim >= 3})
        # probabilities saturate (a few flipped positions dominate their error): decisions only,
        # where the decisions vary. Decisions that are all one class (a text recogniser's blank on
        # generated images) vouch for nothing: such probabilities are judged by their error too.
        self.notes = []
        self.probabilities = []
        for j in self.classes:
            i = self.float_outputs[j]
            if kinds[i] != "probabilities":
                continue
            decided = np.unique(np.concatenate([f[i].argmax(-1)[keep].ravel()
                                                for f, keep in zip(self.reference, self.decisive[j])]))
            if decided.size >= 2:
                self.probabilities.append(j)
            else:
                self.notes.append(f"{self.outputs[i]}: the sample inputs decide {decided.size} class only, so its "
                                  f"probabilities are judged by their relative error too (real --inputs "
                                  f"whose decisions vary are judged by decisions)")

    def run(self, overrides: dict) -> list[list[np.ndarray]]:
        return [self.session.run(self.outputs, {**feed, **overrides}) for feed in self.feeds]

    def measure(self, overrides: dict) -> tuple[np.ndarray, np.ndarray]:
        """(squared relative error of every part of the float outputs (fidelity.Judge), decision
        agreement of each float output: argmax on the decisive positions of class outputs,
        threshold decisions of score-like ones, 1 elsewhere) with these weights replaced."""
        return self._compare(self.run(overrides))

    def _compare(self, got: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        floats = [[g[i] for i in self.float_outputs] for g in got]
        errors = self.judge.errors(floats)
        agreement = self.judge.score_agreement(floats)
        for j in self.classes:
            i = self.float_outputs[j]
            same = total = 0
            for g, r, keep in zip(got, self.reference, self.decisive[j]):
                same += int(np.sum((g[i].argmax(-1) == r[i].argmax(-1))[keep]))
                total += int(np.sum(keep))
            # (the content positions are judged by their error, fidelity.Judge's content part; an
            # agreement counted on them alone would fail on one flip of the few a feed has)
            agreement[j] = min(agreement[j], same / total if total else 1.0)
        return errors, agreement

    def passes(self, output_errors: np.ndarray, agreement: np.ndarray, budget: float | None) -> np.ndarray:
        """Per float output: whether it is kept (decisions agree; error within the squared budget
        where its error counts)."""
        decisions_only = np.isin(np.arange(len(self.float_outputs)), self.probabilities)
        agrees = agreement >= self.min_agreement
        if budget is None:
            return agrees
        return agrees & (decisions_only | (output_errors <= budget * (1 + 1e-9)))

    @property
    def min_agreement(self) -> np.ndarray:
        return np.array([MIN_ARGMAX_AGREEMENT if j in self.classes else MIN_SCORE_AGREEMENT
                         for j in range(len(self.float_outputs))])

    def describe(self, overrides: dict, budget: float | None) -> list[dict]:
        """Per output: kind, measured error (the worst part's relative error for floats, share of
        elements changed otherwise), how it was judged, the budget, and decision agreement."""
        got = self.run(overrides)
        part_errors, agreement = self._compare(got)
        error = self.judge.per_output(part_errors)
        rows = []
        for i, name in enumerate(self.outputs):
            if i in self.float_outputs:
                j = self.float_outputs.index(i)
                row = {"name": name, "kind": "float", "measured": float(math.sqrt(error[j])), "budget": budget,
                       "judged": self.judge.describe(j)}
                axis, index, _ = self.judge.worst_part(part_errors, j)
                if axis is not None:
                    row["worst_slice"] = {"axis": axis, "index": index}
                if j in self.classes:
                    row.update(argmax_agreement=float(agreement[j]), min_agreement=MIN_ARGMAX_AGREEMENT)
                elif self.judge.layouts[j].scored:
                    row.update(score_agreement=float(agreement[j]), min_agreement=MIN_SCORE_AGREEMENT)
                if j in self.probabilities:  # judged by its decisions, not by the error of probabilities
                    row["budget"] = None
            else:
                changed = sum(int(np.sum(g[i] != r[i])) for g, r in zip(got, self.reference))
                row = {"name": name, "kind": str(self.reference[0][i].dtype),
                       "measured": changed / max(1, sum(r[i].size for r in self.reference)), "budget": None}
            rows.append(row)
        return rows


def _decisive(scores: np.ndarray) -> np.ndarray:
    """Positions whose top class leads the runner-up by DECISIVE_MARGIN in probability (scores
    that are not probabilities summing to 1, logits or log probabilities, go through a softmax):
    near-ties flip under any change and decide nothing."""
    p = scores.astype(np.float64)
    if p.size and not (p.min() >= 0 and np.allclose(p.sum(-1), 1.0, atol=1e-3)):
        p = np.exp(p - p.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    top2 = np.sort(p, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) >= DECISIVE_MARGIN


def _batched(model: ModelProto, feeds: list[dict]) -> list[dict]:
    """The feeds joined into one along the first axis when every input has a symbolic first
    dimension and the feeds agree on every other one (one run instead of many), unless together
    they exceed samples.FEED_BYTES (user feeds split to bound memory stay split)."""
    inputs = graph_inputs(model)
    if len(feeds) < 2 or not inputs or \
            sum(np.asarray(a).nbytes for f in feeds for a in f.values()) > FEED_BYTES:
        return feeds
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return feeds
        shapes = {np.asarray(f[value.name]).shape[1:] for f in feeds}
        if len(shapes) != 1 or any(np.asarray(f[value.name]).ndim == 0 for f in feeds):
            return feeds
    return [{v.name: np.concatenate([np.asarray(f[v.name]) for f in feeds]) for v in inputs}]


def _expose(model: ModelProto, names: set[str]) -> set[str]:
    """Make each named weight (initializer or Constant, main graph or subgraph) an initializer of
    the main graph listed as a graph input; return the names this was possible for (a subgraph
    name that the main graph also defines stays where it is)."""
    from .walk import scopes
    main = model.graph
    main_names = {v.name for v in main.input} | {t.name for t in main.initializer} | \
                 {o for n in main.node for o in n.output}
    listed = {v.name for v in main.input}
    moved: set[str] = set()
    # deepest graphs first: rewriting a graph's node list re-creates its nodes and the subgraphs
    # they hold, so those must be final by then
    for scope in sorted(scopes(model), key=lambda s: -len(s.parents)):
        graph = scope.graph
        keep_nodes = []
        for node in graph.node:
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None \
                    and node.output[0] in names and (scope.is_main or node.output[0] not in main_names):
                t = TensorProto()
                t.CopyFrom(value)
                t.name = node.output[0]
                main.initializer.append(t)
                moved.add(t.name)
            else:
                keep_nodes.append(node)
        _retain(graph.node, keep_nodes)
        if not scope.is_main:
            stay = []
            for t in graph.initializer:
                if t.name in names and t.name not in main_names:
                    main.initializer.append(t)
                    moved.add(t.name)
                else:
                    stay.append(t)
            _retain(graph.initializer, stay)
        else:
            moved.update(t.name for t in graph.initializer if t.name in names)
    for t in main.initializer:
        if t.name in moved and t.name not in listed:
            main.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            listed.add(t.name)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers need not be inputs from IR 4 on; as inputs they override
    return moved


def _retain(field, keep: list) -> None:
    """Set a repeated protobuf field to `keep` (untouched when nothing was taken out)."""
    if len(keep) != len(field):
        del field[:]
        field.extend(keep)


@dataclass
class _Tensor:
    """One distinct weight (sites with equal bytes in one graph share it)."""

    names: list[str]
    sites: list[int]
    size: int
    signal: float  # sum of squares
    configs: list  # the widths this tensor may take, cheapest first; the last (None) is raw
    bits: np.ndarray  # seed bits at each rung
    weight_error: np.ndarray | None = None  # squared weight error at each rung (probed, interpolated between)
    output_error: np.ndarray | None = None  # (rungs, outputs) squared relative error, this tensor alone
    sensitivity: float | None = None  # output error per unit weight error at the first probe width


def _rungs(config: RateConfig, size: int, dtype_bits: int):
    """Widths the allocator may choose for one tensor (each width of the codec, then raw) and
    their seed bits."""
    module = codec.module_of(config)
    # at most one bit/weight below the lowest probe: further down, extrapolated responses miss
    # collapses (measured: a depthwise Conv of PP-OCR's classifier with trellis at 1 bit/weight,
    # predicted 0.005 from 3, 5 and 7 bits/weight, measured 0.23)
    lowest = max(config.min_index_bits, (min(PROBE_RATES) - 1) * module.WEIGHTS_PER_INDEX)
    configs = [config.at(w) for w in range(lowest, config.max_index_bits + 1)]
    bits = np.array([module.seed_bits(size, c) for c in configs] + [size * dtype_bits], dtype=np.float64)
    return configs + [None], bits


def _log_interpolate(x: np.ndarray, known_x: np.ndarray, known_y: np.ndarray, min_slope: float,
                     max_slope: float) -> np.ndarray:
    """y at x, piecewise linear through the known points, beyond them the end segment's slope
    clipped to [min_slope, max_slope] (one known point: slope 1, clipped)."""
    order = np.argsort(known_x)
    kx, ky = known_x[order], known_y[order]
    if kx.size == 1:
        return ky[0] + np.clip(1.0, min_slope, max_slope) * (x - kx[0])
    y = np.interp(x, kx, ky)
    low = np.clip((ky[1] - ky[0]) / max(kx[1] - kx[0], 1e-30), min_slope, max_slope)
    high = np.clip((ky[-1] - ky[-2]) / max(kx[-1] - kx[-2], 1e-30), min_slope, max_slope)
    y = np.where(x < kx[0], ky[0] + low * (x - kx[0]), y)
    return np.where(x > kx[-1], ky[-1] + high * (x - kx[-1]), y)


def _ladder(measured: dict[int, float], rungs: int) -> np.ndarray:
    """Squared weight error at every coded rung from the rungs measured: log-linear in the width
    between them, the end slopes beyond (never rising with width)."""
    known = np.array(sorted(measured), dtype=np.float64)
    logs = np.log(np.array([measured[int(r)] for r in known]))
    errors = np.exp(_log_interpolate(np.arange(rungs, dtype=np.float64), known, logs, -np.inf, 0.0))
    return np.maximum.accumulate(errors[::-1])[::-1]


def _respond(probe_weight: np.ndarray, probe_output: np.ndarray, weight_error: np.ndarray) -> np.ndarray:
    """Output error (rungs, outputs) at each rung's weight error, through the tensor's response
    measured at the probe points ((points,) weight errors, (points, outputs) output errors):
    log-log interpolation, output error never falling as weight error rises; the raw rung (the
    last) is exact."""
    x = np.log(np.maximum(weight_error[:-1], 1e-300))
    out = np.zeros((len(weight_error), probe_output.shape[1]))
    known_x = np.log(probe_weight)
    for o in range(probe_output.shape[1]):
        y = _log_interpolate(x, known_x, np.log(np.maximum(probe_output[:, o], 1e-30)), 0.0, np.inf)
        out[:-1, o] = np.exp(y)
    out[:-1] = np.maximum.accumulate(out[:-1][::-1], axis=0)[::-1]  # never rising with width
    out[:-1][weight_error[:-1] <= 0] = 0.0
    return out


def allocate(model: ModelProto, sites, config: RateConfig, *, max_output_error: float | None = None,
             bits: float | None = None, feeds: list[dict] | None = None,
             sample_count: int = DEFAULT_SAMPLES, min_elements: int = 1, progress=None):
    """Choose a width of `config`'s codec per site (a config, or None: keep raw) for an output
    budget or a size. Returns ({site index: Seed or None}, Allocation). Raises CannotRun when the
    model cannot run here (the caller falls back to the weight planner)."""
    start = time.perf_counter()
    if any(site.tensor.data_type == TensorProto.BFLOAT16 for site in sites):
        raise CannotRun("onnxruntime's Python API takes no bfloat16 weights to measure with")
    tensors = _distinct(sites, config, min_elements)
    total_bytes = sum(t.bits[-1] // 8 for t in tensors)
    if total_bytes > MAX_PROBE_BYTES:
        raise CannotRun(f"{total_bytes / 1e9:.1f} GB of weights: more than a probe session may hold, "
                        f"{MAX_PROBE_BYTES / 1e9:.1f} GB")
    probe = Probe(model, [n for t in tensors for n in t.names], feeds, sample_count)
    allocation = Allocation(probe.source, f"max_output_error {max_output_error:g}" if bits is None
                            else f"bits {bits:g}")
    allocation.notes.extend(probe.notes)
    cache: dict[tuple[int, int], object] = {}

    def encoded(k: int, rung: int):
        """Tensor k's seed at a rung (None on the raw rung), encoded once."""
        t = tensors[k]
        if t.configs[rung] is None:
            return None
        if (k, rung) not in cache:
            cache[(k, rung)] = codec.encode(tensor_array(sites[t.sites[0]].tensor), t.configs[rung],
                                            min_elements=min_elements)
        return cache[(k, rung)]

    def decoded(k: int, rung: int) -> np.ndarray:
        seed = encoded(k, rung)
        if seed is None or seed.codec == "raw":
            return tensor_array(sites[tensors[k].sites[0]].tensor)
        return codec.decode(seed)

    module = codec.module_of(config)
    probe_widths = {rate * module.WEIGHTS_PER_INDEX for rate in PROBE_RATES}
    unreached = 0
    for k, t in enumerate(tensors):  # one tensor at a time, at a few widths
        if progress:
            progress(k, len(tensors), t.names[0], "measured")
        probe_rungs = [r for r, c in enumerate(t.configs[:-1]) if c.index_bits in probe_widths] or [0]
        original = tensor_array(sites[t.sites[0]].tensor)
        array = original.astype(np.float64)
        weight_errors, output_errors = {}, {}
        for r in probe_rungs:
            seed = codec.encode(original, module.probe_setting(t.configs[r]), min_elements=min_elements)
            approx = original if seed.codec == "raw" else codec.decode(seed)
            diff = approx.astype(np.float64) - array
            weight_errors[r] = float(np.sum(diff * diff))
            if weight_errors[r] > 0 and set(t.names) <= probe.movable:
                output_errors[r] = probe.measure({n: approx for n in t.names})[0]
        t.weight_error = np.zeros(len(t.bits))
        if any(e > 0 for e in weight_errors.values()):
            t.weight_error[:-1] = _ladder({r: e for r, e in weight_errors.items() if e > 0}, len(t.bits) - 1)
        points = [w for w in output_errors if np.any(output_errors[w] > 0)]
        if points:
            probe_weight = np.array([weight_errors[w] for w in points])
            probe_output = np.array([output_errors[w] for w in points])
            t.output_error = _respond(probe_weight, probe_output, t.weight_error)
            t.sensitivity = float(np.max(probe_output[0] / probe_weight[0]))
        elif any(e > 0 for e in weight_errors.values()):
            unreached += 1
    if progress:
        progress(len(tensors), len(tensors), "", "measured")
    if unreached:
        allocation.notes.append(f"{unreached} tensor(s) not reached by the sample inputs (or not "
                                f"measurable): widths for {FALLBACK_SQNR:g} dB weight SQNR")
    chains = _branch_chains(model)
    branch = np.array([not all(c is not None and probe.taken.get(c) == {taken} for c, taken in
                               chains.get(id(sites[t.sites[0]].scope.graph), ()))
                       for t in tensors], dtype=bool)
    if branch.any():
        allocation.notes.append(f"{int(branch.sum())} tensor(s) in If branches the sample feeds do not all take: "
                                f"held at {FALLBACK_SQNR:g} dB weight SQNR (not judged by rarely reached outputs)")
    for k in np.where(branch)[0]:
        tensors[k].output_error = None
    fixed = np.array([t.output_error is None for t in tensors], dtype=bool)
    outputs = probe.judge.parts
    predicted = np.array([t.output_error if t.output_error is not None else np.zeros((len(t.bits), outputs))
                          for t in tensors]) if tensors else np.zeros((0, 0, outputs))
    rung = np.array([_sqnr_rung(t, FALLBACK_SQNR) if fixed[k] else _sqnr_rung(t, FLOOR_SQNR)
                     for k, t in enumerate(tensors)], dtype=np.int64)
    bit_table = np.array([t.bits for t in tensors]) if tensors else np.zeros((0, 0))
    if bits is not None and tensors and \
            bit_table[np.arange(len(tensors)), rung].sum() > bits * sum(t.size for t in tensors):
        rung = np.where(fixed, rung, 0)
        allocation.notes.append(f"bits {bits:g} is below what the {FLOOR_SQNR:g} dB weight SQNR floor needs: "
                                "the floor is not applied")
    start_rung = rung

    def overrides(rung: np.ndarray) -> dict:
        chosen = {}
        for k, t in enumerate(tensors):
            value = decoded(k, int(rung[k]))
            chosen.update({n: value for n in t.names})
        return chosen

    if bits is not None:  # a size: the least predicted error, measured once
        rung = _greedy(predicted, bit_table, start_rung, fixed, None, bits * sum(t.size for t in tensors))
        allocation.rounds = 1
    else:
        rung = _search(probe, predicted, bit_table, start_rung, fixed, max_output_error ** 2,
                       overrides, allocation)
    final = overrides(rung)
    # a size target is judged against the default budget: the summary warns when it misses it
    rows = probe.describe(final, max_output_error if bits is None else DEFAULT_MAX_OUTPUT_ERROR)
    allocation.met = _met(rows)
    allocation.outputs = rows
    seeds: dict[int, object] = {}
    for k, t in enumerate(tensors):
        for s in t.sites:
            seeds[s] = encoded(k, int(rung[k]))
        chosen = t.configs[int(rung[k])]
        r = int(rung[k])
        rule = ("rare If branch" if branch[k] else "unreached" if fixed[k] else
                "floor" if r == start_rung[k] and r > 0 else "outputs")
        info = {"width": None if chosen is None else chosen.index_bits, "rule": rule,
                "sensitivity": t.sensitivity,
                "predicted_output_error": None if fixed[k] else float(math.sqrt(np.max(predicted[k, int(rung[k])])))}
        for name in t.names:
            allocation.tensors[name] = info
    rules = {}
    for info in allocation.tensors.values():
        rules[info["rule"]] = rules.get(info["rule"], 0) + 1
    allocation.rules = rules
    allocation.seconds = time.perf_counter() - start
    return seeds, allocation


_MOVERS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast"}
SEQUENCE_CLASSES = 16  # a linear layer's output with this many classes over a sequence: class scores


def _sequence_classes(x: np.ndarray) -> int:
    """The classes of a sequence of class scores (its last axis where it has rank 3 or more), 0 else."""
    return int(x.shape[-1]) if x.ndim >= 3 else 0


def _scores_of(producer: dict, name: str) -> str | None:
    """What class scores output `name` may hold, from its producer (`producer`: value name -> node),
    looked at through ops that only move values: "probabilities" (a Softmax / LogSoftmax),
    "logits" (named like logits / probabilities), "linear" (a final MatMul / Gemm or its bias Add:
    class scores only over a sequence of SEQUENCE_CLASSES or more, which the caller sees in the
    values; a linear layer of rank 2 is as often a regression or an embedding), None otherwise."""
    current = name
    for _ in range(8):
        node = producer.get(current)
        if node is None or node.op_type not in _MOVERS:
            break
        current = node.input[0]
    node = producer.get(current)
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return "probabilities"
    if _CLASS_NAME.search(name):
        return "logits"
    return "linear" if node is not None and (node.op_type in ("MatMul", "Gemm") or (
        node.op_type == "Add" and any(producer.get(i) is not None and producer[i].op_type in ("MatMul", "Gemm")
                                      for i in node.input))) else None


def _met(rows: list[dict]) -> bool:
    """Every float output kept: decisions agree, error within its budget where it has one."""
    return all(r.get("argmax_agreement", r.get("score_agreement", 1.0)) >= r.get("min_agreement", 0) and
               (r["budget"] is None or r["measured"] <= r["budget"] * (1 + 1e-9))
               for r in rows if r["kind"] == "float")


class Assessor:
    """Measures on the outputs a result the allocator did not choose (the weight planner, a fixed
    rate): the same probe, feeds and judgement, so every mode prints a true fidelity line."""

    def __init__(self, model: ModelProto, sites, *, inputs: list[dict] | None, min_elements: int = 1,
                 sample_count: int = DEFAULT_SAMPLES):
        self.start = time.perf_counter()
        if any(site.tensor.data_type == TensorProto.BFLOAT16 for site in sites):
            raise CannotRun("onnxruntime's Python API takes no bfloat16 weights to measure with")
        total = sum(int(np.prod(site.tensor.dims)) * 4 for site in sites)
        if total > MAX_PROBE_BYTES:
            raise CannotRun(f"{total / 1e9:.1f} GB of weights: more than a probe session may hold")
        self.names = {i: site.tensor.name for i, site in enumerate(sites)}
        self.probe = Probe(model, sorted(set(self.names.values())), inputs, sample_count)

    def overrides(self, site: int, decoded: np.ndarray) -> dict:
        name = self.names[site]
        return {name: decoded} if name in self.probe.movable else {}

    def assess(self, overrides: dict, target: str) -> Allocation:
        allocation = Allocation(self.probe.source, target)
        allocation.notes.extend(self.probe.notes)
        allocation.outputs = self.probe.describe(overrides, DEFAULT_MAX_OUTPUT_ERROR)
        allocation.met = _met(allocation.outputs)
        allocation.seconds = time.perf_counter() - self.start
        return allocation


def _sqnr_rung(t: _Tensor, sqnr: float) -> int:
    """The cheapest rung whose weight SQNR reaches `sqnr` dB (raw if none does)."""
    return int(np.argmax(t.weight_error <= t.signal / 10 ** (sqnr / 10)))  # raw (0) always qualifies


def _branch_chains(model: ModelProto) -> dict[int, list[tuple[str | None, bool]]]:
    """{id(graph): the If branches it lies in, outermost first, as (condition name, branch taken
    when the condition is true)} for every subgraph inside an If; a condition that is not the main
    graph's (a nested If) is None: it cannot be read."""
    chains: dict[int, list] = {}

    def visit(graph, chain, main: bool) -> None:
        for node in graph.node:
            for attribute in node.attribute:
                graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
                for g in graphs:
                    inner = chain
                    if node.op_type == "If":
                        inner = chain + [(node.input[0] if main else None, attribute.name == "then_branch")]
                    chains[id(g)] = inner
                    visit(g, inner, False)
    visit(model.graph, [], True)
    return chains


def _search(probe: Probe, predicted, bit_table, start_rung, fixed, budget: float, overrides,
            allocation: Allocation) -> np.ndarray:
    """The cheapest rungs found whose measured outputs meet the budget: every part of every float
    output within `budget` (squared relative error), decisions kept (class outputs:
    MIN_ARGMAX_AGREEMENT, probabilities by their decisions alone; score-like outputs:
    MIN_SCORE_AGREEMENT). Each output has a target for the predicted error of its parts that the
    greedy plans to; each round measures the plan and moves every output's target, bisecting
    between the loosest target seen to pass and the tightest seen to fail (decisions are not
    predictable: those targets are found by measurement alone)."""
    outputs = len(probe.float_outputs)
    owner = probe.judge.owner
    decides = np.array([j in probe.classes or probe.judge.layouts[j].scored for j in range(outputs)])
    decisions_only = np.isin(np.arange(outputs), probe.probabilities)
    target = np.where(decisions_only, CLASS_START ** 2, budget * TARGET_MARGIN)
    passed, failed = np.zeros(outputs), np.full(outputs, np.inf)  # bounds of the targets
    index = np.arange(len(start_rung))
    best, best_bits, rung = None, np.inf, start_rung
    for round_ in range(1, MAX_ROUNDS + 1):
        allocation.rounds = round_
        rung = _greedy(predicted, bit_table, start_rung, fixed, target[owner], None)
        used = float(bit_table[index, rung].sum())
        part_errors, agreement = probe.measure(overrides(rung))
        error = probe.judge.per_output(part_errors)
        agrees = ~decides | (agreement >= probe.min_agreement)
        ok = probe.passes(error, agreement, budget)
        if ok.all() and used < best_bits:
            best, best_bits = rung, used
        passed = np.where(ok, np.maximum(passed, target), passed)
        failed = np.where(ok, failed, np.minimum(failed, target))
        # float outputs: rescale by what the measurement says the prediction missed by
        rescale = np.where(error > 0, budget * TARGET_MARGIN / np.maximum(error, 1e-300), 4.0)
        guess = np.where(decisions_only, np.where(ok, 2.0, 0.25),
                         np.where(agrees, np.clip(rescale, 0.125, 4.0), 0.25)) * target
        bracketed = (passed > 0) & np.isfinite(failed)
        target = np.where(bracketed, np.sqrt(passed * np.where(np.isfinite(failed), failed, 1.0)),
                          np.clip(guess, passed, failed))
        # settled: bracketed to BRACKET (each round costs a run and new encodes), or a float
        # output measured close to its budget
        settled = np.where(bracketed, failed / np.maximum(passed, 1e-300) <= BRACKET,
                           ~decisions_only & ok & (error >= budget * TARGET_MARGIN ** 2))
        if best is not None and settled.all():
            break
    if best is None:
        allocation.notes.append(f"no width choice met the budget within {MAX_ROUNDS} rounds")
        return rung
    return best


def _greedy(predicted: np.ndarray, bit_table: np.ndarray, rung: np.ndarray, fixed: np.ndarray,
            target: np.ndarray | None, size_budget: float | None) -> np.ndarray:
    """Raise rungs, each step the one move (any tensor, to any higher rung) that removes the most
    weighted output error per added bit, until every output's predicted error is within its
    `target` (quality) or no move fits in `size_budget` (size). Starts from `rung`, never lowers it."""
    rung = rung.copy()
    n, rungs, outputs = predicted.shape if predicted.size else (0, 0, 0)
    if n == 0:
        return rung
    index = np.arange(n)
    used = float(bit_table[index, rung].sum())
    while True:
        current = predicted[index, rung]  # (tensors, outputs)
        total = current.sum(0)
        if target is not None:
            over = total > target
            if not over.any():
                return rung
            weight = over / target
        else:
            weight = np.ones(outputs)
        gain = (current[:, None, :] - predicted) @ weight  # (tensors, rungs)
        cost = bit_table - bit_table[index, rung][:, None]
        valid = (np.arange(rungs)[None, :] > rung[:, None]) & ~fixed[:, None] & (gain > 0)
        if size_budget is not None:
            valid &= used + cost <= size_budget
        if not valid.any():
            if target is not None and not fixed.all():
                # nothing predicted helps any more, yet the budget is missed: raise the most
                # sensitive free tensor one rung (the measurement will tell)
                free = np.where(~fixed & (rung < rungs - 1))[0]
                if free.size == 0:
                    return rung
                k = free[np.argmax((current[free] @ np.ones(outputs)))]
                rung[k] += 1
                used = float(bit_table[index, rung].sum())
                continue
            return rung
        ratio = np.where(valid, gain / np.maximum(cost, 1), -np.inf)
        k, r = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        used += cost[k, r]
        rung[k] = r


def _distinct(sites, config: RateConfig, min_elements: int) -> list[_Tensor]:
    """The sites' distinct tensors (equal bytes in one graph: one tensor, as the pass encodes
    them once); tensors the codec would keep raw anyway (non-finite) are left out."""
    groups: dict[tuple, _Tensor] = {}
    for i, site in enumerate(sites):
        array = tensor_array(site.tensor)
        key = (id(site.scope.graph), site.tensor.data_type, tuple(site.tensor.dims),
               hashlib.sha256(array.tobytes()).hexdigest())
        if key in groups:
            groups[key].names.append(site.tensor.name)
            groups[key].sites.append(i)
            continue
        flat = array.astype(np.float64).ravel()
        if flat.size < max(1, min_elements) or not np.isfinite(flat).all():
            continue
        configs, bits = _rungs(config, flat.size, array.dtype.itemsize * 8)
        groups[key] = _Tensor([site.tensor.name], [i], flat.size, float(np.dot(flat, flat)), configs, bits)
    return list(groups.values())
