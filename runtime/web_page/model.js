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

// The time of one call, from its inputs in to its outputs out (as bench.web_latency times Python's runner.step).
async function timed(call) {
  const started = performance.now();
  const result = await call();
  return { ...result, ms: performance.now() - started };
}

class StreamModel {
  constructor(compiled, manifest) {
    this.compiled = compiled;
    this.manifest = manifest;
    this.reset();
  }

  // Zero buffers start a stream: each buffer's quantized zero is its zero point. Buffers are int8, the
  // type the model computes in (uint8 in a model converted before they were).
  reset() {
    for (const tensor of Object.values(this.buffers ?? {})) tensor.delete();
    this.buffers = Object.fromEntries(
      this.manifest.buffers.map((b) => {
        const values = new (b.dtype === "int8" ? Int8Array : Uint8Array)(b.shape.reduce((x, y) => x * y)).fill(b.zero_point);
        return [b.name, new Tensor(values, b.shape)];
      }),
    );
  }

  // (S, S, 3) uint8 -> uint8 logits (K,) of this frame, and the model's time. The new buffers stay in
  // LiteRT.js's memory and go back in as they are: copying 2 x B tensors through JavaScript each frame
  // cost more than the model itself at 64 px.
  step(frame) {
    return timed(async () => {
      const size = this.manifest.image_size;
      const input = new Tensor(frame, [1, size, size, 3]);
      const outputs = await this.compiled.run({ frame: input, ...this.buffers });
      const logits = outputs.logits.toTypedArray().slice();
      for (const tensor of [input, outputs.logits, ...Object.values(this.buffers)]) tensor.delete();
      this.buffers = Object.fromEntries(this.manifest.buffers.map((b) => [b.name, outputs[`new_${b.name}`]]));
      return { logits };
    });
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
  step(frame) {
    const { num_segments: t, image_size: s, input: name } = this.manifest;
    this.window.push(frame);
    if (this.window.length > t) this.window.shift();
    if (this.window.length < t) return Promise.resolve({ logits: null, ms: 0 });
    return timed(async () => {
      const clip = new Uint8Array(t * s * s * 3);
      this.window.forEach((f, i) => clip.set(f, i * f.length));
      const input = new Tensor(clip, [1, t, s, s, 3]);
      const outputs = await this.compiled.run({ [name]: input });
      const [output] = Object.values(outputs);
      const logits = output.toTypedArray().slice();
      input.delete();
      output.delete();
      return { logits };
    });
  }
}
