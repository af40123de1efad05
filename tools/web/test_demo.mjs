// The demo page (web/demo/) in headless Chromium (playwright-core, Debian's chromium): each model
// picked in the page's file input, decoded by hyperonnx-web and run by onnxruntime-web; its
// outputs against the Python reference. Called by tools/test_web.py; prints one JSON line.
//   node test_demo.mjs MANIFEST.json   ({url, chromium, cases: [{model, outputs: {name: {file, dtype, shape}}}]})
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename } from "node:path";

const require = createRequire(process.env.ORT_WEB_PREFIX + "/");
const { chromium } = require("playwright-core");
const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
const browser = await chromium.launch({ executablePath: manifest.chromium, args: ["--no-sandbox"] });
const version = browser.version();
const results = [];
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(manifest.url);
  for (const c of manifest.cases) {
    await page.setInputFiles("#file", c.model);
    const name = basename(c.model);
    await page.waitForFunction((file) => window.hyperonnxDemo?.file === file &&
                                         ["done", "error"].includes(window.hyperonnxDemo.status), name,
                               { timeout: 300000 });
    const state = await page.evaluate(() => window.hyperonnxDemo);
    const entry = { model: name, status: state.status, error: state.error, timings: state.timings, max_abs_diff: {} };
    if (state.status === "done") {
      for (const [output, want] of Object.entries(c.outputs)) {
        const bytes = readFileSync(want.file);
        const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
        const got = state.outputs[output]?.data ?? [];
        let worst = got.length === expected.length ? 0 : Infinity;
        for (let i = 0; i < expected.length && worst !== Infinity; i++) worst = Math.max(worst, Math.abs(got[i] - expected[i]));
        entry.max_abs_diff[output] = worst;
      }
    } else {
      entry.logs = logs.slice(-20);
    }
    results.push(entry);
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ browser: version, results }));
