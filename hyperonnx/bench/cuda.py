"""`hyperonnx bench cuda`: throughput of the DecodeWeights CUDA kernel against a device-to-device
copy, in one run.

For tensors of 1M .. 512M elements, with the codebooks of the winding presets and each output
dtype, prints GB/s of *output* written per second:

- copy      torch's device-to-device copy of a buffer the size of the output (reads and writes
            it: the memory system's practical ceiling for moving that many bytes);
- decode    hyperonnx_cuda_decode with a caller's device flag, back to back on one stream: the
            kernel as onnxruntime would run it in a pipeline (rule 5 still checked by the kernel);
- checked   the same call letting the library check rule 5 itself: it allocates the flag, waits
            for the stream and reads it back, every call (what a session pays per decode);
- direct / table: the two kernel paths forced (decode is the automatic choice of the two).

The seeds hold random indices over the whole codebook, packed on the GPU (no encoder run); the
first and last pairs of each decode are checked against the reference decoder. Needs torch with
CUDA and the library built with the CUDA kernel ($HYPERONNX_LIBRARY or the installed one).
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np

from .. import codec
from ..codec import bitpack
from ..format import Seed
from ..runtime import get_library_path

DTYPES = {"float32": (1, 4), "float16": (10, 2), "bfloat16": (16, 2)}
CHECKED_PAIRS = 1 << 16  # pairs compared with the reference decoder at each end of the tensor


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * factor


def preset_codebooks(names=None) -> dict[str, dict]:
    """The largest codebook each winding preset can choose: its most points and rings, with
    ring scales of the shape the encoder produces (increasing, > 1)."""
    books = {}
    for name, config in codec.PRESETS.items():
        if names and name not in names:
            continue
        if not isinstance(config, codec.WindingConfig):
            continue
        rings = config.max_rings
        books[name] = {"points": max(config.points), "rings": rings, "side": config.side,
                       "ring_scales": [1.0 + 0.6 * (k + 1) for k in range(rings)]}
    return books


def entry_point(path: str):
    """The library's hyperonnx_cuda_decode (custom_ops/cuda/decode_weights_cuda.cu), or None."""
    fn = getattr(ctypes.CDLL(path), "hyperonnx_cuda_decode", None)
    if fn is None:
        return None
    u64, i64, p = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, ctypes.POINTER(ctypes.c_float), u64,
                   ctypes.c_float, ctypes.POINTER(ctypes.c_float), u64, p, p, ctypes.c_int, p,
                   ctypes.c_char_p, u64]
    fn.restype = ctypes.c_int
    return fn


def pack_on_gpu(torch, indices, bits: int):
    """FORMAT.md section 4 bit stream of int64 `indices` (on the GPU), LSB first."""
    count = indices.numel()
    out = torch.zeros((count * bits + 7) // 8, dtype=torch.uint8, device=indices.device)
    shifts = torch.arange(bits, device=indices.device)
    weights = (1 << torch.arange(8, device=indices.device)).to(torch.int32)
    chunk = 1 << 22  # a multiple of 8: every chunk starts on a byte boundary
    for start in range(0, count, chunk):
        x = indices[start:start + chunk]
        stream = ((x[:, None] >> shifts) & 1).to(torch.int32).reshape(-1)
        pad = (-stream.numel()) % 8
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        packed = (stream.view(-1, 8) * weights).sum(1).to(torch.uint8)
        first = start * bits // 8
        out[first:first + packed.numel()] = packed
    return out


def gpu_time(torch, fn, min_seconds: float = 0.05, max_reps: int = 200) -> float:
    """Seconds per call: the median of three timed batches (CUDA events) after a warm-up."""
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    once = max(start.elapsed_time(stop) / 1e3, 1e-6)
    reps = max(3, min(max_reps, int(min_seconds / once)))
    for _ in range(reps):  # one untimed batch: clocks up, caches and allocator settled
        fn()
    samples = []
    for _ in range(3):
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) / 1e3 / reps)
    return sorted(samples)[1]


def reference_bytes(indices: np.ndarray, dtype: int, bits: int, book: dict) -> bytes:
    """The reference decoder's output bytes for these pairs' indices."""
    attrs = {"bits": bits, "points": book["points"], "rings": book["rings"], "center": [0.01, -0.02],
             "side": book["side"], "ring_scales": book["ring_scales"]}
    seed = Seed("winding", (2 * indices.size,), dtype, bitpack.pack(indices.astype(np.uint64), bits), attrs)
    return codec.decode(seed).tobytes()


def _error(text: str) -> int:
    print(f"hyperonnx bench cuda: error: {text}", file=sys.stderr)
    return 1


def main(args) -> int:
    try:
        import torch
    except ImportError:
        return _error("needs torch with CUDA")
    if not torch.cuda.is_available():
        return _error("no CUDA GPU (torch.cuda.is_available() is False)")
    library = args.library or get_library_path()
    fn = entry_point(library)
    if fn is None:
        return _error(f"{library} was built without the CUDA kernel")
    books = preset_codebooks(args.presets)
    stream = torch.cuda.current_stream()
    device = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {device} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("GB/s of output written (copy: a device-to-device copy of the same number of bytes)")
    header = (f"{'elements':>9} {'dtype':>8} {'preset':>11} {'bits':>4} {'copy':>7} {'decode':>7} {'ratio':>6} "
              f"{'checked':>7} {'direct':>7} {'table':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    message = ctypes.create_string_buffer(512)
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        for dtype_name in args.dtypes.split(","):
            dtype, itemsize = DTYPES[dtype_name]
            nbytes = size * itemsize
            src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            out = torch.empty_like(src)
            copy_s = gpu_time(torch, lambda: out.copy_(src))
            del src
            for preset, book in books.items():
                codebook = (book["points"] + 1) * (book["rings"] + 1)
                bits = (codebook - 1).bit_length()
                pairs = (size + 1) // 2
                indices = torch.randint(0, codebook, (pairs,), device="cuda", dtype=torch.int64)
                seed = pack_on_gpu(torch, indices, bits)
                ends = min(CHECKED_PAIRS, pairs // 2)
                head, tail = indices[:ends].cpu().numpy(), indices[pairs - ends:].cpu().numpy()
                del indices
                shape = (ctypes.c_int64 * 1)(size)
                center = (ctypes.c_float * 2)(0.01, -0.02)
                scales = (ctypes.c_float * max(1, book["rings"]))(*book["ring_scales"])

                def run(mode, own_flag):
                    rc = fn(seed.data_ptr(), seed.numel(), shape, 1, dtype, bits, book["points"], book["rings"],
                            center, 2, book["side"], scales, book["rings"], out.data_ptr(),
                            stream.cuda_stream, mode, None if own_flag else flag.data_ptr(), message,
                            len(message))
                    if rc != 0:
                        raise RuntimeError(message.value.decode())

                timings = {}
                for name, mode, own in (("decode", 0, False), ("checked", 0, True), ("direct", 1, False),
                                        ("table", 2, False)):
                    timings[name] = gpu_time(torch, lambda: run(mode, own))
                    out.fill_(0xA5)  # poison, decode once more, compare both ends with the reference
                    run(mode, False)
                    got = out.view(-1)
                    end_bytes = 2 * itemsize * ends
                    if (got[:end_bytes].cpu().numpy().tobytes() != reference_bytes(head, dtype, bits, book) or
                            got[nbytes - end_bytes:].cpu().numpy().tobytes() !=
                            reference_bytes(tail, dtype, bits, book)):
                        raise AssertionError(f"{name} decode differs from the reference decoder "
                                             f"({size} elements, {dtype_name}, {preset})")
                    if int(flag.item()) != 0:
                        raise AssertionError("an index was reported out of range")
                gbs = {name: nbytes / t / 1e9 for name, t in timings.items()}
                row = {"gpu": device, "elements": size, "dtype": dtype_name, "preset": preset, "bits": bits,
                       "copy_gbs": nbytes / copy_s / 1e9, **{f"{k}_gbs": v for k, v in gbs.items()}}
                row["ratio"] = row["decode_gbs"] / row["copy_gbs"]
                rows.append(row)
                label = f"{size >> 20}M" if size >= 1 << 20 else str(size)
                print(f"{label:>9} {dtype_name:>8} {preset:>11} {bits:>4} {row['copy_gbs']:7.0f} "
                      f"{gbs['decode']:7.0f} {row['ratio']:6.2f} {gbs['checked']:7.0f} {gbs['direct']:7.0f} "
                      f"{gbs['table']:7.0f}", flush=True)
                del seed
            del out
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
