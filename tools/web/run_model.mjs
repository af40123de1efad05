// One model in onnxruntime-web (WASM backend, one thread) under Node: session creation time, run
// time, peak RSS, and every output against the Python reference. Called by tools/test_web.py,
// once per model in a process of its own; prints one JSON line.
//   node run_model.mjs MANIFEST.json   (model path, inputs and expected outputs as raw files)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(process.env.ORT_WEB_PREFIX + "/");
const ort = require("onnxruntime-web");
ort.env.wasm.numThreads = 1;

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

const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
const model = readFileSync(manifest.model);
const baseline = process.memoryUsage().rss / 2 ** 20;
let start = performance.now();
const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
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
