// hyperonnx-web: decode hyperonnx-compressed ONNX models (docs/FORMAT.md) in the browser or Node,
// bit for bit as the Python reference decoder, into a plain ONNX model any runtime loads.
//
//   import { decode, createSession } from "hyperonnx-web";
//   const plain = decode(bytes);                       // Uint8Array: a plain .onnx, no ai.hyperonnx node
//   const session = await createSession(ort, bytes);   // onnxruntime-web / -node session, weights as external data

import { decodeModel } from "./model.js";

export { FormatError, decodeSeed, validate, trellisValues } from "./codecs.js";
export { decodeModel } from "./model.js";
export { modelInputs } from "./inputs.js";

/**
 * A plain ONNX model (Uint8Array) with every compressed weight decoded into it; `options.to`
 * "int8" / "int4": the standard-ops form (blocked DequantizeLinear weights, opset 21) for runtimes
 * and providers without custom ops (onnxruntime-web's WebGPU / WebNN, NPUs), as `hyperonnx decompress --to`.
 */
export function decode(bytes, options = {}) {
  return decodeModel(bytes, { externalData: options.externalData, to: options.to }).model;
}

/**
 * The model and its decoded weights as one external-data buffer, the form onnxruntime-web loads
 * fastest and in the least memory: `{model, externalData: [{path, data}]}`, for
 * `ort.InferenceSession.create(model, {externalData})`. `options.externalData`: the input model's
 * own external data files ({location: Uint8Array}), passed on.
 */
export function decodeForSession(bytes, options = {}) {
  const { model, externalData } = decodeModel(bytes, { externalData: options.externalData,
                                                        externalWeights: options.path ?? "hyperonnx.weights" });
  // the input's own external files (tensors that were not compressed still point there)
  const given = Object.entries(options.externalData ?? {}).map(([path, data]) => ({ path, data }));
  return { model, externalData: [...given, ...externalData] };
}

/**
 * An onnxruntime InferenceSession (`ort` = the onnxruntime-web or onnxruntime-node module) for a
 * compressed model. onnxruntime-web gets the weights as external data; runtimes without the
 * `externalData` option (onnxruntime-node) the plain model.
 */
export async function createSession(ort, bytes, sessionOptions = {}, options = {}) {
  const web = Boolean(ort.env?.versions?.web);
  if (web && options.external !== false) {
    const { model, externalData } = decodeForSession(bytes, options);
    return ort.InferenceSession.create(model, { ...sessionOptions, externalData });
  }
  return ort.InferenceSession.create(decode(bytes, options), sessionOptions);
}
