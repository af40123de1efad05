// A compressed model (docs/FORMAT.md) to a plain ONNX model: every ai.hyperonnx node decoded,
// as hyperonnx/graph/decompress.py does. Fields that do not change are copied as byte slices of
// the input, so the rewrite costs the decoded weights and little else.

import {
  ATTR, ATTRIBUTE_TYPES, DTYPE_BYTES, FormatError, OP_DOMAIN, SCALED_CODECS, checkModelVersion, decodeFloat32,
  decodeInto, elementCount,
} from "./codecs.js";
import { BLOCK_SIZE, QUANTIZED_OPSET, checkUpgradable, family, layout, quantizeWeight } from "./standard.js";
import { Message, fields, readFloats, readInts, text } from "./proto.js";

const OP_TYPE = "DecodeWeights";
const FUSED_OPS = { DecodeMatMul: ["MatMul", 1], DecodeGemm: ["Gemm", 1], DecodeGather: ["Gather", 0],
                    DecodeConv: ["Conv", 1] };
const FUSED_PREFIX = "op_";
const ACCURACY_LEVEL = "accuracy_level";
const UINT8 = 2;
const FLOAT16 = 10;

// field numbers of onnx.proto
const MODEL = { opset_import: 8, graph: 7, functions: 25 };
const GRAPH = { node: 1, initializer: 5, sparse_initializer: 15, input: 11, output: 12, value_info: 13 };
const NODE = { input: 1, output: 2, name: 3, op_type: 4, attribute: 5, domain: 7 };
const ATTRIBUTE = { name: 1, f: 2, i: 3, s: 4, t: 5, g: 6, floats: 7, ints: 8, strings: 9, graphs: 11, type: 20 };
const TENSOR = { dims: 1, data_type: 2, int32_data: 5, name: 8, raw_data: 9, external_data: 13, data_location: 14 };

// --- reading ---------------------------------------------------------------------------------

function parseAttribute(bytes, f) {
  const a = { field: f, name: "", type: 0, ints: [], floats: [], graphs: [] };
  for (const x of fields(bytes, f.value.start, f.value.end)) {
    if (x.field === ATTRIBUTE.name) a.name = text(bytes, x.value);
    else if (x.field === ATTRIBUTE.type) a.type = x.value;
    else if (x.field === ATTRIBUTE.f) a.f = x.value;
    else if (x.field === ATTRIBUTE.i) a.i = x.value;
    else if (x.field === ATTRIBUTE.s) a.s = text(bytes, x.value);
    else if (x.field === ATTRIBUTE.floats) readFloats(bytes, x, a.floats);
    else if (x.field === ATTRIBUTE.ints) readInts(bytes, x, a.ints);
    else if (x.field === ATTRIBUTE.g) a.graphs.push({ field: x, graph: null });
    else if (x.field === ATTRIBUTE.graphs) a.graphs.push({ field: x, graph: null });
  }
  return a;
}

function parseNode(bytes, f) {
  const node = { field: f, input: [], output: [], name: "", opType: "", domain: "", attributes: [] };
  for (const x of fields(bytes, f.value.start, f.value.end)) {
    if (x.field === NODE.input) node.input.push(text(bytes, x.value));
    else if (x.field === NODE.output) node.output.push(text(bytes, x.value));
    else if (x.field === NODE.name) node.name = text(bytes, x.value);
    else if (x.field === NODE.op_type) node.opType = text(bytes, x.value);
    else if (x.field === NODE.domain) node.domain = text(bytes, x.value);
    else if (x.field === NODE.attribute) node.attributes.push(parseAttribute(bytes, x));
  }
  return node;
}

function parseTensor(bytes, f) {
  const t = { field: f, name: "", dims: [], dataType: 0, raw: null, int32: [], location: 0, external: {} };
  for (const x of fields(bytes, f.value.start, f.value.end)) {
    if (x.field === TENSOR.name) t.name = text(bytes, x.value);
    else if (x.field === TENSOR.dims) readInts(bytes, x, t.dims);
    else if (x.field === TENSOR.data_type) t.dataType = x.value;
    else if (x.field === TENSOR.raw_data) t.raw = x.value;
    else if (x.field === TENSOR.int32_data) readInts(bytes, x, t.int32);
    else if (x.field === TENSOR.data_location) t.location = x.value;
    else if (x.field === TENSOR.external_data) {
      let key = "";
      let value = "";
      for (const e of fields(bytes, x.value.start, x.value.end)) {
        if (e.field === 1) key = text(bytes, e.value);
        else if (e.field === 2) value = text(bytes, e.value);
      }
      t.external[key] = value;
    }
  }
  return t;
}

function valueInfoName(bytes, f) {
  for (const x of fields(bytes, f.value.start, f.value.end)) if (x.field === 1) return text(bytes, x.value);
  return "";
}

function parseGraph(bytes, start, end, parents) {
  const graph = { fields: [], nodes: [], initializers: new Map(), outputs: [], names: new Set(), parents };
  for (const f of fields(bytes, start, end)) {
    graph.fields.push(f);
    if (f.field === GRAPH.node) {
      const node = parseNode(bytes, f);
      f.node = node;
      graph.nodes.push(node);
      node.input.forEach((n) => graph.names.add(n));
      node.output.forEach((n) => graph.names.add(n));
    } else if (f.field === GRAPH.initializer) {
      const t = parseTensor(bytes, f);
      f.tensor = t;
      graph.initializers.set(t.name, t);
      graph.names.add(t.name);
    } else if (f.field === GRAPH.output) {
      const name = valueInfoName(bytes, f);
      graph.outputs.push(name);
      graph.names.add(name);
    } else if (f.field === GRAPH.input || f.field === GRAPH.value_info) {
      graph.names.add(valueInfoName(bytes, f));
    } else if (f.field === GRAPH.sparse_initializer) {
      for (const x of fields(bytes, f.value.start, f.value.end)) {  // SparseTensorProto.values = 1
        if (x.field === 1) graph.names.add(parseTensor(bytes, x).name);
      }
    }
  }
  for (const node of graph.nodes) {
    for (const a of node.attributes) {
      for (const sub of a.graphs) sub.graph = parseGraph(bytes, sub.field.value.start, sub.field.value.end, [graph, ...parents]);
    }
  }
  return graph;
}

function* graphsOf(graph) {  // every graph, breadth first, as hyperonnx.graph.walk.scopes
  const queue = [graph];
  while (queue.length) {
    const g = queue.shift();
    yield g;
    for (const node of g.nodes) for (const a of node.attributes) for (const sub of a.graphs) queue.push(sub.graph);
  }
}

// --- the seed of a DecodeWeights node ----------------------------------------------------------

function findInitializer(graph, name) {
  for (const g of [graph, ...graph.parents]) {
    const t = g.initializers.get(name);
    if (t) return t;
  }
  return null;
}

function tensorBytes(bytes, t, options) {
  if (t.location === 1) {
    const files = options.externalData ?? {};
    const location = t.external.location;
    const file = files[location];
    if (!file) throw new FormatError(`tensor '${t.name}' is stored in external file '${location}', which was not given`);
    const offset = Number(t.external.offset ?? 0);
    const length = t.external.length !== undefined ? Number(t.external.length) : file.length - offset;
    if (offset + length > file.length) throw new FormatError(`tensor '${t.name}' runs past the end of '${location}'`);
    return file.subarray(offset, offset + length);
  }
  if (t.raw) return bytes.subarray(t.raw.start, t.raw.end);
  return null;
}

function seedInputs(bytes, node, graph, options) {
  if (node.output.length !== 1 || !node.input.length || !node.input[0]) {
    throw new FormatError(`DecodeWeights node '${node.name}' needs a seed input and one output`);
  }
  const out = [];
  const roles = [["seed", UINT8, 4], ["scales", FLOAT16, 6]];
  node.input.slice(0, 2).forEach((name, i) => {
    const [role, dataType, rule] = roles[i];
    const t = findInitializer(graph, name);
    if (!t) throw new FormatError(`DecodeWeights '${node.name}': ${role} '${name}' is not an initializer`);
    if (t.dataType !== dataType || t.dims.length !== 1) {
      throw new FormatError(`rule ${rule}: ${role} '${name}' must be a rank-1 ${dataType === UINT8 ? "uint8" : "float16"} tensor`);
    }
    const count = t.dims[0];
    const raw = tensorBytes(bytes, t, options);
    let array;
    if (dataType === UINT8) {
      array = raw ?? Uint8Array.from(t.int32);
    } else if (raw) {
      if (raw.length % 2) throw new FormatError(`rule 6: scales '${name}' cannot be read: odd byte length`);
      array = new Uint16Array(raw.length / 2);
      for (let k = 0; k < array.length; k++) array[k] = raw[2 * k] | (raw[2 * k + 1] << 8);
    } else {
      array = Uint16Array.from(t.int32);
    }
    if (array.length !== count) throw new FormatError(`rule ${rule}: ${role} '${name}' cannot be read: ${array.length} values for dims [${count}]`);
    out.push(array);
  });
  return out;
}

// Seed of a DecodeWeights node (attributes as FORMAT.md lists them), not yet validated
export function seedFromNode(bytes, node, graph, options = {}) {
  const codecAttr = node.attributes.find((a) => a.name === "codec");
  const codec = codecAttr?.s ?? "";
  const types = ATTRIBUTE_TYPES[codec];
  if (!types) throw new FormatError(`rule 2: unknown codec '${codec}' (this decoder knows winding, lattice, trellis)`);
  const attrs = {};
  for (const a of node.attributes) {
    if (!(a.name in types)) throw new FormatError(`rule 2: DecodeWeights has an unknown attribute '${a.name}'`);
    if (a.type !== types[a.name]) throw new FormatError(`rule 2: DecodeWeights attribute '${a.name}' has the wrong type`);
    const t = a.type;
    attrs[a.name] = t === ATTR.FLOAT ? a.f ?? 0 : t === ATTR.INT ? a.i ?? 0 : t === ATTR.STRING ? a.s ?? ""
      : t === ATTR.FLOATS ? a.floats : a.ints;
  }
  const missing = Object.keys(types).filter((name) => !(name in attrs));
  if (missing.length) throw new FormatError(`rule 2: DecodeWeights lacks attribute(s) ${missing.join(", ")}`);
  const scaled = SCALED_CODECS.includes(codec);
  if (scaled && node.input.length !== 2) {
    throw new FormatError(`DecodeWeights '${node.name}' (${codec}) needs two inputs: seed and scales`);
  }
  if (!scaled && node.input.length !== 1) throw new FormatError(`DecodeWeights '${node.name}' (${codec}) takes one input`);
  const [payload, scales] = seedInputs(bytes, node, graph, options);
  const { shape, dtype } = attrs;
  delete attrs.codec;
  delete attrs.shape;
  delete attrs.dtype;
  return { codec, shape, dtype, attrs, payload, scales: scales ?? null };
}

// --- the rewrite -------------------------------------------------------------------------------

function isCodecAttribute(name) {
  return !name.startsWith(FUSED_PREFIX) && name !== ACCURACY_LEVEL;
}

function weightName(node) {
  const seed = node.input.length > 1 && node.input[1] ? node.input[1] : node.name;
  return seed.endsWith(".seed") ? seed.slice(0, -5) : `${seed}.weight`;
}

class NameMaker {
  constructor(taken) {
    this.taken = taken;
  }

  make(base) {
    let name = base;
    for (let i = 2; this.taken.has(name); i++) name = `${base}.${i}`;
    this.taken.add(name);
    return name;
  }
}

// Split each fused node into a DecodeWeights view and the standard op (graph/fuse.py split_fused);
// collect every DecodeWeights (view or real) per graph.
function plan(bytes, root, options) {
  const all = [...graphsOf(root)];
  const depth = (g) => g.parents.length;
  const ordered = all.map((g, i) => [g, i]).sort((a, b) => depth(b[0]) - depth(a[0]) || a[1] - b[1]).map(([g]) => g);
  const taken = new Set();
  for (const g of all) for (const n of g.names) if (n) taken.add(n);
  const names = new NameMaker(taken);
  for (const graph of ordered) {
    graph.decodes = [];  // {name, node (DecodeWeights view), seedNames}
    const byKey = new Map();
    for (const node of graph.nodes) {
      if (node.domain === OP_DOMAIN && node.opType === OP_TYPE) {
        node.action = "drop";
        graph.decodes.push({ name: node.output[0], node, seedNames: node.input });
      } else if (node.domain === OP_DOMAIN && node.opType in FUSED_OPS) {
        const inputs = [...node.input, "", "", ""].slice(0, Math.max(3, node.input.length));
        const codecAttrs = node.attributes.filter((a) => isCodecAttribute(a.name));
        const key = JSON.stringify([node.input.slice(1, 3),
          codecAttrs.map((a) => Array.from(bytes.subarray(a.field.start, a.field.end)).join(","))]);
        let weight = byKey.get(key);
        if (!weight) {
          weight = names.make(weightName(node));
          byKey.set(key, weight);
          const seedNames = [inputs[1], ...(inputs[2] ? [inputs[2]] : [])];
          const view = { name: `DecodeWeights/${weight}`, input: seedNames, output: [weight], attributes: codecAttrs };
          graph.decodes.push({ name: weight, node: view, seedNames });
        }
        node.action = "split";
        node.weight = weight;
      }
    }
  }
  return { all, names };
}

function emitAttribute(bytes, a, rewrite) {  // an attribute whose subgraphs are rewritten
  const m = new Message();
  let sub = 0;
  for (const x of fields(bytes, a.field.value.start, a.field.value.end)) {
    if (x.field === ATTRIBUTE.g || x.field === ATTRIBUTE.graphs) m.bytesField(x.field, rewrite(a.graphs[sub++].graph));
    else m.raw(bytes.subarray(x.start, x.end));
  }
  return m;
}

function emitNode(bytes, node, rewrite) {
  if (node.action === "split") {  // the standard op reading the decoded weight
    const [standard, position] = FUSED_OPS[node.opType];
    const others = [node.input[0] ?? "", ...node.input.slice(3)];
    others.splice(position, 0, node.weight);
    while (others.length && others[others.length - 1] === "") others.pop();
    const m = new Message();
    for (const name of others) m.stringField(NODE.input, name);
    for (const name of node.output) m.stringField(NODE.output, name);
    if (node.name) m.stringField(NODE.name, node.name);
    m.stringField(NODE.op_type, standard);
    for (const a of node.attributes) {
      if (!a.name.startsWith(FUSED_PREFIX) || (node.transB0 && a.name === `${FUSED_PREFIX}transB`)) continue;
      const attr = new Message();
      attr.stringField(ATTRIBUTE.name, a.name.slice(FUSED_PREFIX.length));
      for (const x of fields(bytes, a.field.value.start, a.field.value.end)) {
        if (x.field !== ATTRIBUTE.name) attr.raw(bytes.subarray(x.start, x.end));
      }
      m.bytesField(NODE.attribute, attr);
    }
    if (node.transB0) m.bytesField(NODE.attribute, intAttribute("transB", 0));
    return m;
  }
  if (node.transB0) {  // a Gemm whose weight is stored transposed
    const m = new Message();
    let index = 0;
    for (const x of fields(bytes, node.field.value.start, node.field.value.end)) {
      if (x.field === NODE.attribute && node.attributes[index++].name === "transB") continue;
      m.raw(bytes.subarray(x.start, x.end));
    }
    return m.bytesField(NODE.attribute, intAttribute("transB", 0));
  }
  if (!node.attributes.some((a) => a.graphs.length)) return null;  // unchanged: copied as is
  const m = new Message();
  let index = 0;
  for (const x of fields(bytes, node.field.value.start, node.field.value.end)) {
    if (x.field === NODE.attribute) {
      const a = node.attributes[index++];
      if (a.graphs.length) m.bytesField(NODE.attribute, emitAttribute(bytes, a, rewrite));
      else m.raw(bytes.subarray(x.start, x.end));
    } else {
      m.raw(bytes.subarray(x.start, x.end));
    }
  }
  return m;
}

function intAttribute(name, value) {
  return new Message().stringField(ATTRIBUTE.name, name).varintField(ATTRIBUTE.i, value).varintField(ATTRIBUTE.type, ATTR.INT);
}

function simpleNode(opType, inputs, outputs, name, attrs = {}) {
  const m = new Message();
  for (const n of inputs) m.stringField(NODE.input, n);
  for (const n of outputs) m.stringField(NODE.output, n);
  m.stringField(NODE.name, name);
  m.stringField(NODE.op_type, opType);
  for (const key of Object.keys(attrs).sort()) m.bytesField(NODE.attribute, intAttribute(key, attrs[key]));
  return m;
}

// The nodes after the rewrite as the standard ops they are: [{node, opType, domain, input, attrs}]
function standardView(node) {
  const attrs = {};
  if (node.action === "split") {
    const [standard, position] = FUSED_OPS[node.opType];
    const input = [node.input[0] ?? "", ...node.input.slice(3)];
    input.splice(position, 0, node.weight);
    for (const a of node.attributes) if (a.name.startsWith(FUSED_PREFIX) && a.i !== undefined) attrs[a.name.slice(3)] = a.i;
    return { node, opType: standard, domain: "", input, attrs };
  }
  for (const a of node.attributes) if (a.i !== undefined) attrs[a.name] = a.i;
  return { node, opType: node.opType, domain: node.domain, input: node.input, attrs };
}

function namesInSubgraphs(graph) {
  const names = new Set();
  const stack = [];
  for (const node of graph.nodes) for (const a of node.attributes) for (const sub of a.graphs) stack.push(sub.graph);
  while (stack.length) {
    const g = stack.pop();
    for (const node of g.nodes) {
      node.input.forEach((n) => names.add(n));
      for (const a of node.attributes) for (const sub of a.graphs) stack.push(sub.graph);
    }
    g.outputs.forEach((n) => names.add(n));
  }
  return names;
}

// Which decoded weights of `graph` become DequantizeLinear initializers (graph/decompress.py
// quantize_weights): d.quant = {fam, qName, sName, dqName} and the readers' patches.
function planQuantized(graph, names, bits) {
  const views = graph.nodes.filter((n) => n.action !== "drop").map(standardView);
  const readers = new Map();
  for (const v of views) {
    v.input.forEach((name, position) => {
      if (!readers.has(name)) readers.set(name, []);
      readers.get(name).push({ view: v, position });
    });
  }
  const blocked = new Set([...graph.outputs, ...namesInSubgraphs(graph)]);
  graph.front = [];
  const sorted = [...graph.decodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of sorted) {
    const users = readers.get(d.name);
    if (blocked.has(d.name) || !users) continue;
    const rank = d.seed.shape.length;
    const fams = new Set(users.map((u) => family(u.view.opType, u.view.domain, u.position, rank, u.view.attrs)));
    if (fams.size !== 1 || fams.has(null)) continue;
    const fam = [...fams][0];
    const width = fam === "gather" ? 8 : bits;
    const lay = layout(fam, d.seed.shape, BLOCK_SIZE);
    const block = lay.block;
    d.quant = { fam, width, qName: names.make(`${d.name}.q${width}`), sName: names.make(`${d.name}.scale`) };
    if (fam === "nk") users.forEach((u) => { u.view.node.transB0 = true; });
    if (fam !== "gather") {
      const attrs = block === null ? { axis: 0 } : { axis: lay.axis, block_size: block };
      graph.front.push(simpleNode("DequantizeLinear", [d.quant.qName, d.quant.sName], [d.name],
                                  names.make(`DequantizeLinear/${d.name}`), attrs));
    } else {
      for (const u of users) {
        const reader = u.view.node;
        const out = reader.output[0];
        const rows = names.make(`${out}.q${width}`);
        const rowScales = names.make(`${out}.scale`);
        reader.replacement = [
          simpleNode("Gather", [d.quant.qName, u.view.input[1]], [rows], names.make(`${reader.name}.q`)),
          simpleNode("Gather", [d.quant.sName, u.view.input[1]], [rowScales], names.make(`${reader.name}.scale`)),
          simpleNode("DequantizeLinear", [rows, rowScales], [out], names.make(`DequantizeLinear/${out}`),
                     { axis: -1, block_size: block })];
      }
    }
  }
}

// A TensorProto: name, dims, data_type and either raw data written by `fill` or an external location.
function tensorMessage(name, dims, dataType, data) {
  const m = new Message();
  for (const d of dims) m.varintField(TENSOR.dims, d);
  m.varintField(TENSOR.data_type, dataType);
  m.stringField(TENSOR.name, name);
  if (data.external) {
    for (const [key, value] of [["location", data.external.location], ["offset", String(data.external.offset)],
                                ["length", String(data.external.length)]]) {
      const entry = new Message();
      entry.stringField(1, key);
      entry.stringField(2, value);
      m.bytesField(TENSOR.external_data, entry);
    }
    m.varintField(TENSOR.data_location, 1);
  } else {
    m.bytesField(TENSOR.raw_data, data);
  }
  return m;
}

/**
 * Decode a compressed model.
 * @param {Uint8Array} bytes the .onnx file
 * @param {object} [options]
 * @param {string} [options.externalWeights] write decoded weights to one external-data buffer of this
 *   name (returned as `externalData`) instead of into the model
 * @param {Object<string, Uint8Array>} [options.externalData] the input model's external data files, by location
 * @param {"float" | "int8" | "int4"} [options.to] int8 / int4: the standard-ops form (MatMul / Gemm / Conv
 *   weights and Gather tables as blocked DequantizeLinear initializers, opset 21), as `hyperonnx decompress --to`
 * @returns {{model: Uint8Array, externalData: {path: string, data: Uint8Array}[], decoded: number}}
 */
export function decodeModel(bytes, options = {}) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes.buffer ?? bytes, bytes.byteOffset ?? 0, bytes.byteLength);
  const top = [...fields(bytes)];
  let version = 4;  // no ai.hyperonnx import: the newest, as hyperonnx.graph.decompress
  let graph = null;
  for (const f of top) {
    if (f.field === MODEL.opset_import) {
      let domain = "";
      let v = 1;
      for (const x of fields(bytes, f.value.start, f.value.end)) {
        if (x.field === 1) domain = text(bytes, x.value);
        else if (x.field === 2) v = x.value;
      }
      f.domain = domain;
      if (domain === OP_DOMAIN) version = v;
    } else if (f.field === MODEL.graph) {
      graph = parseGraph(bytes, f.value.start, f.value.end, []);
      f.graph = graph;
    } else if (f.field === MODEL.functions) {
      for (const x of fields(bytes, f.value.start, f.value.end)) if (x.field === 10) f.domain = text(bytes, x.value);  // FunctionProto.domain
    }
  }
  if (!graph) throw new FormatError("the model has no graph");
  checkModelVersion(version);
  const { all: graphs, names } = plan(bytes, graph, options);
  const to = options.to ?? "float";
  if (!["float", "int8", "int4"].includes(to)) throw new Error(`to must be float, int8 or int4, not ${to}`);

  // decode plan: every seed validated before anything is written (sizes, layout)
  const external = options.externalWeights ?? null;
  let externalSize = 0;
  const seedNames = new Set();
  let decoded = 0;
  for (const g of graphs) {
    for (const d of g.decodes) {
      d.seed = seedFromNode(bytes, d.node, g, options);
      checkModelVersion(version, [d.seed.codec]);
      d.size = elementCount(d.seed.shape) * (DTYPE_BYTES[d.seed.dtype] ?? 0);
      if (external) {
        externalSize = Math.ceil(externalSize / 64) * 64;  // aligned tensors
        d.offset = externalSize;
        externalSize += d.size;
      }
      d.seedNames.forEach((n) => seedNames.add(n));
      decoded++;
    }
  }
  const weights = external ? new Uint8Array(externalSize) : null;

  // names read after the rewrite: seeds nobody reads any more are dropped
  const used = new Set();
  let domainLeft = false;
  for (const g of graphs) {
    for (const node of g.nodes) {
      if (node.action === "drop") continue;
      if (node.action === "split") {
        used.add(node.input[0]);
        node.input.slice(3).forEach((n) => used.add(n));
        used.add(node.weight);
      } else {
        node.input.forEach((n) => used.add(n));
        if (node.domain === OP_DOMAIN) domainLeft = true;
      }
    }
    g.outputs.forEach((n) => used.add(n));
  }

  let defaultOpset = 0;
  if (to !== "float") {
    if (top.some((f) => f.field === MODEL.functions && f.domain !== OP_DOMAIN)) {
      throw new Error("a model with model-local functions of its own: convert it with `hyperonnx decompress --to` in Python");
    }
    for (const f of top) {
      if (f.field === MODEL.opset_import && (f.domain === "" || f.domain === "ai.onnx")) {
        for (const x of fields(bytes, f.value.start, f.value.end)) if (x.field === 2) defaultOpset = x.value;
      }
    }
    const ops = new Set();
    for (const g of graphs) {
      for (const n of g.nodes) if (n.action !== "drop" && (n.domain === "" || n.domain === "ai.onnx")) ops.add(n.opType);
    }
    checkUpgradable(defaultOpset, ops);
    for (const g of graphs) planQuantized(g, names, to === "int8" ? 8 : 4);
  }

  const rewrite = (g) => {
    const m = new Message();
    for (const node of g.front ?? []) m.bytesField(GRAPH.node, node);
    for (const f of g.fields) {
      if (f.field === GRAPH.node) {
        if (f.node.action === "drop") continue;
        if (f.node.replacement) {
          for (const node of f.node.replacement) m.bytesField(GRAPH.node, node);
          continue;
        }
        const node = emitNode(bytes, f.node, rewrite);
        if (node) m.bytesField(GRAPH.node, node);
        else m.raw(bytes.subarray(f.start, f.end));
      } else if (f.field === GRAPH.initializer && seedNames.has(f.tensor.name) && !used.has(f.tensor.name)) {
        continue;
      } else {
        m.raw(bytes.subarray(f.start, f.end));
      }
    }
    for (const d of g.decodes) {
      if (d.quant) {
        const q = quantizeWeight(decodeFloat32(d.seed), d.seed.shape, d.seed.dtype, d.quant.fam, d.quant.width, BLOCK_SIZE);
        m.bytesField(GRAPH.initializer, tensorMessage(d.quant.qName, q.shape, q.qType, q.qBytes));
        m.bytesField(GRAPH.initializer, tensorMessage(d.quant.sName, q.scaleShape, d.seed.dtype, q.scaleBytes));
        continue;
      }
      let data;
      if (external) {
        decodeInto(d.seed, weights, d.offset);
        data = { external: { location: external, offset: d.offset, length: d.size } };
      } else {
        data = { size: d.size, fill: (target, offset) => decodeInto(d.seed, target, offset) };
      }
      m.bytesField(GRAPH.initializer, tensorMessage(d.name, d.seed.shape, d.seed.dtype, data));
    }
    return m;
  };

  const out = new Message();
  for (const f of top) {
    if (f.field === MODEL.graph) {
      out.bytesField(MODEL.graph, rewrite(f.graph));
    } else if (to !== "float" && f.field === 1) {  // ir_version: 10 at least (opset 21, int4)
      out.varintField(1, Math.max(f.value, 10));
    } else if (to !== "float" && f.field === MODEL.opset_import && (f.domain === "" || f.domain === "ai.onnx") &&
               defaultOpset < QUANTIZED_OPSET) {
      const opset = new Message();
      for (const x of fields(bytes, f.value.start, f.value.end)) if (x.field !== 2) opset.raw(bytes.subarray(x.start, x.end));
      out.bytesField(MODEL.opset_import, opset.varintField(2, QUANTIZED_OPSET));
    } else if (!domainLeft && (f.field === MODEL.opset_import || f.field === MODEL.functions) && f.domain === OP_DOMAIN) {
      continue;
    } else {
      out.raw(bytes.subarray(f.start, f.end));
    }
  }
  const model = out.toBytes();
  return { model, externalData: external ? [{ path: external, data: weights }] : [], decoded };
}
