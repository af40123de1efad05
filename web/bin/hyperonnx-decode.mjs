#!/usr/bin/env node
// hyperonnx-decode IN.onnx OUT.onnx [--external NAME] [--to int8|int4]: a plain ONNX model from a
// compressed one (with --external, the decoded weights go to NAME beside OUT, as ONNX external
// data; --to: the standard-ops form, blocked DequantizeLinear weights, as hyperonnx decompress --to).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { decodeModel } from "../src/model.js";

const args = process.argv.slice(2);
const at = args.indexOf("--external");
const external = at >= 0 ? args.splice(at, 2)[1] : undefined;
const toAt = args.indexOf("--to");
const to = toAt >= 0 ? args.splice(toAt, 2)[1] : undefined;
if (args.length !== 2) {
  console.error("usage: hyperonnx-decode IN.onnx OUT.onnx [--external NAME] [--to int8|int4]");
  process.exit(2);
}
const [source, target] = args;
try {
  // the input's external data files, read when a seed points there (by location, beside the input)
  const files = new Proxy({}, { get: (cache, location) => (cache[location] ??= readFileSync(join(dirname(source), String(location)))) });
  const { model, externalData, decoded } = decodeModel(readFileSync(source), { externalWeights: external, to,
                                                                               externalData: files });
  writeFileSync(target, model);
  for (const { path, data } of externalData) writeFileSync(join(dirname(target), path), data);
  console.log(`decoded ${decoded} tensors; wrote ${target}`);
} catch (error) {
  console.error(`hyperonnx-decode: ${error.message}`);
  process.exit(1);
}
