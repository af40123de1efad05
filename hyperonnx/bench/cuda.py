"""`hyperonnx bench cuda`: throughput of the DecodeWeights CUDA kernel against a device-to-device
copy, in one run.

For tensors of 1M .. 512M elements, each output dtype, the codebooks of the winding presets and
the lattice codec at several index widths (group 128), prints GB/s of *output* written per second:

- copy      torch's device-to-device copy of a buffer the size of the output (reads and writes
            it: the memory system's practical ceiling for moving that many bytes);
- decode    the library's entry point with a caller's device flag, back to back on one stream:
            the kernel as onnxruntime would run it in a pipeline (the run-time rules still checked
            by the kernel);
- checked   the same call letting the library check those rules itself: it allocates the flag,
            waits for the stream and reads it back, every call (what a session pays per decode);
- direct / table: the two kernel paths forced (decode is the automatic choice).

The seeds hold random indices (winding: over the whole codebook; lattice: every step, with random
float16 scales), packed on the GPU (no encoder run); the first and last pairs of each decode are
checked against the reference decoder. Needs torch with CUDA and the library built with the CUDA
kernel ($HYPERONNX_LIBRARY or the installed one).

Then the fused operators (custom_ops/cuda/fused_cuda.cu), per weight shape K x N (default: a
7B-class layer's 4096x4096, 4096x14336, 14336x4096) and activation rows M (1, 16, 256): microseconds
per product and TB/s of weights read (the seed and scales; cuBLAS: the fp16 weight), for
- cublas-fp16   torch.matmul of float16 A [M, K] and a random float16 W [K, N];
- <codec>       DecodeMatMul's kernel (W [K, N]) through hyperonnx_cuda_fused_gemm;
- <codec>-T     DecodeGemm transB=1's kernel (W stored [N, K]);
for random seeds of the lattice codec (8 index bits, group 128: 4.125 bits/weight) and the trellis
codec (k = 4, L = 12, group 128: 4.125 bits/weight). Each product is first checked against the
library's DecodeWeights kernel + torch's float32 matmul within FORMAT.md §8.2's bound. Calls are
timed as CUDA graphs of back-to-back calls where the capture works (no host launch cost), else
plainly. `--fused-shapes ""` skips these rows, `--sizes ""` the decode rows.
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np

from .. import codec
from ..codec import bitpack, lattice
from ..format import Seed
from ..runtime import get_library_path

DTYPES = {"float32": (1, 4), "float16": (10, 2), "bfloat16": (16, 2)}
CHECKED_PAIRS = 1 << 16  # pairs compared with the reference decoder at each end of the tensor
LATTICE_GROUP = 128  # weights per scale of the lattice rows (the lattice preset's)
LATTICE_UNIT = 2.0 ** -14  # scale unit of the lattice rows: scales of order 1 give weights of order 1e-4


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


def entry_points(path: str):
    """The library's hyperonnx_cuda_decode and hyperonnx_cuda_decode_lattice
    (custom_ops/cuda/decode_weights_cuda.cu), or None."""
    lib = ctypes.CDLL(path)
    winding = getattr(lib, "hyperonnx_cuda_decode", None)
    lattice_fn = getattr(lib, "hyperonnx_cuda_decode_lattice", None)
    if winding is None or lattice_fn is None:
        return None
    u64, i64, p, f32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    winding.argtypes = [p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, ctypes.POINTER(f32), u64,
                        f32, ctypes.POINTER(f32), u64, p, p, ctypes.c_int, p, ctypes.c_char_p, u64]
    lattice_fn.argtypes = [p, u64, p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, f32, f32, f32,
                           p, p, ctypes.c_int, p, ctypes.c_char_p, u64]
    winding.restype = lattice_fn.restype = ctypes.c_int
    return winding, lattice_fn


def lattice_attributes(bits: int) -> dict:
    """The attributes of a lattice row at `bits` index bits: the encoder's generator and companding."""
    config = codec.LatticeConfig(index_bits=bits, group=LATTICE_GROUP)
    return {"bits": bits, "generator": lattice.generator(bits), "group": LATTICE_GROUP, "alpha": config.alpha,
            "beta": config.beta, "scale_unit": LATTICE_UNIT}


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
    """The reference decoder's output bytes for these pairs' indices (winding)."""
    attrs = {"bits": bits, "points": book["points"], "rings": book["rings"], "center": [0.01, -0.02],
             "side": book["side"], "ring_scales": book["ring_scales"]}
    seed = Seed("winding", (2 * indices.size,), dtype, bitpack.pack(indices.astype(np.uint64), bits), attrs)
    return codec.decode(seed).tobytes()


def lattice_reference_bytes(steps: np.ndarray, scales: np.ndarray, dtype: int, attrs: dict) -> bytes:
    """The reference decoder's output bytes for these pairs' steps, the first pair starting a group
    and `scales` (float16) those of their groups."""
    count = 2 * steps.size
    seed = Seed("lattice", (count,), dtype, bitpack.pack(steps.astype(np.uint64), attrs["bits"]), attrs,
                scales=scales[:-(-count // attrs["group"])])
    return codec.decode(seed).tobytes()


def _error(text: str) -> int:
    print(f"hyperonnx bench cuda: error: {text}", file=sys.stderr)
    return 1


def parse_bits(text: str) -> list[int]:
    bits = [int(b) for b in text.split(",") if b.strip()] if text else []
    for b in bits:
        if not lattice.MIN_BITS <= b <= lattice.MAX_BITS:
            raise ValueError(f"lattice index bits must be in [{lattice.MIN_BITS}, {lattice.MAX_BITS}], not {b}")
    return bits


def main(args) -> int:
    try:
        lattice_bits = parse_bits(args.lattice_bits)
        fused_shapes = parse_shapes(args.fused_shapes)
        fused_rows = [int(m) for m in args.fused_rows.split(",") if m.strip()]
    except ValueError as e:
        return _error(str(e))
    try:
        import torch
    except ImportError:
        return _error("needs torch with CUDA")
    if not torch.cuda.is_available():
        return _error("no CUDA GPU (torch.cuda.is_available() is False)")
    library = args.library or get_library_path()
    fns = entry_points(library)
    if fns is None:
        return _error(f"{library} was built without the CUDA kernel")
    winding_fn, lattice_fn = fns
    books = preset_codebooks(args.presets)
    stream = torch.cuda.current_stream()
    device = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {device} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("GB/s of output written (copy: a device-to-device copy of the same number of bytes)")
    header = (f"{'elements':>9} {'dtype':>8} {'codebook':>11} {'bits':>4} {'copy':>7} {'decode':>7} {'ratio':>6} "
              f"{'checked':>7} {'direct':>7} {'table':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    message = ctypes.create_string_buffer(512)
    # (label, codec, bits, indices drawn in [0, limit), attributes)
    setups = [(preset, "winding", ((book["points"] + 1) * (book["rings"] + 1) - 1).bit_length(),
               (book["points"] + 1) * (book["rings"] + 1), book) for preset, book in books.items()]
    setups += [(f"lattice-{b}", "lattice", b, (1 << b) - 1, lattice_attributes(b)) for b in lattice_bits]
    for size in [parse_size(s) for s in args.sizes.split(",") if s.strip()]:
        for dtype_name in args.dtypes.split(","):
            dtype, itemsize = DTYPES[dtype_name]
            nbytes = size * itemsize
            src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            out = torch.empty_like(src)
            copy_s = gpu_time(torch, lambda: out.copy_(src))
            del src
            for label, codec_name, bits, limit, attrs in setups:
                pairs = (size + 1) // 2
                indices = torch.randint(0, limit, (pairs,), device="cuda", dtype=torch.int64)
                seed = pack_on_gpu(torch, indices, bits)
                ends = min(CHECKED_PAIRS, pairs // 2)
                tail_start = pairs - ends
                scales = None
                if codec_name == "lattice":
                    group_pairs = LATTICE_GROUP // 2
                    tail_start -= tail_start % group_pairs  # the tail starts a group
                    count = -(-size // LATTICE_GROUP)
                    scales = (torch.rand(count, device="cuda") * 1.5 + 0.5).to(torch.float16)
                    host_scales = scales.cpu().numpy()
                head, tail = indices[:ends].cpu().numpy(), indices[tail_start:].cpu().numpy()
                del indices
                shape = (ctypes.c_int64 * 1)(size)
                if codec_name == "lattice":
                    def run(mode, own_flag):
                        return lattice_fn(seed.data_ptr(), seed.numel(), scales.data_ptr(), scales.numel(), shape, 1,
                                          dtype, bits, attrs["generator"], attrs["group"], attrs["alpha"],
                                          attrs["beta"], attrs["scale_unit"], out.data_ptr(), stream.cuda_stream,
                                          mode, None if own_flag else flag.data_ptr(), message, len(message))

                    expected_head = lattice_reference_bytes(head, host_scales, dtype, attrs)
                    expected_tail = lattice_reference_bytes(tail, host_scales[2 * tail_start // LATTICE_GROUP:],
                                                            dtype, attrs)
                else:
                    center = (ctypes.c_float * 2)(0.01, -0.02)
                    ring_scales = (ctypes.c_float * max(1, attrs["rings"]))(*attrs["ring_scales"])

                    def run(mode, own_flag):
                        return winding_fn(seed.data_ptr(), seed.numel(), shape, 1, dtype, bits, attrs["points"],
                                          attrs["rings"], center, 2, attrs["side"], ring_scales, attrs["rings"],
                                          out.data_ptr(), stream.cuda_stream, mode,
                                          None if own_flag else flag.data_ptr(), message, len(message))

                    expected_head = reference_bytes(head, dtype, bits, attrs)
                    expected_tail = reference_bytes(tail, dtype, bits, attrs)

                def checked_run(mode, own_flag):
                    if run(mode, own_flag) != 0:
                        raise RuntimeError(message.value.decode())

                timings = {}
                for name, mode, own in (("decode", 0, False), ("checked", 0, True), ("direct", 1, False),
                                        ("table", 2, False)):
                    timings[name] = gpu_time(torch, lambda: checked_run(mode, own))
                    out.fill_(0xA5)  # poison, decode once more, compare both ends with the reference
                    checked_run(mode, False)
                    got = out.view(-1)
                    tail_bytes = 2 * itemsize * tail_start
                    if (got[:len(expected_head)].cpu().numpy().tobytes() != expected_head or
                            got[tail_bytes:tail_bytes + len(expected_tail)].cpu().numpy().tobytes() != expected_tail):
                        raise AssertionError(f"{name} decode differs from the reference decoder "
                                             f"({size} elements, {dtype_name}, {label})")
                    if int(flag.item()) != 0:
                        raise AssertionError("the kernel reported a broken rule")
                gbs = {name: nbytes / t / 1e9 for name, t in timings.items()}
                row = {"gpu": device, "elements": size, "dtype": dtype_name, "codebook": label, "codec": codec_name,
                       "bits": bits, "copy_gbs": nbytes / copy_s / 1e9, **{f"{k}_gbs": v for k, v in gbs.items()}}
                row["ratio"] = row["decode_gbs"] / row["copy_gbs"]
                rows.append(row)
                size_label = f"{size >> 20}M" if size >= 1 << 20 else str(size)
                print(f"{size_label:>9} {dtype_name:>8} {label:>11} {bits:>4} {row['copy_gbs']:7.0f} "
                      f"{gbs['decode']:7.0f} {row['ratio']:6.2f} {gbs['checked']:7.0f} {gbs['direct']:7.0f} "
                      f"{gbs['table']:7.0f}", flush=True)
                del seed, scales
            del out
            torch.cuda.empty_cache()
    if fused_shapes:
        fused = fused_entry_points(library)
        if fused is None:
            return _error(f"{library} has no fused CUDA kernels (hyperonnx_cuda_fused_*)")
        rows += fused_bench(torch, fused, fused_shapes, fused_rows, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


# ----------------------------------------------------------------------------- fused operators

FUSED_GROUP = 128  # weights per scale of the fused rows' seeds (both codecs' presets)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """"4096x4096,4096x14336" -> [(K, N), ...]."""
    shapes = []
    for item in text.split(","):
        if item.strip():
            k, n = (int(v) for v in item.lower().split("x"))
            if k < 1 or n < 1:
                raise ValueError(f"fused shape {item!r} needs K, N >= 1")
            shapes.append((k, n))
    return shapes


def fused_entry_points(path: str):
    """{"lattice", "trellis", "gemm", "free", "decode_lattice", "decode_trellis"}: the library's
    hyperonnx_cuda_fused_* and DecodeWeights entry points (ctypes), or None without them."""
    lib = ctypes.CDLL(path)
    names = {"lattice": "hyperonnx_cuda_fused_lattice", "trellis": "hyperonnx_cuda_fused_trellis",
             "gemm": "hyperonnx_cuda_fused_gemm", "free": "hyperonnx_cuda_fused_free",
             "decode_lattice": "hyperonnx_cuda_decode_lattice", "decode_trellis": "hyperonnx_cuda_decode_trellis"}
    fns = {key: getattr(lib, name, None) for key, name in names.items()}
    if any(fn is None for fn in fns.values()):
        return None
    u64, i64, p, f32, i32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
    pi64, pp = ctypes.POINTER(i64), ctypes.POINTER(p)
    fns["lattice"].argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, f32, f32, f32, p, pp, ctypes.c_char_p, u64]
    fns["trellis"].argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, f32, p, pp, ctypes.c_char_p, u64]
    fns["gemm"].argtypes = [p, p, u64, i32, f32, f32, p, i64, i64, p, p, ctypes.c_char_p, u64]
    fns["free"].argtypes = [p]
    fns["free"].restype = None
    fns["decode_lattice"].argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, i64, f32, f32, f32, p, p, i32, p,
                                      ctypes.c_char_p, u64]
    fns["decode_trellis"].argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, i64, f32, p, p, p, ctypes.c_char_p,
                                      u64]
    for key in ("lattice", "trellis", "gemm", "decode_lattice", "decode_trellis"):
        fns[key].restype = ctypes.c_int
    return fns


def random_fused_seed(codec: str, elements: int, rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """(payload, scales as uint16 bits, attributes) of a valid random float32 weight of `elements`
    values: lattice 8-bit steps < 255, trellis k = 4 bytes (every stream is valid)."""
    groups = -(-elements // FUSED_GROUP)
    scales = rng.uniform(0.5, 2.0, groups).astype(np.float16).view(np.uint16)
    if codec == "lattice":
        attrs = dict(lattice_attributes(8), group=FUSED_GROUP)
        payload = bitpack.pack(rng.integers(0, 255, -(-elements // 2)).astype(np.uint64), 8)
    else:
        attrs = {"bits": 4, "window": 12, "group": FUSED_GROUP, "scale_unit": LATTICE_UNIT}
        payload = rng.integers(0, 256, groups * FUSED_GROUP * 4 // 8, dtype=np.uint8)
    return payload, scales, attrs


def create_fused_weight(fns, codec: str, payload: np.ndarray, scales: np.ndarray, attrs: dict, shape) -> ctypes.c_void_p:
    """A fused weight of `shape` on the GPU (hyperonnx_cuda_fused_<codec>, on the default stream);
    RuntimeError with the library's message when it fails."""
    handle = ctypes.c_void_p()
    message = ctypes.create_string_buffer(512)
    dims = (ctypes.c_int64 * len(shape))(*shape)
    args = (payload.ctypes.data_as(ctypes.c_void_p), payload.size, scales.ctypes.data_as(ctypes.c_void_p),
            scales.size, dims, len(shape))
    if codec == "lattice":
        rc = fns["lattice"](*args, attrs["bits"], attrs["generator"], attrs["group"], attrs["alpha"], attrs["beta"],
                            attrs["scale_unit"], None, ctypes.byref(handle), message, len(message))
    else:
        rc = fns["trellis"](*args, attrs["bits"], attrs["window"], attrs["group"], attrs["scale_unit"], None,
                            ctypes.byref(handle), message, len(message))
    if rc != 0:
        raise RuntimeError(f"creating the {codec} weight (status {rc}): {message.value.decode()}")
    return handle


def graph_time(torch, fn, calls: int = 20) -> tuple[float, bool]:
    """(seconds per call, whether a CUDA graph was used): `calls` back-to-back calls captured in one
    CUDA graph and replayed (the kernels' time without Python and launch costs), else gpu_time.
    `fn(stream)` launches on the cudaStream_t it is given."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture
            fn(side.cuda_stream)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            stream = torch.cuda.current_stream().cuda_stream
            for _ in range(calls):
                fn(stream)
        return gpu_time(torch, graph.replay) / calls, True
    except RuntimeError:
        torch.cuda.synchronize()
        return gpu_time(torch, lambda: fn(torch.cuda.current_stream().cuda_stream)), False


def fused_bench(torch, fns, shapes, rows_list, device) -> list[dict]:
    """The fused rows (see the module's docstring), printed as they come; the JSON rows."""
    print()
    print("fused operators: us per product, TB/s of weights read, speed-up over cuBLAS fp16 (x)")
    header = f"{'K x N':>12} {'M':>4} {'method':>16} {'us':>9} {'TB/s':>6} {'x':>6} {'graph':>5}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    message = ctypes.create_string_buffer(512)
    out = []
    for k, n in shapes:
        elements = k * n
        weights = {}
        for codec in ("lattice", "trellis"):
            payload, scales, attrs = random_fused_seed(codec, elements, rng)
            handles = {codec: create_fused_weight(fns, codec, payload, scales, attrs, (k, n)),
                       f"{codec}-T": create_fused_weight(fns, codec, payload, scales, attrs, (n, k))}
            decoded = decode_on_gpu(torch, fns, codec, payload, scales, attrs, elements, message)
            weights[codec] = (handles, decoded, payload.nbytes + scales.nbytes)
        w16 = torch.randn(k, n, device="cuda").half()
        for m in rows_list:
            a = torch.randn(m, k, device="cuda")
            a16, y16 = a.half(), torch.empty(m, n, device="cuda", dtype=torch.float16)
            base, graphed = graph_time(torch, lambda s: torch.matmul(a16, w16, out=y16))
            results = [("cublas-fp16", base, graphed, 2 * elements)]
            y = torch.empty(m, n, device="cuda")
            for codec, (handles, decoded, nbytes) in weights.items():
                for label, handle in handles.items():
                    trans = int(label.endswith("-T"))

                    def run(stream, handle=handle, trans=trans):
                        if fns["gemm"](handle, a.data_ptr(), m, trans, 1.0, 1.0, None, 1, 1, y.data_ptr(), stream,
                                       message, len(message)) != 0:
                            raise RuntimeError(message.value.decode())

                    check_fused(torch, run, a, decoded.view(n, k).t() if trans else decoded.view(k, n), y,
                                f"{label} {k}x{n} M={m}")
                    seconds, graphed = graph_time(torch, run)
                    results.append((label, seconds, graphed, nbytes))
            for method, seconds, graphed, nbytes in results:
                row = {"gpu": device, "kind": "fused", "k": k, "n": n, "rows": m, "method": method, "us": seconds * 1e6,
                       "weight_tbs": nbytes / seconds / 1e12, "speedup": base / seconds, "graph": graphed}
                out.append(row)
                print(f"{f'{k}x{n}':>12} {m:>4} {method:>16} {row['us']:9.1f} {row['weight_tbs']:6.2f} "
                      f"{row['speedup']:6.2f} {'yes' if graphed else 'no':>5}", flush=True)
        for handles, _, _ in weights.values():
            for handle in handles.values():
                fns["free"](handle)
        del weights, w16
        torch.cuda.empty_cache()
    return out


def decode_on_gpu(torch, fns, codec, payload, scales, attrs, elements, message):
    """The weight as float32 on the GPU by the library's DecodeWeights kernel (flat)."""
    seed = torch.from_numpy(payload).cuda()
    scales_gpu = torch.from_numpy(scales.view(np.int16)).cuda()
    out = torch.empty(elements, device="cuda")
    dims = (ctypes.c_int64 * 1)(elements)
    args = (seed.data_ptr(), seed.numel(), scales_gpu.data_ptr(), scales_gpu.numel(), dims, 1, 1)
    stream = torch.cuda.current_stream().cuda_stream
    if codec == "lattice":
        rc = fns["decode_lattice"](*args, attrs["bits"], attrs["generator"], attrs["group"], attrs["alpha"],
                                   attrs["beta"], attrs["scale_unit"], out.data_ptr(), stream, 0, None, message,
                                   len(message))
    else:
        rc = fns["decode_trellis"](*args, attrs["bits"], attrs["window"], attrs["group"], attrs["scale_unit"],
                                   out.data_ptr(), stream, None, message, len(message))
    if rc != 0:
        raise RuntimeError(f"decoding the {codec} weight: {message.value.decode()}")
    return out


def check_fused(torch, run, a, w, y, label):
    """One fused product against A @ W in float32 (torch, no TF32) within FORMAT.md §8.2's bound
    (K + 4) * 2^-23 * |A| |W|, doubled for the reference's own rounding."""
    y.fill_(float("nan"))
    run(torch.cuda.current_stream().cuda_stream)
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        want = a @ w
        bound = 2 * (a.shape[1] + 4) * 2.0 ** -23 * (a.abs() @ w.abs()) + 1e-30
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    excess = float(((y - want).abs() - bound).max())
    if not (excess <= 0):  # NaN (an element not written) fails too
        raise AssertionError(f"fused {label}: error above FORMAT.md's bound by {excess}")
