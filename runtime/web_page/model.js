// The folder's uint8 model in LiteRT.js: a streaming model one frame at a time with its buffers fed
// back (runtime.stream.StreamingTFLiteRunner), or a clip model on the last T frames (runtime.predict's
// ClipPredictor). What LiteRT.js cannot tell (the tensors' quantization, the labels, T) comes from the
// server's manifest, which Python's LiteRT read from the same file.

import { loadAndCompile, loadLiteRt, supportsFeature, Tensor } from "/litert/core.js";

// LiteRT.js in WebAssembly. Threads need a cross-origin isolated page (the server's COOP/COEP headers)
// and relaxed SIMD (LiteRT.js builds its threaded WebAssembly with it).
export async function startRuntime(wantedThreads) {
  const simd = await supportsFeature("relaxedSimd");
  const threads = wantedThreads > 1 && self.crossOriginIsolated && simd && (await supportsFeature("threads")) ? wantedThreads : 1;
  await loadLiteRt("/litert/wasm/", { threads: threads > 1 });
  return { threads, simd: simd ? "relaxed SIMD" : "no relaxed SIMD", isolated: self.crossOriginIsolated };
}

export async function loadModel(manifest, threads) {
  const compiled = await loadAndCompile(`/model/${encodeURIComponent(manifest.file)}`, {
    accelerator: "wasm",
    cpuOptions: { numThreads: threads },
  });
  const names = compiled.getInputDetails().map((d) => d.name).sort();
  const expected = (manifest.mode === "stream" ? ["frame", ...manifest.buffers.map((b) => b.name)] : [manifest.input]).sort();
  if (names.join() !== expected.join()) {
    throw new Error(`${manifest.file} is not one of ours as LiteRT.js reads it: inputs ${names.join(", ")}, expected ${expected.join(", ")}`);
  }
  return manifest.mode === "stream" ? new StreamModel(compiled, manifest) : new ClipModel(compiled, manifest);
}

// One call of a compiled model on named uint8 inputs -> named uint8 outputs, its tensors freed; and its
// time, inputs in and outputs out included (as bench.web_latency times Python's runner.step).
async function run(compiled, inputs) {
  const started = performance.now();
  const tensors = Object.fromEntries(Object.entries(inputs).map(([name, { data, shape }]) => [name, new Tensor(data, shape)]));
  const outputs = await compiled.run(tensors);
  const arrays = Object.fromEntries(Object.entries(outputs).map(([name, tensor]) => [name, tensor.toTypedArray().slice()]));
  for (const tensor of [...Object.values(tensors), ...Object.values(outputs)]) tensor.delete();
  return { arrays, ms: performance.now() - started };
}

class StreamModel {
  constructor(compiled, manifest) {
    this.compiled = compiled;
    this.manifest = manifest;
    this.reset();
  }

  // Zero buffers start a stream: each buffer's quantized zero is its zero point.
  reset() {
    this.buffers = this.manifest.buffers.map((b) => ({ name: b.name, shape: b.shape, data: new Uint8Array(b.shape.reduce((x, y) => x * y)).fill(b.zero_point) }));
  }

  // (S, S, 3) uint8 -> uint8 logits (K,) of this frame, and the model's time
  async step(frame) {
    const size = this.manifest.image_size;
    const inputs = { frame: { data: frame, shape: [1, size, size, 3] } };
    for (const b of this.buffers) inputs[b.name] = b;
    const { arrays, ms } = await run(this.compiled, inputs);
    for (const b of this.buffers) b.data = arrays[`new_${b.name}`];
    return { logits: arrays.logits, ms };
  }
}

class ClipModel {
  constructor(compiled, manifest) {
    this.compiled = compiled;
    this.manifest = manifest;
    this.reset();
  }

  reset() {
    this.window = [];
  }

  // (S, S, 3) uint8 -> uint8 logits (K,) of the clip of the last T frames, or null until T have come
  async step(frame) {
    const { num_segments: t, image_size: s, input } = this.manifest;
    this.window.push(frame);
    if (this.window.length > t) this.window.shift();
    if (this.window.length < t) return { logits: null, ms: 0 };
    const clip = new Uint8Array(t * s * s * 3);
    this.window.forEach((f, i) => clip.set(f, i * f.length));
    const { arrays, ms } = await run(this.compiled, { [input]: { data: clip, shape: [1, t, s, s, 3] } });
    return { logits: Object.values(arrays)[0], ms };
  }
}
