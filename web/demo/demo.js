// The demo page: decode a compressed model with hyperonnx-web, run it in onnxruntime-web on an
// example input, show the outputs and the timings. window.hyperonnxDemo holds the last result
// (tools/test_web.py reads it in headless Chromium).
import { decodeForSession, modelInputs } from "../src/index.js";

const params = new URLSearchParams(location.search);
const ortUrl = params.get("ort") ?? "../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
const status = document.getElementById("status");
const timings = document.getElementById("timings");
const result = document.getElementById("result");
window.hyperonnxDemo = { status: "idle" };

let ortModule = null;
async function loadOrt() {
  if (!ortModule) {
    ortModule = await import(new URL(ortUrl, location.href).href);
    ortModule.env.wasm.numThreads = 1;  // no cross-origin isolation needed
    ortModule.env.wasm.wasmPaths = new URL(".", new URL(ortUrl, location.href)).href;
  }
  return ortModule;
}

// The example input (tools/test_web.py builds the same one in Python): symbolic dimensions are 1
// (the first) or 16; float values ((i * 37) mod 101) / 101; integer inputs named *mask* all 1,
// *type* all 0, others (i * 7919) mod 1000 + 1000 (token ids).
export function exampleInput(ort, info) {
  const shape = (info.shape ?? [1]).map((d, i) => (typeof d === "number" && d > 0 ? d : i === 0 ? 1 : 16));
  const size = shape.reduce((a, b) => a * b, 1);
  const name = info.name.toLowerCase();
  const integer = (i) => (name.includes("mask") ? 1 : name.includes("type") ? 0 : ((i * 7919) % 1000) + 1000);
  if (info.type === "float32") return new ort.Tensor("float32", Float32Array.from({ length: size }, (_, i) => ((i * 37) % 101) / 101), shape);
  if (info.type === "int64") return new ort.Tensor("int64", BigInt64Array.from({ length: size }, (_, i) => BigInt(integer(i))), shape);
  if (info.type === "int32") return new ort.Tensor("int32", Int32Array.from({ length: size }, (_, i) => integer(i)), shape);
  if (info.type === "bool") return new ort.Tensor("bool", new Uint8Array(size), shape);
  throw new Error(`no example input for ${info.name} of type ${info.type}`);
}

function row(label, value) {
  const tr = document.createElement("tr");
  tr.innerHTML = `<th>${label}</th><td>${value}</td>`;
  timings.append(tr);
}

async function run(file) {
  window.hyperonnxDemo = { status: "running", file: file.name };
  timings.replaceChildren();
  timings.hidden = false;
  result.hidden = true;
  status.textContent = `Decoding ${file.name} ...`;
  status.className = "";
  try {
    const ort = await loadOrt();
    let t = performance.now();
    const bytes = new Uint8Array(await file.arrayBuffer());
    const readMs = performance.now() - t;
    t = performance.now();
    const { model, externalData } = decodeForSession(bytes);
    const decodeMs = performance.now() - t;
    status.textContent = "Creating the session ...";
    t = performance.now();
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], externalData });
    const sessionMs = performance.now() - t;
    const feeds = {};
    for (const info of modelInputs(bytes)) feeds[info.name] = exampleInput(ort, info);
    t = performance.now();
    const outputs = await session.run(feeds);
    const runMs = performance.now() - t;
    const decodedMB = externalData.reduce((n, e) => n + e.data.length, 0) / 1e6;
    row("file", `${file.name}, ${(bytes.length / 1e6).toFixed(2)} MB (${decodedMB.toFixed(2)} MB of weights decoded)`);
    row("read", `${readMs.toFixed(0)} ms`);
    row("decode (hyperonnx-web)", `${decodeMs.toFixed(0)} ms`);
    row("session creation (onnxruntime-web)", `${sessionMs.toFixed(0)} ms`);
    row("run", `${runMs.toFixed(1)} ms`);
    const shown = {};
    const lines = [];
    for (const [name, tensor] of Object.entries(outputs)) {
      shown[name] = { dims: tensor.dims, data: Array.from(tensor.data, Number) };
      const head = Array.from(tensor.data.slice(0, 8), (v) => Number(v).toFixed(5)).join(", ");
      lines.push(`${name} [${tensor.dims.join(", ")}]: ${head}${tensor.data.length > 8 ? ", ..." : ""}`);
    }
    result.textContent = lines.join("\n");
    result.hidden = false;
    status.textContent = "Done.";
    window.hyperonnxDemo = { status: "done", file: file.name, outputs: shown,
                             timings: { readMs, decodeMs, sessionMs, runMs } };
    await session.release();
  } catch (error) {
    status.textContent = `Error: ${error.message}`;
    status.className = "error";
    window.hyperonnxDemo = { status: "error", file: file.name, error: String(error.message ?? error) };
  }
}

const input = document.getElementById("file");
const drop = document.getElementById("drop");
input.addEventListener("change", () => input.files[0] && run(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]);
});
