// One model in onnxruntime-web (WASM backend, one thread) or onnxruntime-node under Node: session
// creation time, run time, peak RSS, and every output against the Python reference. Called by
// tools/test_web.py, once per model in a process of its own; prints one JSON line.
//   node run_model.mjs MANIFEST.json   (model path, inputs and expected outputs as raw files)
// manifest.decode: "external" (hyperonnx-web's decodeForSession: weights as external data),
// "inline" (hyperonnx-web's decode: a plain .onnx) or absent (the file as it is); the decoding
// counts in the session time. manifest.runtime: "web" (default) or "node".
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(process.env.ORT_WEB_PREFIX + "/");
const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
const runtime = manifest.runtime ?? "web";
const ort = require(runtime === "node" ? "onnxruntime-node" : "onnxruntime-web");
const providers = runtime === "node" ? ["cpu"] : ["wasm"];
const options = { executionProviders: providers };
if (runtime === "web") ort.env.wasm.numThreads = 1;
else Object.assign(options, { intraOpNumThreads: 1, interOpNumThreads: 1 });

const ARRAYS = { float32: Float32Array, int64: BigInt64Array };
function read(entry) {
  const bytes = readFileSync(entry.file);
  const Type = ARRAYS[entry.dtype];
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}
function peakRssMB() {
  const line = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith("VmHWM:"));
  return Number(line.split(/\s+/)[1]) / 1024;
}

const web = manifest.decode ? await import(new URL("../../web/src/index.js", import.meta.url)) : null;
let model = readFileSync(manifest.model);
const baseline = process.memoryUsage().rss / 2 ** 20;
let start = performance.now();
let session;
if (manifest.decode === "external") {
  const decoded = web.decodeForSession(model);
  model = null;  // the compressed bytes are not needed any more
  session = await ort.InferenceSession.create(decoded.model, { ...options, externalData: decoded.externalData });
} else if (manifest.decode === "inline") {
  const plain = web.decode(model);
  model = null;
  session = await ort.InferenceSession.create(plain, options);
} else {
  session = await ort.InferenceSession.create(model, options);
}
const sessionSeconds = (performance.now() - start) / 1000;
const feeds = {};
for (const [name, entry] of Object.entries(manifest.inputs)) feeds[name] = new ort.Tensor(entry.dtype, read(entry), entry.shape);
start = performance.now();
const outputs = await session.run(feeds);
const runMs = performance.now() - start;
const diffs = {};
for (const [name, entry] of Object.entries(manifest.outputs)) {
  const got = outputs[name].data;
  const want = read(entry);
  let worst = 0;
  if (got.length !== want.length) worst = Infinity;
  for (let i = 0; i < want.length && worst !== Infinity; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  diffs[name] = worst;
}
console.log(JSON.stringify({ session_s: sessionSeconds, run_ms: runMs, baseline_rss_mb: baseline,
                             peak_rss_mb: peakRssMB(), max_abs_diff: diffs }));
