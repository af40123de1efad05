// The graph inputs of an ONNX model (not its initializers): name, element type, shape.
import { fields, text } from "./proto.js";

const ELEMENT_TYPES = { 1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                        10: "float16", 11: "float64", 12: "uint32", 13: "uint64" };

/** [{name, type ("float32", "int64", ...), shape: (number | string)[] | null}] of the model's graph inputs. */
export function modelInputs(bytes) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  for (const f of fields(bytes)) {
    if (f.field !== 7) continue;  // ModelProto.graph
    const inputs = [];
    const initializers = new Set();
    for (const g of fields(bytes, f.value.start, f.value.end)) {
      if (g.field === 5) {  // initializer: TensorProto.name = 8
        for (const x of fields(bytes, g.value.start, g.value.end)) if (x.field === 8) initializers.add(text(bytes, x.value));
      } else if (g.field === 11) {
        inputs.push(valueInfo(bytes, g.value));
      }
    }
    return inputs.filter((i) => !initializers.has(i.name));
  }
  return [];
}

function valueInfo(bytes, range) {
  const info = { name: "", type: "unknown", shape: null };
  for (const x of fields(bytes, range.start, range.end)) {
    if (x.field === 1) info.name = text(bytes, x.value);
    if (x.field !== 2) continue;
    for (const t of fields(bytes, x.value.start, x.value.end)) {
      if (t.field !== 1) continue;  // TypeProto.tensor_type
      for (const tt of fields(bytes, t.value.start, t.value.end)) {
        if (tt.field === 1) info.type = ELEMENT_TYPES[tt.value] ?? `type ${tt.value}`;
        if (tt.field !== 2) continue;
        info.shape = [];
        for (const d of fields(bytes, tt.value.start, tt.value.end)) {
          let dim = "?";
          for (const v of fields(bytes, d.value.start, d.value.end)) {
            if (v.field === 1) dim = v.value;
            else if (v.field === 2) dim = text(bytes, v.value);
          }
          info.shape.push(dim);
        }
      }
    }
  }
  return info;
}
