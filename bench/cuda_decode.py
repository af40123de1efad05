#!/usr/bin/env python3
"""Throughput of the DecodeWeights CUDA kernel against a device-to-device copy, in one run.

For tensors of 1M .. 512M elements, with the codebooks of the three presets and each output
dtype, prints GB/s of *output* written per second:

- copy      torch's device-to-device copy of a buffer the size of the output (reads and writes
            it: the memory system's practical ceiling for moving that many bytes);
- decode    hyperonnx_cuda_decode with a caller's device flag, back to back on one stream: the
            kernel as onnxruntime would run it in a pipeline (rule 5 still checked by the kernel);
- checked   the same call letting the library check rule 5 itself: it allocates the flag, waits
            for the stream and reads it back, every call (what a session pays per decode);
- direct / table: the two kernel paths forced (decode is the automatic choice of the two).

The seeds hold random indices over the whole codebook, packed on the GPU (no encoder run).
Needs torch with CUDA and the library built with the CUDA kernel ($HYPERONNX_LIBRARY or the
installed one). Usage: python bench/cuda_decode.py [--sizes 1M,16M,512M] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys

import torch

# The presets' codebooks (DESIGN.md section 2): points n, rings C, bits = bit_length((n+1)(C+1)-1).
PRESETS = {
    "paper": dict(points=1600, rings=4, side=0.8, ring_scales=[1.6, 2.2, 2.8, 3.4]),
    "paper-unet": dict(points=225, rings=3, side=0.1, ring_scales=[2.0, 3.0, 4.0]),
    "paper-llama": dict(points=1600, rings=3, side=0.1, ring_scales=[2.0, 3.0, 4.0]),
}
DTYPES = {"float32": (1, 4), "float16": (10, 2), "bfloat16": (16, 2)}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
    return int(text.rstrip("KMG")) * factor


def library_path() -> str:
    path = os.environ.get("HYPERONNX_LIBRARY")
    if path:
        return path
    import hyperonnx

    return hyperonnx.get_library_path()


def entry_point(path: str):
    lib = ctypes.CDLL(path)
    fn = lib.hyperonnx_cuda_decode
    u64, i64, p = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, ctypes.POINTER(ctypes.c_float), u64,
                   ctypes.c_float, ctypes.POINTER(ctypes.c_float), u64, p, p, ctypes.c_int, p,
                   ctypes.c_char_p, u64]
    fn.restype = ctypes.c_int
    return fn


def pack_on_gpu(indices: torch.Tensor, bits: int) -> torch.Tensor:
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


def gpu_time(fn, min_seconds: float = 0.05, max_reps: int = 200) -> float:
    """Seconds per call: the median of a few timed batches (CUDA events) after a warm-up."""
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    once = max(start.elapsed_time(stop) / 1e3, 1e-6)
    reps = max(3, min(max_reps, int(min_seconds / once)))
    samples = []
    for _ in range(3):
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) / 1e3 / reps)
    return sorted(samples)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,4M,16M,64M,256M,512M", help="elements per tensor")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 1
    fn = entry_point(library_path())
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
            dst = torch.empty_like(src)
            copy_s = gpu_time(lambda: dst.copy_(src))
            del src
            for preset in args.presets.split(","):
                cfg = PRESETS[preset]
                codebook = (cfg["points"] + 1) * (cfg["rings"] + 1)
                bits = (codebook - 1).bit_length()
                pairs = (size + 1) // 2
                indices = torch.randint(0, codebook, (pairs,), device="cuda", dtype=torch.int64)
                seed = pack_on_gpu(indices, bits)
                del indices
                out = dst  # the decode writes the same bytes the copy wrote
                shape = (ctypes.c_int64 * 1)(size)
                center = (ctypes.c_float * 2)(0.01, -0.02)
                scales = (ctypes.c_float * max(1, len(cfg["ring_scales"])))(*cfg["ring_scales"])

                def run(mode, own_flag):
                    rc = fn(seed.data_ptr(), seed.numel(), shape, 1, dtype, bits, cfg["points"], cfg["rings"],
                            center, 2, cfg["side"], scales, len(cfg["ring_scales"]), out.data_ptr(),
                            stream.cuda_stream, mode, None if own_flag else flag.data_ptr(), message,
                            len(message))
                    if rc != 0:
                        raise RuntimeError(message.value.decode())

                timings = {name: gpu_time(lambda m=mode, o=own: run(m, o))
                           for name, mode, own in (("decode", 0, False), ("checked", 0, True),
                                                   ("direct", 1, False), ("table", 2, False))}
                torch.cuda.synchronize()
                assert int(flag.item()) == 0, "an index was out of range"
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
            del dst, out
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
