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
// Each codec writes the `count` decoded float32 values of a seed into `out` (a Float32Array of at
// least `count` elements). The bulk of the indices is read straight from the seed, 32 bits at a
// time; the last few, whose 32-bit window would run past the seed, from a zero-padded copy.

function paddedTail(payload, fromByte) {
  const tail = new Uint8Array(payload.length - fromByte + 8);
  tail.set(payload.subarray(fromByte));
  return tail;
}

function latticeTables(attrs) {
  const { bits, generator, alpha, beta } = attrs;
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
  return [table, rows];
}

function groupScales(scales16, unit) {
  const scales = new Float32Array(scales16.length);
  for (let q = 0; q < scales.length; q++) scales[q] = halfToFloat(scales16[q]) * unit;
  return scales;
}

function lattice(seed, count, out) {
  const { bits, group } = seed.attrs;
  const n = 2 ** bits - 1;
  const [table, rows] = latticeTables(seed.attrs);
  const scales = groupScales(seed.scales, seed.attrs.scale_unit);
  const pairs = Math.ceil(count / 2);
  const half = group / 2;
  const mask = (1 << bits) - 1;
  let p = seed.payload;
  // pairs [0, fast) read 4 bytes in bounds and store both values
  let fast = Math.floor(count / 2);
  while (fast > 0 && Math.floor(((fast - 1) * bits) / 8) + 3 >= p.length) fast--;
  let byte = 0;
  let shift = 0;
  let i = 0;
  for (let q = 0; i < fast; q++) {
    const s = scales[q];
    const end = Math.min(i + half, fast);
    for (; i < end; i++) {
      const j = ((p[byte] | (p[byte + 1] << 8) | (p[byte + 2] << 16) | (p[byte + 3] << 24)) >>> shift) & mask;
      if (j >= n) throw new FormatError(`rule 7: seed index ${j} is beyond the trajectory's ${n} points`);
      out[2 * i] = table[j] * s;
      out[2 * i + 1] = rows[j] * s;
      shift += bits;
      byte += shift >> 3;
      shift &= 7;
    }
  }
  if (i < pairs) {
    p = paddedTail(p, byte);
    byte = 0;
    for (; i < pairs; i++) {
      const j = ((p[byte] | (p[byte + 1] << 8) | (p[byte + 2] << 16) | (p[byte + 3] << 24)) >>> shift) & mask;
      if (j >= n) throw new FormatError(`rule 7: seed index ${j} is beyond the trajectory's ${n} points`);
      const s = scales[Math.floor(i / half)];
      out[2 * i] = table[j] * s;
      if (2 * i + 1 < count) out[2 * i + 1] = rows[j] * s;
      shift += bits;
      byte += shift >> 3;
      shift &= 7;
    }
  }
}

function windingPair(attrs) {  // (index) -> [x, y], FORMAT.md §3 operation by operation
  const { points, center, side, ring_scales: ringScales } = attrs;
  let m = Math.ceil(Math.sqrt(points));  // m = ceil(sqrt(n)): the least m with m*m >= n, exactly
  while (m > 1 && (m - 1) * (m - 1) >= points) m--;
  while (m * m < points) m++;
  const modulus = m * m;
  const step = fround(side / modulus);
  const offset = fround(-0.5 * side);
  const scales = [1, ...ringScales].map(fround);
  const cx = fround(center[0]);
  const cy = fround(center[1]);
  return (x) => {
    const j = x % (points + 1);
    const k = Math.floor(x / (points + 1));
    let qx = 0;
    let qy = 0;
    if (j !== points) {
      qx = fround(fround((j % modulus) * step) + offset);
      qy = fround(fround(((j * m) % modulus) * step) + offset);
    }
    const s = scales[k];
    return [fround(cx + fround(qx * s)), fround(cy + fround(qy * s))];
  };
}

function winding(seed, count, out) {
  const { bits, points, rings } = seed.attrs;
  const size = (points + 1) * (rings + 1);
  const pairValue = windingPair(seed.attrs);
  const pairs = Math.ceil(count / 2);
  const table = new Float32Array(2 * Math.min(size, 1 << 22));
  const filled = new Uint8Array(table.length / 2);  // entries computed so far (lazily)
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  let p = seed.payload;
  let byte = 0;
  let shift = 0;
  let padded = false;
  for (let i = 0; i < pairs; i++) {
    if (!padded && byte + 3 >= p.length) {  // the last few: a padded copy
      p = paddedTail(p, byte);
      byte = 0;
      padded = true;
    }
    const x = ((p[byte] | (p[byte + 1] << 8) | (p[byte + 2] << 16) | (p[byte + 3] << 24)) >>> shift) & mask;
    if (x >= size) throw new FormatError(`rule 5: seed index ${x} is beyond the codebook's ${size} entries`);
    let a;
    let b;
    if (x < filled.length) {
      if (!filled[x]) {
        [table[2 * x], table[2 * x + 1]] = pairValue(x);
        filled[x] = 1;
      }
      a = table[2 * x];
      b = table[2 * x + 1];
    } else {
      [a, b] = pairValue(x);
    }
    out[2 * i] = a;
    if (2 * i + 1 < count) out[2 * i + 1] = b;
    shift += bits;
    byte += shift >> 3;
    shift &= 7;
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

function trellis(seed, count, out) {
  const { bits: k, window, group, scale_unit: unit } = seed.attrs;
  const h = trellisValues(window);
  const groups = seed.scales.length;
  const streamBytes = (group * k) / 8;
  const stream = new Uint8Array(streamBytes + 4);
  const last = new Float32Array(group);
  const mask = 2 ** window - 1;
  for (let q = 0; q < groups; q++) {
    const base = q * streamBytes;
    stream.set(seed.payload.subarray(base, base + streamBytes), 0);
    for (let i = 0; i < 4; i++) stream[streamBytes + i] = stream[i % streamBytes];  // the stream is circular
    const s = fround(halfToFloat(seed.scales[q]) * unit);
    const whole = (q + 1) * group <= count;
    const target = whole ? out : last;
    const first = whole ? q * group : 0;
    for (let t = 0, pos = 0; t < group; t++, pos += k) {
      const o = pos >>> 3;
      const w = ((stream[o] | (stream[o + 1] << 8) | (stream[o + 2] << 16)) >>> (pos & 7)) & mask;
      target[first + t] = h[w] * s;
    }
    if (!whole) out.set(last.subarray(0, count - q * group), q * group);
  }
}

// The decoded float32 values of a seed, validated first (FORMAT.md's rules), into out (or a new array).
export function decodeFloat32(seed, out) {
  const count = validate(seed);
  out ??= new Float32Array(count);
  if (seed.codec === "lattice") lattice(seed, count, out);
  else if (seed.codec === "trellis") trellis(seed, count, out);
  else winding(seed, count, out);
  return out;
}

export function outputBytes(seed) {
  return elementCount(seed.shape) * DTYPE_BYTES[seed.dtype];
}

// Writes the decoded tensor (its dtype's little-endian bytes) into target (Uint8Array) at offset;
// returns the offset after it. float32 at an aligned offset is decoded in place.
export function decodeInto(seed, target, offset) {
  const count = validate(seed);
  const at = target.byteOffset + offset;
  if (seed.dtype === DTYPE_FLOAT && at % 4 === 0) {
    decodeFloat32(seed, new Float32Array(target.buffer, at, count));
    return offset + 4 * count;
  }
  const values = decodeFloat32(seed);
  if (seed.dtype === DTYPE_FLOAT) {
    target.set(new Uint8Array(values.buffer, 0, 4 * count), offset);
    return offset + 4 * count;
  }
  const bits = new Uint32Array(values.buffer, 0, count);
  const convert = seed.dtype === DTYPE_FLOAT16 ? floatBitsToHalf : floatBitsToBfloat;
  let pos = offset;
  for (let i = 0; i < count; i++, pos += 2) {
    const v = convert(bits[i]);
    target[pos] = v & 0xff;
    target[pos + 1] = v >>> 8;
  }
  return pos;
}

// The decoded tensor as a typed array: Float32Array (float32) or Uint16Array of float16 / bfloat16 bits.
export function decodeSeed(seed) {
  const out = new Uint8Array(outputBytes(seed));
  decodeInto(seed, out, 0);
  return seed.dtype === DTYPE_FLOAT ? new Float32Array(out.buffer) : new Uint16Array(out.buffer);
}
