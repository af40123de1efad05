"""Realistic generated inputs and task decoders for the real-model corpus (hyperonnx.bench.zoo).

Everything here is deterministic (fixed seeds) and needs no download: rendered text (PIL with the
system's DejaVu / Liberation fonts, else Pillow's own), drawn scenes and document pages, synthetic
files of many types, espeak-ng speech; and, in numpy, the decoders the models' own packages apply
(YOLOv8 / YOLOX / PicoDet box decoding + NMS, CTC, Kaldi fbank), plus the task comparisons
(detections matched both ways at an IoU, strings, decisions, embedding cosine).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation",
             "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu", "/usr/share/fonts/liberation")
FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
              "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf",
              "LiberationSans-Bold.ttf")


# --- comparisons -------------------------------------------------------------------------------

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] against every box in b [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_count(ref: tuple, out: tuple, iou: float = 0.5) -> int:
    """Greedy one-to-one matching of detections (boxes [N, 4], classes [N]) of the same class at
    IoU >= iou, best pairs first; returns the number of matched pairs."""
    ref_boxes, ref_classes = np.asarray(ref[0]).reshape(-1, 4), np.asarray(ref[1]).reshape(-1)
    out_boxes, out_classes = np.asarray(out[0]).reshape(-1, 4), np.asarray(out[1]).reshape(-1)
    m = iou_matrix(ref_boxes, out_boxes)
    if not m.size:
        return 0
    m = np.where(ref_classes[:, None] == out_classes[None, :], m, 0.0)
    pairs = np.argwhere(m >= iou)
    order = np.argsort(-m[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_r, used_o, n = set(), set(), 0
    for r, o in pairs[order]:
        if r not in used_r and o not in used_o:
            used_r.add(r)
            used_o.add(o)
            n += 1
    return n


def detections_agree(ref: list[tuple], out: list[tuple], iou: float = 0.5, bar: float = 0.9):
    """Detections per image (boxes, classes), pooled over images: the share of the original's
    detections the other model matches (recall) and the share of its detections the original has
    (precision). Score: the smaller of the two; kept when both >= bar. No detection by the
    original anywhere makes the check vacuous: score nan, not kept."""
    matched = sum(match_count(r, o, iou) for r, o in zip(ref, out))
    n_ref = sum(len(np.asarray(r[1]).reshape(-1)) for r in ref)
    n_out = sum(len(np.asarray(o[1]).reshape(-1)) for o in out)
    if n_ref == 0:
        return float("nan"), False, f"VACUOUS: the original detects nothing ({n_out} detections here)"
    recall = matched / n_ref
    precision = matched / n_out if n_out else 0.0
    score = min(recall, precision)
    kept = recall >= bar and precision >= bar
    text = f"matched {matched}/{n_ref} of the original's boxes, {matched}/{n_out} of its own (IoU>={iou}, both >= {bar})"
    if all(len(r) > 2 for r in ref):  # with scores: how the original's confident boxes fared (not the verdict)
        conf = [(np.asarray(r[0]).reshape(-1, 4)[np.asarray(r[2]) >= 0.5], np.asarray(r[1]).reshape(-1)[np.asarray(r[2]) >= 0.5])
                for r in ref]
        n_conf = sum(len(c[1]) for c in conf)
        if n_conf:
            text += f"; of its boxes scored >= 0.5: {sum(match_count(c, o, iou) for c, o in zip(conf, out))}/{n_conf} found"
    return score, kept, text


def strings_agree(ref: list[str], out: list[str], bar: float = 0.95, truth: list[str] | None = None):
    """Share of strings read exactly as the original reads them; kept when >= bar."""
    same = sum(a == b for a, b in zip(ref, out))
    score = same / max(1, len(ref))
    text = f"{same}/{len(ref)} strings as the original's (bar {bar})"
    if truth is not None:
        text += (f"; original reads {sum(a == t for a, t in zip(ref, truth))}/{len(truth)} right, "
                 f"this one {sum(b == t for b, t in zip(out, truth))}")
    return score, score >= bar, text


def decisions_agree(ref, out, bar: float = 0.95, truth=None, what: str = "decisions"):
    """Share of decisions (class ids, labels, booleans) equal to the original's; kept when >= bar."""
    ref, out = np.asarray(ref).reshape(-1), np.asarray(out).reshape(-1)
    score = float(np.mean(ref == out)) if len(ref) else float("nan")
    text = f"{int(np.sum(ref == out))}/{len(ref)} {what} as the original's (bar {bar})"
    if truth is not None:
        truth = np.asarray(truth).reshape(-1)
        text += f"; original right on {int(np.sum(ref == truth))}/{len(truth)}, this one {int(np.sum(out == truth))}"
    distinct = len(set(ref.tolist()))
    text += f"; {distinct} distinct in the original"
    return score, bool(score >= bar), text


def cosine_agree(ref: np.ndarray, out: np.ndarray, mean_bar: float = 0.99, min_bar: float = 0.98):
    """Cosine of each embedding row against the original's: kept when mean >= mean_bar and
    min >= min_bar. Score: the mean."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    cos = np.sum(ref * out, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)
    return (float(cos.mean()), bool(cos.mean() >= mean_bar and cos.min() >= min_bar),
            f"cosine mean {cos.mean():.4f} min {cos.min():.4f} over {len(cos)} (bars {mean_bar} / {min_bar})")


# --- box decoding ------------------------------------------------------------------------------

def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        if len(order) == 1:
            break
        rest = order[1:]
        order = rest[iou_matrix(boxes[i:i + 1], boxes[rest])[0] <= iou]
    return np.array(keep, np.int64)


def batched_nms(boxes, scores, classes, iou):
    """NMS per class (offset trick)."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    offset = classes[:, None].astype(np.float64) * (boxes.max() + 1.0)
    return nms(boxes + offset, scores, iou)


def decode_yolov8(output: np.ndarray, conf: float = 0.25, iou: float = 0.45):
    """Ultralytics YOLOv8 head [4 + classes, anchors] (cx, cy, w, h in input pixels, class
    scores after sigmoid) -> (boxes xyxy, classes, scores) after class-wise NMS."""
    pred = np.asarray(output, np.float32).reshape(output.shape[-2], output.shape[-1]).T
    cls = pred[:, 4:]
    best = cls.argmax(1)
    score = cls[np.arange(len(cls)), best]
    sel = score > conf
    xywh, best, score = pred[sel, :4], best[sel], score[sel]
    boxes = np.stack([xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2,
                      xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2], 1)
    keep = batched_nms(boxes, score, best, iou)[:300]
    return boxes[keep], best[keep], score[keep]


def decode_yolox(output: np.ndarray, size: tuple[int, int] = (416, 416), conf: float = 0.1,
                 iou: float = 0.45, strides=(8, 16, 32)):
    """YOLOX head [anchors, 4 + 1 + classes] (grid offsets, log sizes, objectness, class scores)
    as ddddocr's detector decodes it: score = objectness x class, class-agnostic NMS."""
    pred = np.asarray(output, np.float32).reshape(-1, output.shape[-1]).copy()
    grids, expanded = [], []
    for s in strides:
        h, w = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((h * w, 1), s))
    grids, expanded = np.concatenate(grids), np.concatenate(expanded)
    pred[:, :2] = (pred[:, :2] + grids) * expanded
    pred[:, 2:4] = np.exp(np.minimum(pred[:, 2:4], 20)) * expanded
    scores_all = pred[:, 4:5] * pred[:, 5:]
    best = scores_all.argmax(1)
    score = scores_all[np.arange(len(pred)), best]
    sel = score > conf
    p, best, score = pred[sel], best[sel], score[sel]
    boxes = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    keep = nms(boxes, score, iou)
    return boxes[keep], best[keep], score[keep]


def decode_picodet(scores: list[np.ndarray], regs: list[np.ndarray], size: tuple[int, int],
                   conf: float = 0.5, iou: float = 0.5, strides=(8, 16, 32, 64)):
    """PaddleDetection PicoDet head (per stride: class scores [anchors, C], distance
    distributions [anchors, 4 * (reg_max + 1)]) as rapid_layout decodes it: top-1000 per stride,
    then per-class hard NMS at iou, top 100."""
    boxes_all, scores_all = [], []
    for stride, reg, sc in zip(strides, regs, scores):
        reg = np.asarray(reg, np.float64).reshape(-1, reg.shape[-1])
        sc = np.asarray(sc, np.float64).reshape(-1, sc.shape[-1])
        reg_max = reg.shape[-1] // 4 - 1
        fh, fw = int(np.ceil(size[0] / stride)), int(np.ceil(size[1] / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cy, cx = (hh.reshape(-1) + 0.5) * stride, (ww.reshape(-1) + 0.5) * stride
        center = np.stack((cx, cy, cx, cy), 1)[:len(sc)]
        d = reg.reshape(-1, reg_max + 1)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True)) @ np.arange(reg_max + 1)
        d = d.reshape(-1, 4) * stride
        top = np.argsort(-sc.max(1), kind="stable")[:1000]
        boxes_all.append(center[top] + np.array([-1, -1, 1, 1]) * d[top])
        scores_all.append(sc[top])
    boxes, conf_all = np.concatenate(boxes_all), np.concatenate(scores_all)
    out_b, out_c, out_s = [], [], []
    for c in range(conf_all.shape[1]):
        sel = conf_all[:, c] > conf
        if not sel.any():
            continue
        b, s = boxes[sel], conf_all[sel, c]
        keep = nms(b, s, iou)[:100]
        out_b.append(b[keep])
        out_s.append(s[keep])
        out_c.append(np.full(len(keep), c))
    if not out_b:
        return np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_b), np.concatenate(out_c), np.concatenate(out_s)


def ctc_greedy(best: np.ndarray, alphabet, blank: int) -> str:
    """Collapse repeats, drop blanks."""
    best = np.asarray(best).reshape(-1)
    keep = np.r_[True, best[1:] != best[:-1]] & (best != blank)
    return "".join(alphabet[int(i)] for i in best[keep] if 0 <= i < len(alphabet))


# --- rendering ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def font_paths() -> tuple[str, ...]:
    found = []
    for d in FONT_DIRS:
        for name in FONT_NAMES:
            p = os.path.join(d, name)
            if os.path.exists(p) and p not in found:
                found.append(p)
    return tuple(found)


def font(size: int, index: int = 0):
    from PIL import ImageFont
    paths = font_paths()
    if paths:
        return ImageFont.truetype(paths[index % len(paths)], size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=1)
def _word_pool() -> tuple[str, ...]:
    from .. import models
    pool = [w.strip(".,;:!?\"'()") for s in models.sample_texts(400) for w in s.split()]
    return tuple(w for w in pool if w.isalpha())


def words(count: int, seed: int) -> list[str]:
    """English-like words from the repo's sample sentences."""
    pool = _word_pool()
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.integers(0, len(pool), count)]


def captcha_image(text: str, size: tuple[int, int], rng, noise: float = 1.0, font_size: int | None = None,
                  colored: bool = True):
    """A captcha-like picture of `text`: light tinted background, characters in varied fonts,
    colours, small rotations and jitter, a few arcs and dots. size = (width, height). RGB PIL image."""
    from PIL import Image, ImageDraw
    w, h = size
    bg = tuple(int(v) for v in rng.integers(200, 256, 3)) if colored else (255, 255, 255)
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    fs = font_size or int(h * 0.7)
    n = len(text)
    step = (w - 10) / max(1, n)
    for k, ch in enumerate(text):
        f = font(int(fs * rng.uniform(0.85, 1.05)), int(rng.integers(0, 8)))
        color = tuple(int(v) for v in rng.integers(0, 110, 3)) if colored else (0, 0, 0)
        glyph = Image.new("RGBA", (fs * 2, fs * 2), (0, 0, 0, 0))
        gd = ImageDraw.Draw(glyph)
        left, top, right, bottom = gd.textbbox((0, 0), ch, font=f)
        gd.text(((fs * 2 - (right - left)) / 2 - left, (fs * 2 - (bottom - top)) / 2 - top), ch, font=f, fill=color + (255,))
        glyph = glyph.rotate(float(rng.uniform(-20, 20) * noise), resample=Image.BICUBIC)
        cx = 5 + step * (k + 0.5) + rng.uniform(-2, 2) * noise
        cy = h / 2 + rng.uniform(-0.08, 0.08) * h * noise
        img.paste(glyph, (int(cx - fs), int(cy - fs)), glyph)
    for _ in range(int(3 * noise)):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h)
        draw.arc([x0, y0 - h // 2, x0 + w // 2, y0 + h // 2], int(rng.integers(0, 180)), int(rng.integers(180, 360)),
                 fill=tuple(int(v) for v in rng.integers(60, 200, 3)), width=1)
    for _ in range(int(40 * noise)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        draw.point((int(x), int(y)), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def text_block(draw, box, rng, size: int, lines_words=None, font_index: int = 0, fill=(20, 20, 20)):
    """Fill box (x0, y0, x1, y1) with lines of words in one font size."""
    x0, y0, x1, y1 = box
    f = font(size, font_index)
    y = y0
    seed = int(rng.integers(0, 1 << 30))
    pool = words(400, seed)
    k = 0
    while y + size <= y1:
        line, x = [], x0
        while True:
            wd = pool[k % len(pool)]
            wlen = draw.textlength(wd + " ", font=f)
            if x + wlen > x1 and line:
                break
            line.append(wd)
            k += 1
            x += wlen
            if x > x1:
                break
        draw.text((x0, y), " ".join(line), font=f, fill=fill)
        y += int(size * 1.45)


def document_page(rng, size=(608, 800), kind: int = 0):
    """A drawn document page (RGB PIL): a title, paragraphs, and a table, a figure (bar chart or
    shapes) with its caption, a header and page number, in a layout that varies with kind."""
    from PIL import Image, ImageDraw
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    margin = int(rng.integers(36, 56))
    fi = int(rng.integers(0, 4))
    y = margin
    d.text((margin, 14), " ".join(words(4, int(rng.integers(1 << 30)))), font=font(11, fi), fill=(90, 90, 90))
    title = " ".join(words(int(rng.integers(3, 7)), int(rng.integers(1 << 30)))).title()
    d.text((margin, y), title, font=font(int(rng.integers(22, 30)), 1), fill=(0, 0, 0))
    y += 50
    two_col = kind % 3 == 2
    cols = [(margin, w // 2 - 10), (w // 2 + 10, w - margin)] if two_col else [(margin, w - margin)]
    for cx0, cx1 in cols:
        yy = y
        blocks = ["text", "figure" if kind % 2 == 0 else "table", "text"] if not two_col else ["text", "text", "figure"]
        for b in blocks:
            if yy > h - 120:
                break
            if b == "text":
                bh = int(rng.integers(90, 170))
                text_block(d, (cx0, yy, cx1, min(yy + bh, h - 60)), rng, int(rng.integers(11, 14)), font_index=fi)
                yy += bh + 18
            elif b == "table":
                rows, ncol = int(rng.integers(4, 8)), int(rng.integers(3, 6))
                rh = 22
                tw = cx1 - cx0
                for r in range(rows + 1):
                    d.line([(cx0, yy + r * rh), (cx1, yy + r * rh)], fill=(0, 0, 0), width=1)
                for c in range(ncol + 1):
                    x = cx0 + c * tw // ncol
                    d.line([(x, yy), (x, yy + rows * rh)], fill=(0, 0, 0), width=1)
                for r in range(rows):
                    for c in range(ncol):
                        cell = f"{rng.integers(0, 1000)}.{rng.integers(0, 99):02d}" if r and c else words(1, int(rng.integers(1 << 30)))[0][:9]
                        d.text((cx0 + c * tw // ncol + 4, yy + r * rh + 4), cell, font=font(11, fi), fill=(0, 0, 0))
                yy += rows * rh + 6
                d.text((cx0, yy), "Table " + str(kind + 1) + ": " + " ".join(words(5, int(rng.integers(1 << 30)))),
                       font=font(11, fi), fill=(0, 0, 0))
                yy += 30
            else:
                fh = int(rng.integers(120, 200))
                fw = cx1 - cx0
                d.rectangle([cx0, yy, cx1, yy + fh], outline=(0, 0, 0))
                nb = int(rng.integers(4, 9))
                for k in range(nb):
                    bh = int(rng.uniform(0.15, 0.85) * (fh - 20))
                    bx = cx0 + 10 + k * (fw - 20) // nb
                    d.rectangle([bx, yy + fh - 10 - bh, bx + (fw - 20) // nb - 6, yy + fh - 10],
                                fill=tuple(int(v) for v in rng.integers(40, 220, 3)))
                yy += fh + 6
                d.text((cx0, yy), "Figure " + str(kind + 1) + ". " + " ".join(words(6, int(rng.integers(1 << 30)))),
                       font=font(11, fi), fill=(0, 0, 0))
                yy += 30
    d.text((w // 2 - 6, h - 30), str(int(rng.integers(1, 300))), font=font(11, fi), fill=(60, 60, 60))
    return img


def drawn_face(draw, cx: float, cy: float, r: float, rng):
    """A frontal face: skin-toned ellipse, hair, eyes with pupils, brows, nose, mouth."""
    skin = [(241, 194, 167), (224, 172, 137), (198, 134, 103), (141, 85, 60), (255, 219, 190)][int(rng.integers(0, 5))]
    hair = [(30, 20, 10), (90, 60, 30), (200, 170, 90), (20, 20, 20), (120, 40, 20)][int(rng.integers(0, 5))]
    draw.ellipse([cx - r * 1.05, cy - r * 1.45, cx + r * 1.05, cy + r * 0.6], fill=hair)
    draw.ellipse([cx - r * 0.85, cy - r * 1.1, cx + r * 0.85, cy + r * 1.1], fill=skin)
    for s in (-1, 1):
        ex, ey = cx + s * r * 0.36, cy - r * 0.2
        draw.ellipse([ex - r * 0.18, ey - r * 0.09, ex + r * 0.18, ey + r * 0.09], fill=(250, 250, 250))
        draw.ellipse([ex - r * 0.08, ey - r * 0.08, ex + r * 0.08, ey + r * 0.08], fill=(60, 40, 20))
        draw.line([(ex - r * 0.2, ey - r * 0.22), (ex + r * 0.2, ey - r * 0.25)], fill=hair, width=max(1, int(r * 0.06)))
    shade = tuple(int(v * 0.8) for v in skin)
    draw.line([(cx, cy - r * 0.1), (cx - r * 0.08, cy + r * 0.22), (cx + r * 0.05, cy + r * 0.25)], fill=shade,
              width=max(1, int(r * 0.04)))
    draw.chord([cx - r * 0.3, cy + r * 0.3, cx + r * 0.3, cy + r * 0.62], 0, 180, fill=(170, 60, 60))


def face_scene(rng, size=(320, 320), faces: int | None = None):
    """A scene of drawn people: backdrop with shapes, 1-3 faces on bodies. RGB PIL image."""
    from PIL import Image, ImageDraw, ImageFilter
    w, h = size
    top = tuple(int(v) for v in rng.integers(90, 230, 3))
    img = Image.new("RGB", size, top)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        d.rectangle([int(x0), int(y0), int(x0 + rng.integers(20, 120)), int(y0 + rng.integers(20, 120))],
                    fill=tuple(int(v) for v in rng.integers(40, 250, 3)))
    n = faces if faces is not None else int(rng.integers(1, 4))
    for k in range(n):
        r = float(rng.uniform(0.09, 0.16) * min(w, h)) if n > 1 else float(rng.uniform(0.14, 0.24) * min(w, h))
        cx = (k + 0.5) * w / n + rng.uniform(-0.05, 0.05) * w
        cy = float(rng.uniform(0.3, 0.45) * h)
        shirt = tuple(int(v) for v in rng.integers(20, 240, 3))
        d.rounded_rectangle([cx - r * 1.6, cy + r * 1.0, cx + r * 1.6, cy + r * 4.5], radius=int(r * 0.6), fill=shirt)
        drawn_face(d, cx, cy, r, rng)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def text_photo(rng, size=(416, 416), chars: str = "", count: int = 6):
    """Large characters scattered on a textured background (a click-captcha picture)."""
    from PIL import Image, ImageDraw, ImageFilter
    w, h = size
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        base = rng.uniform(60, 200)
        gx, gy = rng.uniform(-60, 60), rng.uniform(-60, 60)
        arr[..., c] = base + gx * np.linspace(-1, 1, w)[None, :] + gy * np.linspace(-1, 1, h)[:, None]
    arr += rng.normal(0, 12, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    d = ImageDraw.Draw(img)
    placed = []
    for k in range(count):
        ch = chars[int(rng.integers(0, len(chars)))]
        fs = int(rng.integers(36, 64))
        for _ in range(20):
            x, y = int(rng.integers(10, w - fs - 10)), int(rng.integers(10, h - fs - 10))
            if all(abs(x - px) > fs and abs(y - py) > 1 or abs(x - px) > fs or abs(y - py) > fs for px, py in placed):
                break
        placed.append((x, y))
        glyph = Image.new("RGBA", (fs * 2, fs * 2), (0, 0, 0, 0))
        gd = ImageDraw.Draw(glyph)
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        gd.text((fs // 2, fs // 3), ch, font=font(fs, int(rng.integers(0, 8))), fill=color + (255,),
                stroke_width=2, stroke_fill=(255 - color[0], 255 - color[1], 255 - color[2], 255))
        glyph = glyph.rotate(float(rng.uniform(-30, 30)), resample=Image.BICUBIC)
        img.paste(glyph, (x - fs // 2, y - fs // 3), glyph)
    return img


def letterbox(img, size: int, fill=(114, 114, 114), center: bool = False):
    """Resize keeping the aspect ratio into size x size, padded with fill (top-left unless center)."""
    from PIL import Image
    w, h = img.size
    r = size / max(w, h)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (((size - nw) // 2, (size - nh) // 2) if center else (0, 0)))
    return canvas


# --- files of many types (magika) -------------------------------------------------------------

def sample_files(seed: int = 0) -> list[tuple[str, bytes]]:
    """(intended type, content) for generated files of ~30 types: source code, markup, data,
    documents, images, archives, audio."""
    import gzip
    import json
    import tarfile
    import wave
    import zipfile

    from PIL import Image
    rng = np.random.default_rng(seed)

    def wl(n):
        return words(n, int(rng.integers(1 << 30)))

    def ident():
        return "_".join(wl(2)).lower()

    files = []
    for k in range(3):
        f1, f2, v = ident(), ident(), ident()
        files.append(("python", (f"import os\nimport sys\nfrom pathlib import Path\n\n\ndef {f1}({v}, count=3):\n"
                                 f"    \"\"\"{' '.join(wl(8))}.\"\"\"\n    result = []\n    for i in range(count):\n"
                                 f"        result.append({v} * i)\n    return result\n\n\nclass {f2.title().replace('_', '')}:\n"
                                 f"    def __init__(self, path):\n        self.path = Path(path)\n\n    def read(self):\n"
                                 f"        with open(self.path) as fh:\n            return fh.read()\n\n\n"
                                 f"if __name__ == \"__main__\":\n    print({f1}(sys.argv[1]))\n").encode()))
        files.append(("javascript", (f"const {f1} = require('{f2}');\n\nfunction {v}(items, options = {{}}) {{\n"
                                     f"  const out = [];\n  for (let i = 0; i < items.length; i++) {{\n"
                                     f"    if (items[i] !== null) {{ out.push(items[i] * 2); }}\n  }}\n"
                                     f"  return out.filter(x => x > {k});\n}}\n\nmodule.exports = {{ {v} }};\n"
                                     f"document.getElementById('{f2}').addEventListener('click', () => console.log({v}([1, 2, 3])));\n").encode()))
        files.append(("c", (f"#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\nstatic int {f1}(const char *s, size_t n)\n"
                            f"{{\n    int total = 0;\n    for (size_t i = 0; i < n; ++i) {{\n        total += s[i];\n    }}\n"
                            f"    return total;\n}}\n\nint main(int argc, char **argv)\n{{\n    if (argc < 2) {{\n"
                            f"        fprintf(stderr, \"usage: %s {v}\\n\", argv[0]);\n        return 1;\n    }}\n"
                            f"    printf(\"%d\\n\", {f1}(argv[1], strlen(argv[1])));\n    return 0;\n}}\n").encode()))
        files.append(("java", (f"package com.example.{f1.split('_')[0]};\n\nimport java.util.ArrayList;\nimport java.util.List;\n\n"
                               f"public class {f2.title().replace('_', '')} {{\n    private final List<String> items = new ArrayList<>();\n\n"
                               f"    public void add(String {v}) {{\n        items.add({v});\n    }}\n\n    public static void main(String[] args) {{\n"
                               f"        System.out.println(\"{' '.join(wl(3))}\");\n    }}\n}}\n").encode()))
        files.append(("shell", (f"#!/bin/bash\nset -euo pipefail\n\n{v.upper()}=\"${{1:-/tmp}}\"\nfor f in \"${v.upper()}\"/*.txt; do\n"
                                f"  echo \"processing $f\"\n  grep -c '{wl(1)[0]}' \"$f\" || true\ndone\nif [ -d build ]; then\n"
                                f"  rm -rf build\nfi\nexit 0\n").encode()))
        rows = [["id", "name", "value", "date"]] + [[str(i), wl(1)[0], f"{rng.uniform(0, 1000):.2f}",
                                                      f"2024-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"] for i in range(40)]
        files.append(("csv", "\n".join(",".join(r) for r in rows).encode() + b"\n"))
        obj = {"name": ident(), "version": f"{k}.{rng.integers(0, 9)}.0", "items": [{"id": i, "label": wl(1)[0],
               "score": round(float(rng.uniform()), 3), "tags": wl(2)} for i in range(12)], "enabled": True}
        files.append(("json", json.dumps(obj, indent=2).encode()))
        body = "".join(f"<p>{' '.join(wl(20))}</p>\n" for _ in range(5))
        files.append(("html", (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{' '.join(wl(3))}</title>\n"
                               f"<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body>\n<h1>{' '.join(wl(4))}</h1>\n{body}"
                               f"<a href=\"/{ident()}\">{wl(1)[0]}</a>\n</body>\n</html>\n").encode()))
        files.append(("xml", ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<catalog>\n" + "".join(
            f"  <book id=\"bk{i}\">\n    <author>{' '.join(wl(2))}</author>\n    <title>{' '.join(wl(3))}</title>\n"
            f"    <price>{rng.uniform(5, 50):.2f}</price>\n  </book>\n" for i in range(8)) + "</catalog>\n").encode()))
        files.append(("markdown", (f"# {' '.join(wl(4))}\n\n{' '.join(wl(30))}.\n\n## {' '.join(wl(2))}\n\n"
                                   + "".join(f"- {' '.join(wl(6))}\n" for _ in range(5))
                                   + f"\n```bash\npip install {ident()}\n```\n\n{' '.join(wl(25))}.\n").encode()))
        files.append(("yaml", (f"name: {ident()}\non:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: ubuntu-latest\n"
                               f"    steps:\n      - uses: actions/checkout@v4\n      - name: {' '.join(wl(2))}\n"
                               f"        run: make test\n      - name: {wl(1)[0]}\n        run: |\n          echo {wl(1)[0]}\n").encode()))
        files.append(("ini", "".join(f"[{wl(1)[0].lower()}]\n" + "".join(f"{wl(1)[0].lower()} = {rng.integers(0, 100)}\n"
                                                                       for _ in range(4)) + "\n" for _ in range(4)).encode()))
        files.append(("txt", (" ".join(wl(120)) + ".\n\n" + " ".join(wl(90)) + ".\n").encode()))
        files.append(("sql", (f"CREATE TABLE {ident()} (\n  id INTEGER PRIMARY KEY,\n  name VARCHAR(255) NOT NULL,\n  created_at TIMESTAMP\n);\n\n"
                              + "".join(f"INSERT INTO {f1} (id, name) VALUES ({i}, '{wl(1)[0]}');\n" for i in range(10))
                              + f"SELECT name, COUNT(*) FROM {f1} WHERE id > 3 GROUP BY name ORDER BY name;\n").encode()))
        files.append(("css", "".join(f".{ident()} {{\n  margin: {rng.integers(0, 20)}px;\n  color: #{rng.integers(0, 1 << 24):06x};\n"
                                     f"  font-family: Arial, sans-serif;\n}}\n\n" for _ in range(8)).encode()))
        # binary formats
        pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        pixels[:, :, 1] = np.linspace(0, 255, 64)[None, :].astype(np.uint8)
        for fmt_name, key in (("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, fmt_name)
            files.append((key, buf.getvalue()))
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(4):
                z.writestr(f"{ident()}/{ident()}.txt", " ".join(wl(200)))
        files.append(("zip", zbuf.getvalue()))
        files.append(("gzip", gzip.compress(" ".join(wl(500)).encode(), mtime=0)))
        tbuf = io.BytesIO()
        with tarfile.open(fileobj=tbuf, mode="w") as t:
            for i in range(2):
                data = " ".join(wl(150)).encode()
                info = tarfile.TarInfo(f"{ident()}.txt")
                info.size = len(data)
                info.mtime = 0
                t.addfile(info, io.BytesIO(data))
        files.append(("tar", tbuf.getvalue()))
        wbuf = io.BytesIO()
        with wave.open(wbuf, "wb") as wf:
            wf.setnchannels(1)
            wf.setsampwidth(2)
            wf.setframerate(16000)
            tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) + rng.normal(0, 300, 8000)).astype("<i2")
            wf.writeframes(tone.tobytes())
        files.append(("wav", wbuf.getvalue()))
        files.append(("pdf", _tiny_pdf(" ".join(wl(40)))))
        rtf = "{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times New Roman;}}\n\\f0\\fs24 " + " ".join(wl(60)) + "\\par\n}\n"
        files.append(("rtf", rtf.encode()))
    return files


def _tiny_pdf(text: str) -> bytes:
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"]
    stream = f"BT /F1 12 Tf 72 720 Td ({text[:200]}) Tj ET"
    objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def magika_features(content: bytes, beg_size: int = 1024, end_size: int = 1024, padding: int = 256,
                    block_size: int = 4096) -> np.ndarray:
    """Magika's features for a file (magika.py _extract_features_from_seekable, mid_size 0):
    the first block lstripped, first beg_size bytes padded at the end; the last block rstripped,
    last end_size bytes padded at the start; int32 [beg_size + end_size]."""
    n = min(block_size, len(content))
    beg = content[:n]
    end = content[len(content) - n:]
    if len(content) <= block_size:
        beg, end = beg.strip(), end.strip()
    else:
        beg, end = beg.lstrip(), end.rstrip()
    beg_ints = list(beg[:beg_size]) + [padding] * max(0, beg_size - len(beg))
    end_ints = [padding] * max(0, end_size - len(end)) + list(end[-end_size:] if end else b"")
    return np.array(beg_ints + end_ints, np.int32)


# --- speech ------------------------------------------------------------------------------------

def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None or shutil.which("espeak") is not None


def speak(text: str, voice: str = "en-us", speed: int = 150, pitch: int = 50, rate: int = 16000) -> np.ndarray:
    """espeak-ng speech for text as float32 samples in [-1, 1] at `rate` Hz."""
    import wave

    from scipy.signal import resample_poly
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="hyperonnx-speech-") as work:
        path = Path(work) / "s.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
                       check=True, capture_output=True)
        with wave.open(str(path)) as wf:
            sr = wf.getframerate()
            x = np.frombuffer(wf.readframes(wf.getnframes()), "<i2").astype(np.float32) / 32768.0
    g = np.gcd(rate, sr)
    return resample_poly(x, rate // g, sr // g).astype(np.float32)


def kaldi_fbank(wave: np.ndarray, rate: int = 16000, n_mels: int = 80, frame_ms: float = 25, shift_ms: float = 10,
                window: str = "hamming", preemph: float = 0.97, low: float = 20.0) -> np.ndarray:
    """Log mel filterbank as kaldi computes it (torchaudio.compliance.kaldi.fbank with dither 0,
    snip_edges, DC removal, pre-emphasis, power spectrum, mel banks up to Nyquist). wave: samples at
    the scale the recipe uses (FunASR: int16 scale). Returns [frames, n_mels] float32."""
    wave = np.asarray(wave, np.float64)
    flen, fshift = int(rate * frame_ms / 1000), int(rate * shift_ms / 1000)
    if len(wave) < flen:
        return np.zeros((0, n_mels), np.float32)
    n = 1 + (len(wave) - flen) // fshift
    idx = np.arange(flen)[None, :] + fshift * np.arange(n)[:, None]
    frames = wave[idx]
    frames = frames - frames.mean(1, keepdims=True)
    frames = np.concatenate([frames[:, :1] - preemph * frames[:, :1], frames[:, 1:] - preemph * frames[:, :-1]], 1)
    if window == "hamming":
        win = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(flen) / (flen - 1))
    else:  # povey
        win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(flen) / (flen - 1))) ** 0.85
    frames = frames * win
    nfft = 1 << (flen - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    high = rate / 2
    mel_pts = np.linspace(mel(low), mel(high), n_mels + 2)
    fft_mel = mel(np.arange(nfft // 2) * rate / nfft)
    banks = np.zeros((n_mels, nfft // 2 + 1))
    for m in range(n_mels):
        left, center, right = mel_pts[m], mel_pts[m + 1], mel_pts[m + 2]
        up = (fft_mel - left) / (center - left)
        down = (right - fft_mel) / (right - center)
        banks[m, :nfft // 2] = np.maximum(0, np.minimum(up, down))
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps)).astype(np.float32)


def lfr_cmvn(feats: np.ndarray, m: int, n: int, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """FunASR's low frame rate stacking (m frames every n, left padded with the first frame) then
    (x + shift) * scale (am.mvn)."""
    t = len(feats)
    left = (m - 1) // 2
    padded = np.concatenate([np.repeat(feats[:1], left, 0), feats], 0)
    out_t = int(np.ceil(t / n))
    rows = []
    for i in range(out_t):
        chunk = padded[i * n:i * n + m]
        if len(chunk) < m:
            chunk = np.concatenate([chunk, np.repeat(feats[-1:], m - len(chunk), 0)], 0)
        rows.append(chunk.reshape(-1))
    x = np.stack(rows).astype(np.float32)
    return ((x + shift) * scale).astype(np.float32)


def read_kaldi_mvn(text: str) -> tuple[np.ndarray, np.ndarray]:
    """AddShift and Rescale vectors of a kaldi nnet am.mvn."""
    import re
    vecs = re.findall(r"<LearnRateCoef>\s+\d+\s+\[([^\]]*)\]", text)
    shift = np.array(vecs[0].split(), np.float32)
    scale = np.array(vecs[1].split(), np.float32)
    return shift, scale


# --- music (madmom's key CNN) --------------------------------------------------------------------

def madmom_log_filterbank(frame_size: int = 8192, rate: int = 44100, bands: int = 24, fmin: float = 65.0,
                          fmax: float = 2100.0, fref: float = 440.0) -> np.ndarray:
    """madmom's LogarithmicFilterbank (unique bins, overlapping triangular filters normalised to
    area 1, bands merged by maximum) as a [fft bins, bands] matrix."""
    bin_freqs = np.fft.fftfreq(frame_size, 1.0 / rate)[:frame_size // 2]
    left = np.floor(np.log2(fmin / fref) * bands)
    right = np.ceil(np.log2(fmax / fref) * bands)
    freqs = fref * 2.0 ** (np.arange(left, right) / bands)
    freqs = freqs[np.searchsorted(freqs, fmin):]
    freqs = freqs[:np.searchsorted(freqs, fmax, "right")]
    idx = np.clip(bin_freqs.searchsorted(freqs), 1, len(bin_freqs) - 1)
    idx = idx - (freqs - bin_freqs[idx - 1] < bin_freqs[idx] - freqs)
    bins = np.unique(idx)
    fb = np.zeros((len(bin_freqs), len(bins) - 2), np.float32)
    for band in range(len(bins) - 2):
        start, center, stop = (int(v) for v in bins[band:band + 3])
        if stop - start < 2:
            center, stop = start, start + 1
        data = np.zeros(stop - start)
        c = center - start
        data[:c] = np.linspace(0, 1, c, endpoint=False)
        data[c:] = np.linspace(1, 0, stop - start - c, endpoint=False)
        data /= data.sum()
        fb[start:stop, band] = np.maximum(fb[start:stop, band], data)
    return fb


def madmom_key_spectrogram(signal: np.ndarray, rate: int = 44100, frame_size: int = 8192, fps: float = 5.0) -> np.ndarray:
    """The key CNN's input as madmom computes it: frames of 8192 centred every rate / fps samples
    (zero padded), Hann window, |FFT|, the log filterbank, log10(1 + x). [frames, bands] float32."""
    hop = rate / fps
    n = int(np.ceil(len(signal) / hop))
    pad = np.concatenate([np.zeros(frame_size // 2), signal, np.zeros(frame_size)])
    starts = (np.arange(n) * hop).astype(np.int64)
    frames = np.stack([pad[s:s + frame_size] for s in starts])
    spec = np.abs(np.fft.rfft(frames * np.hanning(frame_size), frame_size))[:, :frame_size // 2]
    return np.log10(1.0 + spec @ madmom_log_filterbank(frame_size, rate)).astype(np.float32)


KEY_TONICS = ["A", "Bb", "B", "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab"]  # madmom KEY_LABELS order


def chord_progression(key: int, rng, seconds: float = 12.0, rate: int = 44100) -> np.ndarray:
    """A piece in key (0-11 major with tonic KEY_TONICS[key], 12-23 minor): I-IV-V-I style
    progressions of triads with a bass and a melody of scale notes, harmonic tones with decay."""
    tonic = 57 + key % 12  # MIDI, A3 = 57
    minor = key >= 12
    scale = [0, 2, 3, 5, 7, 8, 11] if minor else [0, 2, 4, 5, 7, 9, 11]
    degrees = [[0, 3, 4, 0], [0, 5, 3, 4], [0, 3, 0, 4], [5, 3, 4, 0]][int(rng.integers(0, 4))]
    out = np.zeros(int(seconds * rate))
    beat = 0.5
    t = np.arange(int(beat * 4 * rate)) / rate
    env = np.exp(-t * 1.5)
    pos = 0
    bar = 0
    while pos < len(out):
        d = degrees[bar % len(degrees)]
        chord = [scale[(d + i) % 7] + 12 * ((d + i) // 7) for i in (0, 2, 4)]
        notes = [tonic + c for c in chord] + [tonic - 12 + chord[0]]
        seg = np.zeros(len(t))
        for m in notes:
            f = 440.0 * 2 ** ((m - 69) / 12)
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)):
                seg += a * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.28))
        for b in range(4):  # melody: one scale note a beat
            m = tonic + 12 + scale[int(rng.integers(0, 7))]
            f = 440.0 * 2 ** ((m - 69) / 12)
            s0, s1 = int(b * beat * rate), int((b + 1) * beat * rate)
            tt = t[:s1 - s0]
            seg[s0:s1] += 0.6 * np.sin(2 * np.pi * f * tt) * np.exp(-tt * 4)
        seg *= env
        n = min(len(seg), len(out) - pos)
        out[pos:pos + n] += seg[:n]
        pos += n
        bar += 1
    out += rng.normal(0, 0.01, len(out))
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def _triangular_bank(bins: np.ndarray, n_fft_bins: int) -> np.ndarray:
    """madmom's overlapping triangular filters on (start, center, stop) bin triples, each
    normalised to area 1, bands merged by maximum."""
    fb = np.zeros((n_fft_bins, len(bins) - 2), np.float32)
    for band in range(len(bins) - 2):
        start, center, stop = (int(v) for v in bins[band:band + 3])
        if stop - start < 2:
            center, stop = start, start + 1
        data = np.zeros(stop - start)
        c = center - start
        data[:c] = np.linspace(0, 1, c, endpoint=False)
        data[c:] = np.linspace(1, 0, stop - start - c, endpoint=False)
        data /= data.sum()
        fb[start:stop, band] = np.maximum(fb[start:stop, band], data)
    return fb


def _nearest_bins(freqs: np.ndarray, bin_freqs: np.ndarray) -> np.ndarray:
    idx = np.clip(bin_freqs.searchsorted(freqs), 1, len(bin_freqs) - 1)
    return idx - (freqs - bin_freqs[idx - 1] < bin_freqs[idx] - freqs)


def madmom_onset_features(signal: np.ndarray, rate: int = 44100) -> np.ndarray:
    """The onset CNN's input as madmom's CNNOnsetProcessor computes it: for frame sizes 2048,
    1024, 4096 at 100 fps, |STFT| (Hann) through 80 mel bands 27.5-16000 Hz (non-unique bins,
    normalised filters), log(x + eps); stacked in depth, the first and last frames repeated 7
    times. [frames + 14, 80, 3] float32."""
    hop = rate / 100.0
    n = int(np.ceil(len(signal) / hop))
    mel = lambda f: 1127.01048 * np.log(np.asarray(f) / 700.0 + 1.0)  # noqa: E731
    imel = lambda m: 700.0 * (np.exp(np.asarray(m) / 1127.01048) - 1.0)  # noqa: E731
    specs = []
    for size in (2048, 1024, 4096):
        bin_freqs = np.fft.fftfreq(size, 1.0 / rate)[:size // 2]
        freqs = imel(np.linspace(mel(27.5), mel(16000.0), 82))
        fb = _triangular_bank(_nearest_bins(freqs, bin_freqs), size // 2)
        pad = np.concatenate([np.zeros(size // 2), signal, np.zeros(size)])
        starts = (np.arange(n) * hop).astype(np.int64)
        frames = np.stack([pad[s:s + size] for s in starts])
        spec = np.abs(np.fft.rfft(frames * np.hanning(size), size))[:, :size // 2]
        specs.append(np.log(spec @ fb + np.spacing(1)))
    x = np.dstack(specs).astype(np.float32)
    return np.concatenate([np.repeat(x[:1], 7, 0), x, np.repeat(x[-1:], 7, 0)])


def pick_onsets(act: np.ndarray, fps: float = 100.0, threshold: float = 0.54, smooth: float = 0.05,
                pre_max: float = 0.01, post_max: float = 0.05, combine: float = 0.03) -> np.ndarray:
    """madmom's OnsetPeakPickingProcessor in its CNN settings: Hamming smoothing, threshold, a local
    maximum over [-pre_max, +post_max], onsets closer than `combine` merged. Times in seconds."""
    act = np.asarray(act, np.float64).reshape(-1)
    k = int(round(smooth * fps))
    if k > 1:
        win = np.hamming(k)
        act = np.convolve(act, win / win.sum(), "same")
    lo, hi = int(round(pre_max * fps)), int(round(post_max * fps))
    peaks = []
    for i in np.flatnonzero(act >= threshold):
        seg = act[max(0, i - lo):i + hi + 1]
        if act[i] == seg.max():
            peaks.append(i / fps)
    out = []
    for t in peaks:
        if not out or t - out[-1] > combine:
            out.append(t)
    return np.array(out)


def events_agree(ref: list[np.ndarray], out: list[np.ndarray], tol: float, bar: float = 0.9, what: str = "events"):
    """Events (times) matched one-to-one within tol, both ways >= bar, pooled over clips."""
    matched = n_ref = n_out = 0
    for r, o in zip(ref, out):
        r, o = np.sort(np.asarray(r)), np.sort(np.asarray(o))
        n_ref, n_out = n_ref + len(r), n_out + len(o)
        used = np.zeros(len(o), bool)
        for t in r:
            d = np.abs(o - t)
            d[used] = np.inf
            if len(d) and d.min() <= tol:
                used[int(d.argmin())] = True
                matched += 1
    if n_ref == 0:
        return float("nan"), False, f"VACUOUS: the original finds no {what}"
    recall, precision = matched / n_ref, matched / n_out if n_out else 0.0
    return (min(recall, precision), recall >= bar and precision >= bar,
            f"matched {matched}/{n_ref} of the original's {what}, {matched}/{n_out} of its own (within {tol * 1000:.0f} ms, both >= {bar})")


def note_sequence(rng, seconds: float = 6.0, rate: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """Plucked / struck notes (harmonic tones with fast attack and decay) and a few drum-like noise
    bursts at random times 0.12-0.6 s apart; (signal, onset times)."""
    out = np.zeros(int(seconds * rate))
    t, onsets = 0.3, []
    while t < seconds - 0.5:
        onsets.append(t)
        start = int(t * rate)
        dur = int(rate * rng.uniform(0.3, 0.8))
        tt = np.arange(dur) / rate
        if rng.random() < 0.2:
            note = rng.normal(0, 1, dur) * np.exp(-tt * 30)
        else:
            f = 440.0 * 2 ** ((rng.integers(40, 80) - 69) / 12)
            note = sum(a * np.sin(2 * np.pi * f * h * tt) for h, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15)))
            note = note * np.exp(-tt * rng.uniform(3, 8)) * np.minimum(1, tt / 0.003)
        n = min(dur, len(out) - start)
        out[start:start + n] += note[:n] * rng.uniform(0.3, 1.0)
        t += float(rng.uniform(0.12, 0.6))
    out += rng.normal(0, 0.003, len(out))
    return (0.5 * out / np.abs(out).max()).astype(np.float32), np.array(onsets)
