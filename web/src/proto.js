// The few protobuf primitives an ONNX model needs, read and written by hand: no dependency, and
// the model's bytes are sliced, never copied, where they pass through unchanged.

const TEXT_DECODER = new TextDecoder();
const TEXT_ENCODER = new TextEncoder();

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_BYTES = 2;
export const WIRE_FIXED32 = 5;

export class ProtoError extends Error {}

// One message's fields, in order: {field, wire, start, end, value} where [start, end) is the whole
// field (tag included) in `bytes`; `value` is a Number (varint, as a signed int64 when it does not
// fit 2^53 exactly it is a BigInt), the float32 / float64 value, or for length-delimited fields
// {start, end} of the payload.
export function* fields(bytes, start = 0, end = bytes.length) {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    let tag;
    [tag, pos] = readVarint(bytes, pos, end);
    const field = Math.floor(Number(tag) / 8);
    const wire = Number(tag) & 7;
    let value;
    if (wire === WIRE_VARINT) {
      [value, pos] = readVarint(bytes, pos, end);
    } else if (wire === WIRE_BYTES) {
      let length;
      [length, pos] = readVarint(bytes, pos, end);
      length = Number(length);
      if (length < 0 || pos + length > end) throw new ProtoError("truncated length-delimited field");
      value = { start: pos, end: pos + length };
      pos += length;
    } else if (wire === WIRE_FIXED32) {
      if (pos + 4 > end) throw new ProtoError("truncated fixed32 field");
      value = new DataView(bytes.buffer, bytes.byteOffset + pos, 4).getFloat32(0, true);
      pos += 4;
    } else if (wire === WIRE_FIXED64) {
      if (pos + 8 > end) throw new ProtoError("truncated fixed64 field");
      value = new DataView(bytes.buffer, bytes.byteOffset + pos, 8).getFloat64(0, true);
      pos += 8;
    } else {
      throw new ProtoError(`unsupported wire type ${wire}`);
    }
    yield { field, wire, start: fieldStart, end: pos, value };
  }
  if (pos !== end) throw new ProtoError("message overruns its length");
}

// A varint as a Number (int64 two's complement: negative values come back negative); a value
// beyond 2^53 comes back as a BigInt.
export function readVarint(bytes, pos, end) {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 7; i++) {  // 49 bits: exact in a double
    if (pos >= end) throw new ProtoError("truncated varint");
    const b = bytes[pos++];
    result += (b & 0x7f) * scale;
    if (b < 0x80) return [result, pos];
    scale *= 128;
  }
  let big = BigInt(result);
  let shift = 49n;
  for (let i = 7; i < 10; i++) {
    if (pos >= end) throw new ProtoError("truncated varint");
    const b = bytes[pos++];
    big |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) {
      big = BigInt.asIntN(64, big);
      const asNumber = Number(big);
      return [Number.isSafeInteger(asNumber) ? asNumber : big, pos];
    }
    shift += 7n;
  }
  throw new ProtoError("varint longer than 10 bytes");
}

export function text(bytes, range) {
  return TEXT_DECODER.decode(bytes.subarray(range.start, range.end));
}

// Packed (or repeated unpacked) int64 values of one field occurrence, appended to `out`.
export function readInts(bytes, f, out) {
  if (f.wire === WIRE_VARINT) {
    out.push(f.value);
  } else if (f.wire === WIRE_BYTES) {
    let pos = f.value.start;
    while (pos < f.value.end) {
      let v;
      [v, pos] = readVarint(bytes, pos, f.value.end);
      out.push(v);
    }
  } else {
    throw new ProtoError("bad wire type for an integer field");
  }
  return out;
}

export function readFloats(bytes, f, out) {
  if (f.wire === WIRE_FIXED32) {
    out.push(f.value);
  } else if (f.wire === WIRE_BYTES) {
    const view = new DataView(bytes.buffer, bytes.byteOffset + f.value.start, f.value.end - f.value.start);
    if (view.byteLength % 4) throw new ProtoError("packed floats of a length not a multiple of 4");
    for (let i = 0; i < view.byteLength; i += 4) out.push(view.getFloat32(i, true));
  } else {
    throw new ProtoError("bad wire type for a float field");
  }
  return out;
}

// --- writing ---------------------------------------------------------------------------------
// A message under construction is a list of parts: Uint8Arrays, or {size, fill(target, offset)}
// for payloads written straight into the final buffer (decoded weights), or nested Messages.

export class Message {
  constructor() {
    this.parts = [];
    this.size = 0;
  }

  raw(bytes) {  // bytes already encoded (a field copied from the input, tag included)
    this.parts.push(bytes);
    this.size += bytes.length;
    return this;
  }

  varintField(field, value) {
    return this.raw(concatSmall([encodeVarint(field * 8 + WIRE_VARINT), encodeVarint(value)]));
  }

  bytesField(field, payload) {  // payload: Uint8Array, Message, or {size, fill}
    const header = concatSmall([encodeVarint(field * 8 + WIRE_BYTES), encodeVarint(payload.size ?? payload.length)]);
    this.parts.push(header, payload);
    this.size += header.length + (payload.size ?? payload.length);
    return this;
  }

  stringField(field, value) {
    return this.bytesField(field, TEXT_ENCODER.encode(value));
  }

  packedInts(field, values) {
    return this.bytesField(field, concatSmall(values.map(encodeVarint)));
  }

  // Writes the message into target at offset; returns the offset after it.
  fill(target, offset) {
    for (const part of this.parts) {
      if (part instanceof Uint8Array) {
        target.set(part, offset);
        offset += part.length;
      } else {
        const end = part.fill(target, offset);
        offset = end ?? offset + part.size;
      }
    }
    return offset;
  }

  toBytes() {
    const out = new Uint8Array(this.size);
    const end = this.fill(out, 0);
    if (end !== this.size) throw new Error(`internal: wrote ${end} of ${this.size} bytes`);
    return out;
  }
}

export function encodeVarint(value) {
  if (typeof value === "bigint" || value < 0 || value > Number.MAX_SAFE_INTEGER) {
    let big = BigInt.asUintN(64, BigInt(value));
    const out = [];
    do {
      let b = Number(big & 0x7fn);
      big >>= 7n;
      if (big) b |= 0x80;
      out.push(b);
    } while (big);
    return Uint8Array.from(out);
  }
  const out = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value) b |= 0x80;
    out.push(b);
  } while (value);
  return Uint8Array.from(out);
}

function concatSmall(arrays) {
  let size = 0;
  for (const a of arrays) size += a.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.length;
  }
  return out;
}

export function encodeText(value) {
  return TEXT_ENCODER.encode(value);
}
