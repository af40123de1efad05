// The standard-ops forms (decode(bytes, {to: "int8" | "int4"})), as hyperonnx/graph/decompress.py
// writes them: each decoded weight read only as a MatMul / Gemm / Conv weight or a Gather table
// becomes blocked int8 / int4 values and float scales dequantized by DequantizeLinear (opset 21).
// int8 values and scales are bit for bit Python's; int4 picks each block's scale by squared error
// summed in float64 (numpy sums float32), so a near tie may pick another of the nine candidates.

import { DTYPE_FLOAT, DTYPE_FLOAT16, floatBitsToBfloat, floatBitsToHalf, halfToFloat } from "./codecs.js";

const fround = Math.fround;
export const BLOCK_SIZE = 32;
export const TABLE_BLOCK_SIZE = 128;
export const QUANTIZED_OPSET = 21;
const INT8 = 3;
const INT4 = 22;
// operators whose meaning changed at the given opset (hyperonnx/graph/decompress.py _MEANING_CHANGED)
const MEANING_CHANGED = { RoiAlign: 16, GridSample: 20, DFT: 20, GroupNormalization: 21 };
for (const op of ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                  "ReduceProd", "ReduceSumSquare", "Split"]) MEANING_CHANGED[op] = 18;

export function checkUpgradable(opset, ops) {
  if (opset >= QUANTIZED_OPSET) return;
  const changed = [...ops].filter((op) => (MEANING_CHANGED[op] ?? 0) > opset);
  if (opset < 13 || changed.length) {
    throw new Error(`the model's opset ${opset} (${changed.join(", ") || "below 13"}) needs onnx.version_converter ` +
                    "to reach opset 21: convert it with `hyperonnx decompress --to int8` in Python");
  }
}

function rint(x) {  // round half to even, as numpy's rint
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// How a reader takes the weight: "kn" (MatMul / Gemm B), "nk" (Gemm transB=1), "conv", "gather", or null
export function family(opType, domain, position, rank, attrs) {
  if (domain !== "" && domain !== "ai.onnx") return null;
  if (opType === "MatMul" && position === 1 && rank === 2) return "kn";
  if (opType === "Gemm" && position === 1 && rank === 2 && (attrs.transA ?? 0) === 0) return attrs.transB ? "nk" : "kn";
  if (opType === "Conv" && position === 1 && rank >= 3) return "conv";
  if (opType === "Gather" && position === 0 && rank >= 2 && (attrs.axis ?? 0) === 0) return "gather";
  return null;
}

/**
 * Symmetric blockwise quantization of w (Float32Array of `shape`) along `axis` in blocks of
 * `block`: {q: Int8Array, scale: Float32Array, scaleShape} (hyperonnx.graph.decompress.quantize_blocks).
 */
export function quantizeBlocks(w, shape, axis, block, bits) {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const length = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const blocks = Math.ceil(length / block);
  const q = new Int8Array(w.length);
  const scale = new Float32Array(outer * blocks * inner);
  const [low, high] = bits === 8 ? [-127, 127] : [-8, 7];
  const divisors = bits === 8 ? [127] : Array.from({ length: 9 }, (_, i) => 7 + i / 8);
  const cand = new Int8Array(block);
  for (let o = 0; o < outer; o++) {
    for (let b = 0; b < blocks; b++) {
      const first = b * block;
      const count = Math.min(block, length - first);
      for (let i = 0; i < inner; i++) {
        const at = (k) => (o * length + first + k) * inner + i;
        let top = 0;
        for (let k = 0; k < count; k++) top = Math.max(top, Math.abs(w[at(k)]));
        let bestErr = Infinity;
        let best = 1;
        for (const c of divisors) {
          const s = top > 0 ? fround(top / fround(c)) : 1;
          let err = 0;
          for (let k = 0; k < count; k++) {
            const v = w[at(k)];
            const qv = Math.min(high, Math.max(low, rint(fround(v / s))));
            cand[k] = qv;
            const e = fround(qv * s) - v;
            err += e * e;
          }
          if (err < bestErr || divisors.length === 1) {
            bestErr = err;
            best = s;
            for (let k = 0; k < count; k++) q[at(k)] = cand[k];
          }
        }
        scale[(o * blocks + b) * inner + i] = best;
      }
    }
  }
  const scaleShape = shape.slice();
  scaleShape[axis] = blocks;
  return { q, scale, scaleShape };
}

/** The layout of one quantized weight: {axis, block | null, transpose} for a reader family. */
export function layout(fam, shape, block) {
  if (fam === "kn" || fam === "nk") return { axis: 0, block, transpose: fam === "nk" };
  if (fam === "conv") return shape[1] >= 16 ? { axis: 1, block, transpose: false } : { axis: 0, block: null, transpose: false };
  return { axis: shape.length - 1, block: Math.min(Math.max(block, TABLE_BLOCK_SIZE), shape[shape.length - 1]),
           transpose: false };
}

/**
 * Quantize the float32 values `w` (of the weight's `shape` and ONNX `dtype`) for reader family
 * `fam`: {shape, q bytes (raw_data of the int8 / int4 tensor), qType, scale bytes, scaleShape, axis, block}.
 */
export function quantizeWeight(w, shape, dtype, fam, bits, block) {
  if (dtype !== DTYPE_FLOAT) {  // the decoded tensor is of its dtype: quantize those values, as Python
    const rounded = new Float32Array(w.length);
    const bitsView = new Uint32Array(w.buffer, w.byteOffset, w.length);
    for (let i = 0; i < w.length; i++) {
      rounded[i] = dtype === DTYPE_FLOAT16 ? halfToFloat(floatBitsToHalf(bitsView[i]))
        : new Float32Array(new Uint32Array([floatBitsToBfloat(bitsView[i]) << 16]).buffer)[0];
    }
    w = rounded;
  }
  const lay = layout(fam, shape, block);
  let values = w;
  let qShape = shape;
  if (lay.transpose) {  // Gemm transB=1: W [N, K] -> W^T [K, N]
    const [n, k] = shape;
    values = new Float32Array(w.length);
    for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) values[c * n + r] = w[r * k + c];
    qShape = [k, n];
  }
  const width = fam === "gather" ? 8 : bits;  // Gather takes no int4 data
  let result;
  if (lay.block === null) {  // per output channel
    const rest = values.length / qShape[0];
    result = quantizeBlocks(values, [qShape[0], rest], 1, rest, width);
    result.scaleShape = [qShape[0]];
  } else {
    result = quantizeBlocks(values, qShape, lay.axis, lay.block, width);
  }
  let qBytes;
  if (width === 8) {
    qBytes = new Uint8Array(result.q.buffer);
  } else {
    qBytes = new Uint8Array(Math.ceil(result.q.length / 2));
    for (let i = 0; i < result.q.length; i++) qBytes[i >> 1] |= (result.q[i] & 15) << (i & 1 ? 4 : 0);
  }
  let scaleBytes = new Uint8Array(result.scale.buffer);
  if (dtype !== DTYPE_FLOAT) {
    const sb = new Uint32Array(result.scale.buffer);
    scaleBytes = new Uint8Array(2 * sb.length);
    for (let i = 0; i < sb.length; i++) {
      const h = dtype === DTYPE_FLOAT16 ? floatBitsToHalf(sb[i]) : floatBitsToBfloat(sb[i]);
      scaleBytes[2 * i] = h & 255;
      scaleBytes[2 * i + 1] = h >> 8;
    }
  }
  return { shape: qShape, qBytes, qType: width === 8 ? INT8 : INT4, width, scaleBytes, scaleShape: result.scaleShape,
           axis: lay.axis, block: lay.block, transpose: lay.transpose };
}
