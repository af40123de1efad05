"""Sample inputs for a model: the user's (an .npz per feed), checked against the graph, or
generated from the graph's input specs, seeded and deterministic.

What generation ensures (the allocator and `verify` measure outputs on these, so they should look
like data, not noise, where the graph says what the data is):
- token ids (graph inputs that index a Gather on a weight table, through a Cast too): uniform over
  the table's rows, the last quarter of each sequence the table's all-zero row where it has one
  (a padding id); masks ones; token type / segment ids zeros;
- images (float or uint8, rank 4, 1-4 channels first or last): text- and edge-like pictures,
  smooth backgrounds with dark strokes, in the range the graph's first normalisation implies
  (`image_ranges`: x / 255 or a mean near 127 -> 0-255, a mean near 0.5 -> [0, 1], uint8 -> 0-255;
  else each of IMAGE_RANGES); dynamic height/width tried from a short list of common sizes until
  the model runs (IMAGE_SIZES);
- audio (float, rank 2 or 3 named like audio, a rank-2 float with a dynamic last dim): speech-like
  energy, voiced harmonic bursts and pauses, |x| < 1 or at int16 scale (AUDIO_SCALES),
  512-sample frames when the length is dynamic;
- recurrent state / caches (names with state, cache, past, hidden, h0/c0): zeros;
- sample rates (integer inputs named sr / sample_rate): 16000;
- any other float ~ N(0, 1), any other integer uniform in [0, 100), booleans random.

`plausible` tries every regime (`variants`) and keeps those whose outputs are not degenerate.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto

from .model_io import first_line

_NP = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
       TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.INT8: np.int8,
       TensorProto.UINT8: np.uint8, TensorProto.BOOL: np.bool_, TensorProto.INT16: np.int16}
MAX_GENERATED_ELEMENTS = 1 << 28
# (height, width) tried in turn for images whose spatial size the graph leaves open: square
# classifier inputs first, then text-line strips; a model that needs another size takes --inputs.
IMAGE_SIZES = ((224, 224), (64, 256), (32, 128), (48, 320), (32, 32))
# value ranges tried for images whose graph does not say (normalisation happens before the model)
IMAGE_RANGES = ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0))
# scales tried for raw audio: float samples (|x| < 1) and int16-scale floats, unless the graph says
AUDIO_SCALES = (1.0, 32768.0)
RAW_AUDIO_SAMPLES = 4000  # a static last axis this long holds samples; shorter, a frame of features
SAMPLE_ELEMENTS = 1 << 16  # input elements a generated feed aims at (its batch grows to reach it)
MAX_BATCH = 8
CHEAP_WORK = 1 << 30  # weight elements x input elements of all samples in a cheap feed
MAX_CHEAP_BATCH = 64
AUDIO_SAMPLES = 512  # one frame at 16 kHz for streaming speech models
_STATE = re.compile(r"(state|cache|past|hidden|^h0?$|^c0?$|^h_|^c_)", re.I)
_AUDIO = re.compile(r"(audio|wave|speech|pcm|signal|sample)", re.I)
_RATE = re.compile(r"^(sr|sample_?rate|sampling_?rate)$", re.I)


def graph_inputs(model: ModelProto) -> list:
    """The model's real inputs (initializers listed as inputs are weights, not data)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _gather_rows(model: ModelProto) -> dict[str, int]:
    """{input name: rows of the table it indexes} for graph inputs used (directly or through a
    Cast) as the indices of a Gather on an initializer or Constant: token ids of an embedding."""
    tables = {t.name: t.dims for t in model.graph.initializer}
    tables |= {n.output[0]: a.t.dims for n in model.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = tables[node.input[0]]
            if -len(dims) <= axis < len(dims) and dims[axis] > 0:
                source = casts.get(node.input[1], node.input[1])
                rows[source] = min(rows.get(source, dims[axis]), dims[axis])
    return rows


def _dims(value) -> list[int | None]:
    """Static dims of an input (None where symbolic or unknown)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def _image_layout(dims: list, dtype) -> tuple[int, int] | None:
    """(height axis, width axis) of an image input (float, or uint8 pixels), or None."""
    if len(dims) != 4 or not (np.issubdtype(dtype, np.floating) or dtype == np.uint8):
        return None
    if dims[1] in (1, 2, 3, 4):
        return 2, 3
    if dims[3] in (1, 2, 3, 4):
        return 1, 2
    return None


def _is_audio(name: str, dims: list, dtype) -> bool:
    if not np.issubdtype(dtype, np.floating) or len(dims) not in (2, 3):
        return False
    return bool(_AUDIO.search(name)) or (len(dims) == 2 and dims[1] is None and not _STATE.search(name))


def _consumers(model: ModelProto, name: str) -> list:
    """Nodes reading `name`, looking through Cast / Identity / Transpose / Unsqueeze / Reshape."""
    found, frontier = [], [name]
    while frontier:
        current = frontier.pop()
        for node in model.graph.node:
            if current in node.input:
                if node.op_type in ("Cast", "Identity", "Transpose", "Unsqueeze", "Reshape", "Squeeze"):
                    frontier.extend(node.output[:1])
                else:
                    found.append(node)
    return found


def _constant_values(model: ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper
    values = {t.name: t for t in model.graph.initializer}
    values |= {n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"}
    return {k: v for k, v in values.items() if int(np.prod(v.dims)) <= 64} | {"__np__": numpy_helper}


def image_ranges(model: ModelProto, name: str) -> list[tuple[float, float]]:
    """Plausible value ranges of an image input, read from what the graph does with it first: a
    division by ~255 (or a product by ~1/255) or a mean near 127 means pixels 0-255; a mean near
    0.5 means [0, 1]; uint8 pixels are 0-255. Otherwise every range of IMAGE_RANGES."""
    constants = _constant_values(model)
    to_array = constants.pop("__np__").to_array
    for node in _consumers(model, name):
        other = [to_array(constants[i]).astype(np.float64) for i in node.input if i in constants]
        if not other or not other[0].size:
            continue
        value = float(np.mean(np.abs(other[0])))
        if (node.op_type == "Div" and value >= 100) or (node.op_type == "Mul" and 0 < value <= 0.01):
            return [(0.0, 255.0)]
        if node.op_type == "Sub" or (node.op_type == "Add" and float(np.mean(other[0])) < 0):
            if value >= 50:
                return [(0.0, 255.0)]
            if 0.3 <= value <= 0.7:
                return [(0.0, 1.0)]
    return list(IMAGE_RANGES)


def _padding_rows(model: ModelProto) -> dict[str, int]:
    """{input name: a row of its embedding table that is all zeros} (a padding id)."""
    from onnx import numpy_helper
    tables = {t.name: t for t in model.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    rows = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables \
                and not any(a.name == "axis" and a.i != 0 for a in node.attribute):
            table = tables[node.input[0]]
            if len(table.dims) != 2 or int(np.prod(table.dims)) > (1 << 26):
                continue
            array = numpy_helper.to_array(table) if not table.external_data else None
            if array is None:
                continue
            zero = np.where(~array.any(axis=1))[0]
            if zero.size:
                rows[casts.get(node.input[1], node.input[1])] = int(zero[0])
    return rows


# a glyph cell's segments, (x0, y0, x1, y1) in cell units: the strokes of a 14-segment display
_GLYPH_SEGMENTS = ((0, 0, 1, 0), (0, 0.5, 1, 0.5), (0, 1, 1, 1), (0, 0, 0, 0.5), (0, 0.5, 0, 1),
                   (1, 0, 1, 0.5), (1, 0.5, 1, 1), (0.5, 0, 0.5, 1), (0, 0, 1, 1), (1, 0, 0, 1),
                   (0, 0, 0.5, 0.5), (1, 0, 0.5, 0.5), (0, 1, 0.5, 0.5), (1, 1, 0.5, 0.5))


def _stroke(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, thickness: float) -> None:
    """Draw a dark line segment into `image` in place (anti-aliased, over its bounding box only)."""
    height, width = image.shape
    pad = 2 * thickness + 1
    top, bottom = max(0, int(min(y0, y1) - pad)), min(height, int(max(y0, y1) + pad) + 1)
    left, right = max(0, int(min(x0, x1) - pad)), min(width, int(max(x0, x1) + pad) + 1)
    if top >= bottom or left >= right:
        return
    y, x = np.mgrid[top:bottom, left:right].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
    dist = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
    window = image[top:bottom, left:right]
    np.minimum(window, np.clip(dist / thickness - 0.5, 0, 1) * 0.9 + 0.05, out=window)


def _image(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """A picture with structure, in [-1, 1], float64 [channels, height, width]: a smooth bright
    background and a few filled blocks (edges), then either rows of glyphs (text: characters
    made of 2-4 strokes of a 14-segment cell, evenly spaced on lines) or scattered strokes; half
    of them inverted (light on dark)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    gx, gy = rng.uniform(-1, 1, 2)
    image = 0.7 + 0.2 * (gx * x / max(1, width) + gy * y / max(1, height))
    for _ in range(int(rng.integers(1, 4))):  # blocks: sharp edges of another brightness
        top, left = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(1, max(2, height // 2)), rng.integers(1, max(2, width // 3))
        image[top:top + h, left:left + w] = rng.uniform(0.2, 0.9)
    if rng.random() < 0.5:  # text: one line on a strip, a few on a page
        lines = 1 if width >= 2 * height else int(rng.integers(2, 6))
        pitch = height / lines
        glyph = rng.uniform(0.45, 0.7) * pitch
        thickness = max(1.0, glyph / 9)
        for line in range(lines):
            top = line * pitch + (pitch - glyph) / 2
            left = rng.uniform(0.02, 0.15) * width
            while left + 0.6 * glyph < width * 0.97:
                for k in rng.choice(len(_GLYPH_SEGMENTS), int(rng.integers(2, 5)), replace=False):
                    a, b, c, d = _GLYPH_SEGMENTS[k]
                    _stroke(image, left + a * 0.6 * glyph, top + b * glyph, left + c * 0.6 * glyph,
                            top + d * glyph, thickness)
                left += glyph * rng.uniform(0.75, 0.95) + (glyph * 0.6 if rng.random() < 0.15 else 0)
    else:
        thickness = max(1.0, height / 24)
        for _ in range(int(rng.integers(4, 4 + width // 8))):  # strokes
            x0, y0 = rng.uniform(0, width), rng.uniform(0.2 * height, 0.8 * height)
            angle, length = rng.uniform(0, math.pi), rng.uniform(0.1, 0.5) * height
            _stroke(image, x0, y0, x0 + length * math.cos(angle), y0 + length * math.sin(angle), thickness)
    if rng.random() < 0.5:  # light on dark as often as dark on light (handwriting scans, night scenes)
        image = 1.0 - image
    image = image[None].repeat(channels, 0) + rng.normal(0, 0.02, (channels, height, width))
    return np.clip(image, 0, 1) * 2 - 1


def _speech(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Speech-like sound at 16 kHz: a gliding pitch whose harmonics are shaped by three vowel
    formants, under a syllable-rate envelope, over faint noise; a quarter of the frames are
    pauses (noise alone), so a decision model sees both."""
    t = np.arange(samples) / 16000.0
    signal = rng.normal(0, 0.002, samples)
    if rng.random() < 0.75:
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000.0
        formants = rng.uniform((300, 900, 2200), (800, 2000, 3000))
        mean_f0 = float(f0.mean())
        voiced = np.zeros(samples)
        for k in range(1, int(3600 // mean_f0)):
            gain = sum(np.exp(-0.5 * ((k * mean_f0 - f) / 120.0) ** 2) for f in formants) + 0.05
            voiced += gain / np.sqrt(k) * np.sin(k * phase)
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi))
        signal += rng.uniform(0.1, 0.5) * voiced * envelope / max(1e-9, np.abs(voiced).max())
    return np.clip(signal, -0.99, 0.99)


def generate_inputs(model: ModelProto, seed: int = 0, batch: int = 2, sequence: int = 16,
                    image_size: tuple[int, int] | None = None, image_range: tuple[float, float] | None = None,
                    audio_scale: float = 1.0) -> dict:
    """One feed generated from the model's input specs (module docstring): symbolic first
    dimensions -> `batch`, other symbolic dimensions -> `sequence` (image height/width ->
    `image_size` or IMAGE_SIZES[0], audio length -> AUDIO_SAMPLES); images in `image_range`
    (default: what `image_ranges` reads from the graph first), audio times `audio_scale`."""
    rng = np.random.default_rng(seed)
    rows = _gather_rows(model)
    padding = _padding_rows(model)
    feeds = {}
    for value in graph_inputs(model):
        ttype = value.type.tensor_type
        dtype = _NP.get(ttype.elem_type)
        if dtype is None:
            raise ValueError(f"input {value.name!r}: cannot generate data of ONNX type {ttype.elem_type}; "
                             "give sample inputs (--inputs x.npz)")
        dims = _dims(value)
        image = _image_layout(dims, dtype)
        audio = _is_audio(value.name, dims, dtype)
        shape = []
        for i, d in enumerate(dims):
            if d is not None:
                shape.append(d)
            elif i == 0 or _STATE.search(value.name):  # a state's open dimension is the batch
                shape.append(batch)
            elif image and i in image:
                shape.append((image_size or IMAGE_SIZES[0])[image.index(i)])
            elif audio and i == len(dims) - 1:
                shape.append(AUDIO_SAMPLES)
            else:
                shape.append(sequence)
        if math.prod(shape) > MAX_GENERATED_ELEMENTS:  # a corrupted or absurd shape: no 100 GB array
            raise ValueError(f"input {value.name!r}: shape {shape} is too large to generate; give --inputs x.npz")
        name = value.name
        if np.issubdtype(dtype, np.floating):
            if _STATE.search(name):
                data = np.zeros(shape)
            elif image:
                data = _pictures(rng, shape, image, image_range or image_ranges(model, name)[0])
            elif audio:
                data = audio_scale * np.stack([_speech(rng, shape[-1])
                                               for _ in range(math.prod(shape[:-1]))]).reshape(shape)
            else:
                data = rng.standard_normal(shape)
            feeds[name] = data.astype(dtype)
        elif image:  # uint8 pixels
            feeds[name] = np.round(_pictures(rng, shape, image, (0.0, 255.0))).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.asarray(rng.random(shape) < 0.5)  # a 0-d input must stay an array
        elif _RATE.search(name):
            feeds[name] = np.full(shape, 16000, dtype)
        elif "mask" in name.lower():
            feeds[name] = np.ones(shape, dtype)
        elif _STATE.search(name) or "type" in name.lower() or "segment" in name.lower():
            feeds[name] = np.zeros(shape, dtype)
        else:
            high = min(rows.get(name, 100), int(np.iinfo(dtype).max) + 1)
            ids = rng.integers(0, high, size=shape).astype(dtype)
            if name in padding and ids.ndim >= 2 and ids.shape[-1] >= 4:  # padded tails, as batches have
                ids[..., -(ids.shape[-1] // 4):] = padding[name]
            feeds[name] = ids
    return feeds


def _pictures(rng, shape: list, layout: tuple[int, int], value_range: tuple[float, float]) -> np.ndarray:
    h, w = layout
    channel_axis = 1 if h == 2 else 3
    pictures = np.stack([_image(rng, shape[h], shape[w], shape[channel_axis]) for _ in range(shape[0])])
    low, high = value_range
    pictures = low + (pictures + 1) / 2 * (high - low)
    return pictures if channel_axis == 1 else pictures.transpose(0, 2, 3, 1)


def has_open_image_size(model: ModelProto) -> bool:
    """Whether an image input leaves its height or width to the caller."""
    for value in graph_inputs(model):
        dims = _dims(value)
        layout = _image_layout(dims, _NP.get(value.type.tensor_type.elem_type, np.int8))
        if layout and any(dims[a] is None for a in layout):
            return True
    return False


def generate(model: ModelProto, count: int, run=None, *, seed: int = 0, batch: int | None = None,
             sequence: int = 32, **regime) -> list[dict]:
    """`count` generated feeds (seeds seed .. seed+count-1). Where an image's size is open, each of
    IMAGE_SIZES is tried with `run(feed)` (raising when the model cannot take it) and the first
    that runs is used; with no size running, the first size's error is raised. `batch` None: as
    many samples per feed as keep it near SAMPLE_ELEMENTS input elements (1 to MAX_BATCH), so
    small inputs give enough decisions to check."""
    sizes = IMAGE_SIZES if run is not None and has_open_image_size(model) else (None,)
    first_error = None
    for size in sizes:
        if batch is None:
            one = sum(np.asarray(a).size for a in generate_inputs(model, seed, 1, sequence, size, **regime).values())
            rows = int(np.clip(SAMPLE_ELEMENTS // max(1, one), 1, MAX_BATCH))
        else:
            rows = batch
        feeds = [generate_inputs(model, seed + k, rows, sequence, size, **regime) for k in range(count)]
        if run is None or size is None:
            return feeds
        try:
            run(feeds[0])
            return feeds
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors: try the next size
            first_error = first_error or error
    raise first_error


def variants(model: ModelProto) -> list[dict]:
    """The input regimes worth trying (generate_inputs keywords): every plausible image range of
    the first float image input (image_ranges) times every plausible audio scale (AUDIO_SCALES)."""
    images = audio = None
    for value in graph_inputs(model):
        dtype = _NP.get(value.type.tensor_type.elem_type, np.int8)
        dims = _dims(value)
        if _STATE.search(value.name):
            continue  # states and caches are zeros, whatever their shape
        if images is None and _image_layout(dims, dtype) and np.issubdtype(dtype, np.floating):
            images = image_ranges(model, value.name)
        elif audio is None and _is_audio(value.name, dims, dtype) \
                and (dims[-1] is None or dims[-1] >= RAW_AUDIO_SAMPLES):
            audio = AUDIO_SCALES  # raw samples (an open or long last axis), not a frame of features
    return [{"image_range": r, "audio_scale": a} for r in (images or [None]) for a in (audio or [1.0])]


def _regime(variant: dict, model: ModelProto) -> str:
    parts = []
    if variant["image_range"] is not None:
        parts.append(f"images in [{variant['image_range'][0]:g}, {variant['image_range'][1]:g}]")
    if any(_is_audio(v.name, _dims(v), _NP.get(v.type.tensor_type.elem_type, np.int8)) for v in graph_inputs(model)):
        parts.append("audio at " + ("int16 scale" if variant["audio_scale"] > 1 else "|x| < 1"))
    return ", ".join(parts)


def degenerate(outputs: list, class_outputs=()) -> str | None:
    """Why outputs on a feed say nothing about the model (non-finite, constant, scores all at one
    extreme, class decisions all saturated: top probability within 1e-4 of 1 at every position),
    or None. `class_outputs`: indices of the outputs that hold class scores (logits, probabilities)."""
    floats = [(i, np.asarray(o, dtype=np.float64)) for i, o in enumerate(outputs)
              if isinstance(o, np.ndarray) and np.issubdtype(o.dtype, np.floating) and o.size]
    if not floats:
        return None
    if any(not np.isfinite(o).all() for _, o in floats):
        return "non-finite outputs"
    if all(float(o.max() - o.min()) <= 1e-6 * (float(np.abs(o).max()) + 1e-30) for _, o in floats if o.size > 1) \
            and any(o.size > 1 for _, o in floats):
        return "constant outputs"
    bounded = [o for _, o in floats if o.min() >= 0 and o.max() <= 1]
    if bounded and all(o.max() < 1e-3 or o.min() > 1 - 1e-3 for o in bounded):
        return "saturated scores"
    for i, o in floats:
        if i in class_outputs and o.ndim >= 1 and o.shape[-1] > 1:
            p = o if o.min() >= 0 and np.allclose(o.sum(-1), 1, atol=1e-3) else np.exp(o - o.max(-1, keepdims=True))
            p = p / p.sum(-1, keepdims=True)
            if float(p.max(-1).min()) > 1 - 1e-4:
                return "saturated class decisions"
    return None


def _cheap_batch(model: ModelProto, feed: dict) -> int | None:
    """A larger batch for a cheap model, where every input's first dimension is open: the weights'
    elements times one sample's input elements (a deterministic proxy for a run's work) within
    CHEAP_WORK. Up to MAX_CHEAP_BATCH samples a feed: more decisions to judge, at little cost."""
    inputs = graph_inputs(model)
    if not inputs or any(_dims(v)[:1] != [None] for v in inputs):
        return None
    rows = int(np.asarray(feed[inputs[0].name]).shape[0])
    sample = sum(np.asarray(a).size for a in feed.values()) / max(1, rows)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    # weights in Constant nodes (paddle exports) count as much as initializers
    weights = sum(math.prod(t.dims) for t in tensors if t.data_type in floats)
    batch = min(MAX_CHEAP_BATCH, int(CHEAP_WORK / max(1.0, weights * sample)))
    return batch if batch > rows else None


def plausible(model: ModelProto, count: int, run, *, seed: int = 0, class_outputs=()) -> tuple[list[dict], str]:
    """Generated feeds in every plausible input regime (`variants`) whose outputs are not
    degenerate, `count` in all (at least 2 per regime kept), and a description of what was used.
    When every regime is degenerate, the first is kept and the description says so."""
    kept, dropped, first = [], [], None
    options = variants(model)
    for variant in options:
        try:
            feeds = generate(model, count, run, seed=seed, **variant)
            reason = degenerate(run(feeds[0]), class_outputs)
            batch = _cheap_batch(model, feeds[0])
            if batch:  # a cheap model: more samples per feed, more decisions to judge
                feeds = generate(model, count, run, seed=seed, batch=batch, **variant)
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors: this regime does not run
            first = first or error
            continue
        (dropped if reason else kept).append((variant, feeds, reason))
    if not kept and not dropped:
        raise first
    if not kept:
        variant, feeds, reason = dropped[0]
        regime = _regime(variant, model)
        return feeds, f"{regime + ', ' if regime else ''}outputs degenerate on every regime tried ({reason})"
    share = max(2, -(-count // len(kept))) if len(kept) > 1 else count
    feeds = [f for _, fs, _ in kept for f in fs[:share]]
    described = " and ".join(filter(None, (_regime(v, model) for v, _, _ in kept)))
    if dropped:
        described += "; not " + ", ".join(f"{_regime(v, model)} ({r})" for v, _, r in dropped)
    return feeds, described


def _describe(value) -> str:
    dims = ["?" if d is None else str(d) for d in _dims(value)]
    dtype = _NP.get(value.type.tensor_type.elem_type)
    return f"[{', '.join(dims)}] {np.dtype(dtype).name if dtype else 'type ' + str(value.type.tensor_type.elem_type)}"


# Sample inputs are untrusted input: what a file may hold, and how much of it one run takes.
MAX_INPUT_BYTES = 64 << 20  # all given feeds together, as stored (decompressed) arrays (--max-inputs-mb)
FEED_BYTES = 8 << 20  # a feed larger than this is split along a symbolic batch axis into runs of about this size


class InputsError(ValueError):
    """Sample inputs that cannot be used: one line naming the file and the input."""


def check_feed(feed: dict, model: ModelProto, source: str) -> dict:
    """The feed restricted to the model's inputs, each checked: present, of the input's dtype and
    rank, of its static dims, not empty, and (floats) finite. InputsError (a ValueError: one line
    naming the input and what the graph expects) otherwise."""
    checked = {}
    for value in graph_inputs(model):
        expected = _describe(value)
        if value.name not in feed:
            raise InputsError(f"{source}: lacks input {value.name!r} (the graph expects {expected}; "
                              f"has {', '.join(sorted(map(str, feed))) or 'nothing'})")
        array = np.asarray(feed[value.name])
        dtype = _NP.get(value.type.tensor_type.elem_type)
        dims = _dims(value)
        if array.dtype.hasobject:
            raise InputsError(f"{source}: input {value.name!r} holds Python objects, not numbers; "
                              f"the graph expects {expected}")
        if dtype is not None and array.dtype != dtype:
            raise InputsError(f"{source}: input {value.name!r} is {array.dtype.name} {list(array.shape)}; "
                              f"the graph expects {expected}")
        if value.type.tensor_type.HasField("shape") and (
                array.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, array.shape))):
            raise InputsError(f"{source}: input {value.name!r} has shape {list(array.shape)}; "
                              f"the graph expects {expected}")
        if array.size == 0:
            raise InputsError(f"{source}: input {value.name!r} is empty (shape {list(array.shape)}): nothing to "
                              "measure the outputs on")
        if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise InputsError(f"{source}: input {value.name!r} holds {bad} NaN or Inf value(s) of "
                                  f"{array.size}: outputs on them say nothing about the compression")
        checked[value.name] = array
    return checked


def _npz_bytes(file: Path) -> int:
    """The bytes an .npz's arrays take once read, from their headers (nothing decompressed):
    a small file can hold a huge array. InputsError for pickled (object) arrays."""
    import zipfile
    total = 0
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _order, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _order, dtype = np.lib.format.read_array_header_2_0(member)
                if dtype.hasobject:
                    raise InputsError(f"{file}: array {info.filename[:-4]!r} holds pickled Python objects; "
                                      "hyperonnx reads only plain numeric arrays (np.savez of numpy arrays)")
                total += math.prod(shape) * dtype.itemsize
    except InputsError:
        raise
    except Exception as error:  # noqa: BLE001 - a broken or non-npz file: one line
        raise InputsError(f"{file}: not a readable .npz ({first_line(error)})") from None
    return total


def split_feed(feed: dict, model: ModelProto, feed_bytes: int | None = None) -> list[dict]:
    """A feed larger than `feed_bytes` as several along the batch axis (the first, where every
    graph input leaves it symbolic and the arrays agree on it), each about `feed_bytes`; else the
    feed itself. The runs then take bounded memory, whatever the file held."""
    feed_bytes = FEED_BYTES if feed_bytes is None else feed_bytes
    inputs = graph_inputs(model)
    size = sum(np.asarray(a).nbytes for a in feed.values())
    if size <= feed_bytes or not inputs:
        return [feed]
    batches = {np.asarray(feed[v.name]).shape[0] if np.asarray(feed[v.name]).ndim else None for v in inputs}
    if len(batches) != 1 or None in batches or any(_dims(v)[:1] != [None] for v in inputs):
        return [feed]
    batch = batches.pop()
    rows = max(1, batch * feed_bytes // size)
    return [{name: array[start:start + rows] for name, array in feed.items()} for start in range(0, batch, rows)]


def load_inputs(path, model: ModelProto, max_bytes: int | None = None, feed_bytes: int | None = None) -> list[dict]:
    """Feeds from an .npz (one array per graph input: one feed) or a folder of them (one feed
    each, in name order), checked against the model (`check_feed`): at most `max_bytes` of
    arrays in all (read from the headers before anything is decompressed), each feed split into
    runs of about `feed_bytes` (`split_feed`)."""
    max_bytes = MAX_INPUT_BYTES if max_bytes is None else max_bytes
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise InputsError(f"{path}: no .npz file in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise InputsError(f"{path}: no such file or folder")
    total = 0
    for file in files:
        total += _npz_bytes(file)
        if total > max_bytes:
            raise InputsError(f"{file if len(files) == 1 else path}: the sample inputs hold over "
                              f"{total / 2**20:.0f} MiB of arrays, beyond the limit of {max_bytes / 2**20:.0f} MiB "
                              "(--max-inputs-mb raises it; fewer or smaller samples measure as well)")
    feeds = []
    for file in files:
        try:
            with np.load(file, allow_pickle=False) as data:
                feed = {name: data[name] for name in data.files}
        except Exception as error:  # noqa: BLE001 - a broken or non-npz file: one line
            raise InputsError(f"{file}: not a readable .npz ({first_line(error)})") from None
        feeds.extend(split_feed(check_feed(feed, model, str(file)), model, feed_bytes))
    return feeds


def as_feeds(inputs, model: ModelProto, max_bytes: int | None = None, feed_bytes: int | None = None) -> list[dict]:
    """The Python API's `inputs=`: a path (.npz or folder), one feed dict, or a list of them;
    checked and split as `load_inputs` does (the size limit applies to files)."""
    if isinstance(inputs, (str, Path)):
        return load_inputs(inputs, model, max_bytes, feed_bytes)
    if isinstance(inputs, dict):
        inputs = [inputs]
    feeds = [part for i, feed in enumerate(inputs)
             for part in split_feed(check_feed(feed, model, f"inputs[{i}]"), model, feed_bytes)]
    if not feeds:
        raise InputsError("inputs: an empty list of feeds")
    return feeds
