// The three codecs of docs/FORMAT.md (winding §3, lattice §7, trellis §9), decoded bit for bit as
// the Python reference does, and the validation rules of §5 / §7.4 / §9.4.
//
// Float32 arithmetic: JavaScript computes in binary64; one binary64 +, -, *, / of two binary32
// values rounded once to binary32 (Math.fround, or a store into a Float32Array) gives exactly the
// binary32 operation's result (53 >= 2*24 + 2), so every FORMAT.md operation below is one
// double operation followed by one rounding to float32, in the order the spec writes.

const fround = Math.fround;

export class FormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "FormatError";
  }
}

export const OP_DOMAIN = "ai.hyperonnx";
export const KNOWN_VERSIONS = [1, 2, 3, 4];
export const CODEC_VERSION = { winding: 1, lattice: 2, trellis: 4 };
export const DTYPE_FLOAT = 1;
export const DTYPE_FLOAT16 = 10;
export const DTYPE_BFLOAT16 = 16;
export const DTYPE_BYTES = { [DTYPE_FLOAT]: 4, [DTYPE_FLOAT16]: 2, [DTYPE_BFLOAT16]: 2 };
const MAX_ELEMENTS = 2 ** 40;
const LIMIT = 2 ** 100;
const TRELLIS_MULTIPLIER = 0x9e3779b1;
const TRELLIS_MAP = [1.0084383, -0.9740608, 1.4579432, -0.4645949].map(fround);

// ONNX AttributeProto types
export const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8, GRAPHS: 10 };
const COMMON = { codec: ATTR.STRING, shape: ATTR.INTS, dtype: ATTR.INT };
export const ATTRIBUTE_TYPES = {
  winding: { ...COMMON, bits: ATTR.INT, points: ATTR.INT, rings: ATTR.INT, center: ATTR.FLOATS, side: ATTR.FLOAT,
             ring_scales: ATTR.FLOATS },
  lattice: { ...COMMON, bits: ATTR.INT, generator: ATTR.INT, group: ATTR.INT, alpha: ATTR.FLOAT, beta: ATTR.FLOAT,
             scale_unit: ATTR.FLOAT },
  trellis: { ...COMMON, bits: ATTR.INT, window: ATTR.INT, group: ATTR.INT, scale_unit: ATTR.FLOAT },
};
export const SCALED_CODECS = ["lattice", "trellis"];

// --- float formats ---------------------------------------------------------------------------

export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 31;
  const mant = h & 1023;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

// float32 bits -> float16 bits, round to nearest even, overflow to Inf, subnormals kept (numpy's astype)
export function floatBitsToHalf(bits) {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

// float32 bits -> bfloat16 bits, round to nearest even (ml_dtypes' astype)
export function floatBitsToBfloat(bits) {
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

// --- validation (FORMAT.md §5, §7.4, §9.4) ----------------------------------------------------

export function checkModelVersion(version, codecs = []) {
  if (!KNOWN_VERSIONS.includes(version)) {
    throw new FormatError(`rule 1: the model imports ${OP_DOMAIN} version ${version}; this decoder knows versions ` +
                          KNOWN_VERSIONS.join(", "));
  }
  for (const codec of codecs) {
    if ((CODEC_VERSION[codec] ?? 1) > version) {
      throw new FormatError(`rule 8: codec '${codec}' needs ${OP_DOMAIN} version ${CODEC_VERSION[codec]}; the model ` +
                            `imports version ${version}`);
    }
  }
}

function intIn(attrs, name, low, high) {
  const v = attrs[name];
  if (typeof v !== "number" || !Number.isInteger(v) || v < low || v > high) {
    throw new FormatError(`rule 2: attribute ${name}=${v} is outside [${low}, ${high}]`);
  }
  return v;
}

function finite(attrs, name) {
  const v = attrs[name];
  if (typeof v !== "number" || !Number.isFinite(v)) throw new FormatError(`rule 2: attribute ${name}=${v} must be a finite float`);
  return v;
}

export function elementCount(shape) {
  let count = 1;
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      throw new FormatError(`rule 2: shape [${shape}] has a negative or non-integer dimension`);
    }
    count *= d;
    if (count > MAX_ELEMENTS) throw new FormatError(`rule 3: shape [${shape}] has more than 2**40 elements`);
  }
  return count;
}

function checkPayload(seed, count, bits, indices) {
  const expected = Math.ceil(((indices ?? Math.ceil(count / 2)) * bits) / 8);
  if (seed.payload.length !== expected) {
    throw new FormatError(`rule 4: seed holds ${seed.payload.length} bytes; shape [${seed.shape}] at ${bits} bits per ` +
                          `pair needs exactly ${expected}`);
  }
}

function checkScales(seed, count, group) {
  const expected = Math.ceil(count / group);
  if (!seed.scales) throw new FormatError("rule 6: scales must be a 1-D float16 tensor");
  if (seed.scales.length !== expected) {
    throw new FormatError(`rule 6: scales holds ${seed.scales.length} values; shape [${seed.shape}] in groups of ` +
                          `${group} needs exactly ${expected}`);
  }
  for (let i = 0; i < seed.scales.length; i++) {
    if ((seed.scales[i] & 0x7c00) === 0x7c00) throw new FormatError("rule 6: scales must all be finite");
  }
}

// seed: {codec, shape: number[], dtype, attrs: {...}, payload: Uint8Array, scales: Uint16Array | null}
export function validate(seed) {
  if (!(seed.codec in ATTRIBUTE_TYPES)) {
    throw new FormatError(`rule 2: unknown codec '${seed.codec}' (this decoder knows winding, lattice, trellis)`);
  }
  if (!(seed.dtype in DTYPE_BYTES)) {
    throw new FormatError(`rule 2: dtype ${seed.dtype} is not float32 (1), float16 (10) or bfloat16 (16)`);
  }
  const count = elementCount(seed.shape);
  const a = seed.attrs;
  if (seed.codec === "lattice") {
    const bits = intIn(a, "bits", 2, 16);
    const generator = intIn(a, "generator", 1, 2 ** bits - 2);
    if (generator % 2 === 0) throw new FormatError(`rule 2: attribute generator=${generator} must be odd`);
    const group = intIn(a, "group", 2, 65536);
    if (group % 2) throw new FormatError(`rule 2: attribute group=${group} must be even`);
    for (const name of ["alpha", "beta"]) {
      if (Math.abs(finite(a, name)) > LIMIT) throw new FormatError(`rule 2: attribute ${name}=${a[name]} must be within ±2**100`);
    }
    const unit = finite(a, "scale_unit");
    if (!(unit > 0 && unit <= LIMIT)) throw new FormatError(`rule 2: attribute scale_unit=${unit} must be > 0 and <= 2**100`);
    checkPayload(seed, count, bits);
    checkScales(seed, count, group);
  } else if (seed.codec === "trellis") {
    const bits = intIn(a, "bits", 1, 8);
    const window = intIn(a, "window", bits, 16);
    const group = intIn(a, "group", 8, 65536);
    if (group % 8) throw new FormatError(`rule 2: attribute group=${group} must be a multiple of 8`);
    if (bits * group < window) {
      throw new FormatError(`rule 2: a group's stream of bits*group = ${bits * group} bits is shorter than window=${window}`);
    }
    const unit = finite(a, "scale_unit");
    if (!(unit > 0 && unit <= LIMIT)) throw new FormatError(`rule 2: attribute scale_unit=${unit} must be > 0 and <= 2**100`);
    checkPayload(seed, count, bits, Math.ceil(count / group) * group);
    checkScales(seed, count, group);
  } else {
    const bits = intIn(a, "bits", 1, 24);
    intIn(a, "points", 1, 2 ** 20);
    const rings = intIn(a, "rings", 0, 64);
    if (!Array.isArray(a.center) || a.center.length !== 2 || !a.center.every(Number.isFinite)) {
      throw new FormatError("rule 2: attribute center must hold two finite floats");
    }
    if (!(Number.isFinite(a.side) && a.side > 0)) throw new FormatError(`rule 2: attribute side=${a.side} must be finite and > 0`);
    if (!Array.isArray(a.ring_scales) || a.ring_scales.length !== rings ||
        !a.ring_scales.every((s) => Number.isFinite(s) && s > 0)) {
      throw new FormatError(`rule 2: attribute ring_scales must hold rings=${rings} finite values > 0`);
    }
    if (seed.scales) throw new FormatError("a winding node has one input (seed); it got scales");
    checkPayload(seed, count, bits);
  }
  return count;
}

// --- decoding --------------------------------------------------------------------------------
// decodeChunks(seed) yields consecutive float32 chunks of the flattened output: {values, count}
// (values may be longer than count and is reused between chunks).

const CHUNK_PAIRS = 1 << 15;  // a multiple of 8: every chunk starts on a byte boundary of the seed

// Indices [first, first + count) of b bits each, first a multiple of 8, into out (Uint32Array).
function unpack(payload, bits, first, count, out, scratch) {
  const startByte = (first / 8) * bits;
  const bytes = Math.ceil((count * bits) / 8);
  const avail = Math.min(bytes, payload.length - startByte);
  scratch.fill(0, 0, bytes + 4);
  scratch.set(payload.subarray(startByte, startByte + avail), 0);
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  let pos = 0;
  for (let i = 0; i < count; i++, pos += bits) {
    const o = pos >>> 3;
    const word = (scratch[o] | (scratch[o + 1] << 8) | (scratch[o + 2] << 16) | (scratch[o + 3] << 24)) >>> (pos & 7);
    out[i] = word & mask;
  }
}

function* lattice(seed, count) {
  const { bits, generator, group, alpha, beta, scale_unit: unit } = seed.attrs;
  const n = 2 ** bits - 1;
  const c = (generator - 1) / 2;
  const r = fround(1 / n);
  const table = new Float32Array(n);
  for (let m = 0; m < n; m++) {
    const u = fround(fround(2 * m - (n - 1)) * r);
    let t = fround(u * u);
    t = fround(t * beta);
    t = fround(t + alpha);
    table[m] = u * t;
  }
  const rows = new Float32Array(n);
  for (let j = 0; j < n; j++) rows[j] = table[(j * generator + c) % n];
  const scales = new Float32Array(seed.scales.length);
  for (let q = 0; q < scales.length; q++) scales[q] = halfToFloat(seed.scales[q]) * unit;
  const pairs = Math.ceil(count / 2);
  const steps = new Uint32Array(CHUNK_PAIRS);
  const scratch = new Uint8Array((CHUNK_PAIRS * bits) / 8 + 8);
  const values = new Float32Array(2 * CHUNK_PAIRS);
  const halfGroup = group / 2;
  for (let first = 0; first < pairs; first += CHUNK_PAIRS) {
    const chunk = Math.min(CHUNK_PAIRS, pairs - first);
    unpack(seed.payload, bits, first, chunk, steps, scratch);
    for (let i = 0; i < chunk; i++) {
      const j = steps[i];
      if (j >= n) throw new FormatError(`rule 7: seed index ${j} is beyond the trajectory's ${n} points`);
      const s = scales[Math.floor((first + i) / halfGroup)];
      values[2 * i] = table[j] * s;
      values[2 * i + 1] = rows[j] * s;
    }
    yield { values, count: Math.min(2 * chunk, count - 2 * first) };
  }
}

function* winding(seed, count) {
  const { bits, points, rings, center, side, ring_scales: ringScales } = seed.attrs;
  let mm = Math.ceil(Math.sqrt(points));  // m = ceil(sqrt(n)): the least m with m*m >= n, exactly
  while (mm > 1 && (mm - 1) * (mm - 1) >= points) mm--;
  while (mm * mm < points) mm++;
  const modulus = mm * mm;
  const step = fround(side / modulus);
  const offset = fround(-0.5 * side);
  const scales = [1, ...ringScales].map(fround);
  const size = (points + 1) * (rings + 1);
  const cx = fround(center[0]);
  const cy = fround(center[1]);
  const pairValue = (x) => {
    const j = x % (points + 1);
    const k = Math.floor(x / (points + 1));
    let qx = 0;
    let qy = 0;
    if (j !== points) {
      const ux = j % modulus;
      const uy = (j * mm) % modulus;
      qx = fround(fround(ux * step) + offset);
      qy = fround(fround(uy * step) + offset);
    }
    const s = scales[k];
    return [fround(cx + fround(qx * s)), fround(cy + fround(qy * s))];
  };
  const pairs = Math.ceil(count / 2);
  let table = null;
  if (pairs > 4 * size) {
    table = new Float32Array(2 * size);
    for (let x = 0; x < size; x++) {
      const [a, b] = pairValue(x);
      table[2 * x] = a;
      table[2 * x + 1] = b;
    }
  }
  const indices = new Uint32Array(CHUNK_PAIRS);
  const scratch = new Uint8Array((CHUNK_PAIRS * bits) / 8 + 8);
  const values = new Float32Array(2 * CHUNK_PAIRS);
  for (let first = 0; first < pairs; first += CHUNK_PAIRS) {
    const chunk = Math.min(CHUNK_PAIRS, pairs - first);
    unpack(seed.payload, bits, first, chunk, indices, scratch);
    for (let i = 0; i < chunk; i++) {
      const x = indices[i];
      if (x >= size) throw new FormatError(`rule 5: seed index ${x} is beyond the codebook's ${size} entries`);
      if (table) {
        values[2 * i] = table[2 * x];
        values[2 * i + 1] = table[2 * x + 1];
      } else {
        const [a, b] = pairValue(x);
        values[2 * i] = a;
        values[2 * i + 1] = b;
      }
    }
    yield { values, count: Math.min(2 * chunk, count - 2 * first) };
  }
}

const trellisTables = new Map();

// h(s) for every state s < 2^L (FORMAT.md §9.3, operation by operation)
export function trellisValues(window) {
  let table = trellisTables.get(window);
  if (table) return table;
  const size = 2 ** window;
  const [a, b, c, d] = TRELLIS_MAP;
  const unit = 2 ** -window;
  table = new Float32Array(size);
  for (let s = 0; s < size; s++) {
    const r = (Math.imul(s, TRELLIS_MULTIPLIER) >>> 0) & (size - 1);
    const u = fround((2 * r + 1 - size) * unit);
    const t = fround(u * u);
    let num = fround(t * b);
    num = fround(num + a);
    num = fround(u * num);
    let den = fround(t * d);
    den = fround(den + c);
    den = fround(den * t);
    den = fround(1 - den);
    table[s] = num / den;
  }
  trellisTables.set(window, table);
  return table;
}

function* trellis(seed, count) {
  const { bits: k, window, group, scale_unit: unit } = seed.attrs;
  const h = trellisValues(window);
  const groups = seed.scales.length;
  const streamBytes = (group * k) / 8;
  const perChunk = Math.max(1, Math.floor(65536 / group));
  const values = new Float32Array(perChunk * group);
  const stream = new Uint8Array(streamBytes + 4);
  const mask = 2 ** window - 1;
  for (let firstGroup = 0; firstGroup < groups; firstGroup += perChunk) {
    const chunkGroups = Math.min(perChunk, groups - firstGroup);
    for (let g = 0; g < chunkGroups; g++) {
      const q = firstGroup + g;
      const base = q * streamBytes;
      stream.set(seed.payload.subarray(base, base + streamBytes), 0);
      for (let i = 0; i < 4; i++) stream[streamBytes + i] = stream[i % streamBytes];  // circular
      const s = fround(halfToFloat(seed.scales[q]) * unit);
      const out = g * group;
      for (let t = 0, pos = 0; t < group; t++, pos += k) {
        const o = pos >>> 3;
        const w = ((stream[o] | (stream[o + 1] << 8) | (stream[o + 2] << 16)) >>> (pos & 7)) & mask;
        values[out + t] = h[w] * s;
      }
    }
    yield { values, count: Math.min(chunkGroups * group, count - firstGroup * group) };
  }
}

export function decodeChunks(seed) {
  const count = validate(seed);
  if (seed.codec === "lattice") return lattice(seed, count);
  if (seed.codec === "trellis") return trellis(seed, count);
  return winding(seed, count);
}

export function outputBytes(seed) {
  return elementCount(seed.shape) * DTYPE_BYTES[seed.dtype];
}

// Writes the decoded tensor (its dtype's little-endian bytes) into target (Uint8Array) at offset.
export function decodeInto(seed, target, offset) {
  let pos = offset;
  for (const { values, count } of decodeChunks(seed)) {
    if (seed.dtype === DTYPE_FLOAT) {
      target.set(new Uint8Array(values.buffer, values.byteOffset, count * 4), pos);
      pos += count * 4;
    } else {
      const bits = new Uint32Array(values.buffer, values.byteOffset, count);
      const convert = seed.dtype === DTYPE_FLOAT16 ? floatBitsToHalf : floatBitsToBfloat;
      for (let i = 0; i < count; i++, pos += 2) {
        const v = convert(bits[i]);
        target[pos] = v & 0xff;
        target[pos + 1] = v >>> 8;
      }
    }
  }
  return pos;
}

// The decoded tensor as a typed array: Float32Array (float32) or Uint16Array of float16 / bfloat16 bits.
export function decodeSeed(seed) {
  const out = new Uint8Array(outputBytes(seed));
  decodeInto(seed, out, 0);
  return seed.dtype === DTYPE_FLOAT ? new Float32Array(out.buffer) : new Uint16Array(out.buffer);
}
