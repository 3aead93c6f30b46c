// The page: the camera (or a dropped video) frame by frame through the model, the letters it decided so
// far (the transcript), the top-3 labels, the frames per second and the model's time per frame; and, in
// plain words, whatever stops it. Letters are decided by the model's decision rule (the card's, in the
// manifest; decide.js), as runtime.predict decides them. The camera runs in real time: a frame that comes
// while the model is busy is skipped. A dropped video is decided frame-exact instead: it plays once,
// waiting at each frame until the model is done with it, so its transcript is predict's on the same file.
//
// URL options: ?step=N feeds every N-th frame (default: the rule's frame_step, as runtime.predict);
// ?smooth=N decides on the mean probabilities of the last N kept frames (default: the rule's smooth);
// ?threads=N WebAssembly threads (default 2, when the page is cross-origin isolated);
// ?record=N keeps the first N frames fed to the model (the camera frame, the model's input and its uint8
// logits) in window.tsm.frames and stops there, showing the N-th frame's result (a dropped video starts
// a new record): for tests/test_web.py and bench/web_latency.py to read back.
// Escape or the clear button empties the transcript; a new source (camera or dropped video) starts a new one.

import { letterbox, quantize, dequantize, rgbaToRgb } from "/prepare.js";
import { Transcriber } from "/decide.js";

const options = new URLSearchParams(location.search);
const threads = positive(options.get("threads"), 2);
const recordFrames = positive(options.get("record"), 0);
const $ = (id) => document.getElementById(id);
const video = $("video");
const canvas = document.createElement("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });

// What the tests read: state "loading" | "running" | "error", the error, the recorded frames, the
// transcript (the labels printed so far) with each letter's kept frame and time, and whether a dropped
// video has been decided to its end.
const tsm = (window.tsm = { state: "loading", error: null, frames: [], manifest: null, runtime: null, transcript: [], letters: [], done: false, dropped: 0 });

function positive(text, fallback) {
  const value = Number.parseInt(text ?? "", 10);
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

function fail(message) {
  tsm.state = "error";
  tsm.error = message;
  $("status").className = "";
  $("status").textContent = message;
}

function inform(message) {
  $("status").className = "info";
  $("status").textContent = message;
}

async function main() {
  let manifest;
  try {
    const response = await fetch("/model/manifest.json");
    manifest = await response.json();
  } catch (error) {
    return fail(`The model server does not answer (${error.message}): is python -m runtime.web still running?`);
  }
  if (!manifest.ok) {
    $("model").textContent = "no model";
    return fail(manifest.error);
  }
  tsm.manifest = manifest;
  const { decision } = manifest;
  const rule = { ...decision, frame_step: positive(options.get("step"), decision.frame_step) || 1, smooth: positive(options.get("smooth"), decision.smooth) || 1 };
  let modelApi, runtime, model;
  try {
    // Imported here, not at the top: a LiteRT.js file missing on the server is then a message, not a blank page.
    modelApi = await import("/model.js");
  } catch (error) {
    return fail(`LiteRT.js could not be loaded from the server (${error.message}); in the repository, make install installs it.`);
  }
  try {
    runtime = await modelApi.startRuntime(threads);
  } catch (error) {
    return fail(`LiteRT.js ${manifest.litertjs} could not start in this browser: ${error.message}`);
  }
  try {
    model = await modelApi.loadModel(manifest, runtime.threads);
  } catch (error) {
    return fail(`${manifest.file} could not be loaded: ${error.message}`);
  }
  tsm.runtime = runtime;
  $("model").textContent = `${manifest.file}: ${manifest.mode === "stream" ? "streaming, one frame at a time" : `clip model on the last ${manifest.num_segments} frames`}, ` +
    `${manifest.image_size} px, ${manifest.labels.length} classes, ${rule.frame_step === 1 ? "every frame" : `1 frame in ${rule.frame_step}`}`;
  $("rule").textContent = `mean of ${rule.smooth} frame${rule.smooth > 1 ? "s" : ""}, on top at ${rule.threshold.toFixed(2)} or more for ${rule.confirm} in a row`;
  $("runtime").textContent = `LiteRT.js ${manifest.litertjs}, WebAssembly, ${runtime.threads} thread${runtime.threads > 1 ? "s" : ""}, ${runtime.simd}` +
    `${runtime.isolated ? ", cross-origin isolated" : ", not cross-origin isolated"}`;
  const loop = new FrameLoop(model, manifest, rule);
  setUpDrop(loop);
  $("clear").addEventListener("click", () => loop.clear());
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") loop.clear(); });
  await startCamera(loop);
}

async function startCamera(loop) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return fail("This page cannot use a camera here: browsers allow one only on https or on this machine's own address " +
      "(open http://127.0.0.1:PORT/ on the machine that runs python -m runtime.web). You can drop a video file on the page instead.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    return fail(cameraProblem(error));
  }
  tsm.state = "running";
  loop.play(stream, null);
}

function cameraProblem(error) {
  const instead = " You can drop a video file on the page instead.";
  switch (error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera permission refused: allow the camera for this page (the camera icon in the address bar) and reload." + instead;
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera found on this machine." + instead;
    case "NotReadableError":
    case "AbortError":
      return "The camera could not be started: another program may be using it." + instead;
    default:
      return `The camera could not be opened (${error.name}: ${error.message}).` + instead;
  }
}

function setUpDrop(loop) {
  const view = $("view");
  document.addEventListener("dragover", (event) => { event.preventDefault(); view.classList.add("dragging"); });
  document.addEventListener("dragleave", () => view.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    view.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (!file) return;
    inform(`playing ${file.name}`);
    Object.assign(tsm, { state: "running", error: null, frames: [] }); // ?record=N records each source's first N frames
    loop.play(null, file);
  });
}

class FrameLoop {
  constructor(model, manifest, rule) {
    this.model = model;
    this.manifest = manifest;
    this.rule = rule;
    // Bukva's labels are letters, printed one after another; longer labels (the built-in ones) need spaces.
    this.separator = manifest.labels.every((label) => label === "no_event" || [...label].length === 1) ? "" : " ";
    this.source = 0; // each camera or video gets the next number; a frame of an earlier one is dropped
    this.busy = false; // one model call at a time: a stream's buffers go from one call to the next
  }

  play(stream, file) {
    const source = ++this.source;
    Object.assign(this, { seen: 0, dropped: 0, fedSource: null, file, transcriber: new Transcriber(this.manifest.labels, this.rule) });
    tsm.done = false;
    this.clear();
    const unplayable = (why) => fail(`${file?.name ?? "The camera's video"} cannot be played by this browser (${why}): not a video, or a format it does not decode.`);
    video.onerror = () => unplayable(video.error?.message || "a decoding error");
    video.srcObject?.getTracks().forEach((track) => track.stop()); // a dropped video turns the camera off
    video.srcObject = stream;
    if (file) {
      // At half speed: Chromium's player, paused at every frame, still dropped a frame it deemed late in 8 of
      // 12 plays of a 165-frame video at full speed on a 2-core Intel Xeon, and in none of 12 at half speed.
      // A file is decided frame by frame, not in real time; the load that setting src starts applies the rate.
      video.defaultPlaybackRate = 0.5;
      if (video.src) URL.revokeObjectURL(video.src);
      video.src = URL.createObjectURL(file);
      video.onended = () => this.ended(source);
    }
    // AbortError: this page paused it (a file, at its first frame) or loaded another source; a file it cannot decode is video.onerror's.
    video.play().catch((error) => error.name === "AbortError" || unplayable(error.message));
    video.requestVideoFrameCallback((now, meta) => this.frame(source, meta));
  }

  async frame(source, meta) {
    if (source !== this.source) return;
    // The frame's number in the source: a frame the player dropped (it never comes here) is counted all the same.
    const dropped = video.getVideoPlaybackQuality().droppedVideoFrames;
    this.seen += dropped - this.dropped;
    this.dropped = dropped;
    const number = this.seen++;
    const kept = number % this.rule.frame_step === 0 && video.videoWidth > 0;
    if (this.file) {
      // Paused at every frame until it is done with, so that playing on cannot pass a frame unseen.
      video.pause();
      if (kept) await this.feed(source, meta, number);
      if (source !== this.source) return;
      if (!video.ended) video.play().catch(() => {}); // a failure to play on is video.onerror's to report
    } else if (kept && !this.busy) {
      this.busy = true;
      try {
        await this.feed(source, meta, number);
      } finally {
        this.busy = false;
      }
    }
    if (source === this.source) video.requestVideoFrameCallback((now, next) => this.frame(source, next));
  }

  // A dropped video played to its end: every frame of it has been through frame(), as it paused the video for each.
  ended(source) {
    if (source !== this.source) return;
    // Chromium's player may still drop a frame it deems late (at half speed, rarely): said, not hidden.
    tsm.dropped = this.dropped;
    tsm.done = true;
    const dropped = tsm.dropped ? `, ${tsm.dropped} dropped by the browser's player, so the transcript may differ from predict's` : "";
    inform(`${this.file.name}: decided to its end (${this.seen} frames${dropped}); drop another video, or reload the page for the camera`);
  }

  async feed(source, meta, number) {
    if (this.fedSource !== source) { // a new source: a new stream, from zero buffers
      this.model.reset();
      Object.assign(this, { fedSource: source, times: [], fedAt: [] });
    }
    const { videoWidth: width, videoHeight: height } = video;
    canvas.width = width;
    canvas.height = height;
    context.drawImage(video, 0, 0, width, height);
    const rgb = rgbaToRgb(context.getImageData(0, 0, width, height).data, width, height);
    const input = quantize(letterbox(rgb, width, height, this.manifest.image_size), this.manifest.frame);
    let result;
    try {
      result = await this.model.step(input);
    } catch (error) {
      this.source++; // stops the loop
      return fail(`The model failed on a frame: ${error.message}`);
    }
    if (source !== this.source) return; // another video was dropped meanwhile
    if (recordFrames > 0) {
      if (tsm.frames.length === recordFrames - 1) {
        this.source++; // the last one: the loop stops after it, the video on the frame it showed
        video.pause();
      }
      tsm.frames.push({ presented: meta.presentedFrames, time: meta.mediaTime, width, height, raw: base64(rgb), input: base64(input), logits: result.logits && base64(result.logits), ms: result.ms });
    }
    this.show(result, number, meta.mediaTime);
    showInput(input, this.manifest.image_size);
  }

  show({ logits, ms }, number, time) {
    const now = performance.now();
    this.fedAt.push(now);
    while (this.fedAt[0] < now - 1000) this.fedAt.shift();
    if (logits === null) return; // a clip model before its first T frames
    this.times.push(ms);
    if (this.times.length > 30) this.times.shift();
    const printed = this.transcriber.add(dequantize(logits, this.manifest.logits));
    if (printed !== null) {
      const label = this.manifest.labels[printed];
      tsm.transcript.push(label);
      tsm.letters.push({ label, frame: number, time_s: time });
      this.showTranscript();
    }
    const probabilities = this.transcriber.shown;
    const top = [...probabilities.keys()].sort((a, b) => probabilities[b] - probabilities[a]).slice(0, 3);
    $("top3").replaceChildren(...top.map((k) => entry(this.manifest.labels[k], probabilities[k])));
    $("fps").textContent = this.fedAt.length > 1 ? ((this.fedAt.length - 1) / ((now - this.fedAt[0]) / 1000)).toFixed(1) : "–";
    $("model-ms").textContent = `${(this.times.reduce((a, b) => a + b, 0) / this.times.length).toFixed(2)} ms`;
  }

  // Empties the transcript; the decisions go on, so a sign still held is not printed again.
  clear() {
    Object.assign(tsm, { transcript: [], letters: [] });
    this.showTranscript();
  }

  showTranscript() {
    $("transcript").textContent = tsm.transcript.join(this.separator);
  }
}

// The model's input, drawn as it is (the letterbox's grey bars included).
function showInput(pixels, size) {
  const view = $("input");
  view.width = view.height = size;
  const image = new ImageData(size, size);
  for (let i = 0, j = 0; i < pixels.length; i += 3, j += 4) image.data.set([pixels[i], pixels[i + 1], pixels[i + 2], 255], j);
  view.getContext("2d").putImageData(image, 0, 0);
}

function entry(label, probability) {
  const item = document.createElement("li");
  const text = document.createElement("div");
  text.className = "label";
  text.append(Object.assign(document.createElement("span"), { textContent: label }), Object.assign(document.createElement("span"), { textContent: probability.toFixed(2) }));
  const bar = Object.assign(document.createElement("div"), { className: "bar" });
  bar.style.width = `${Math.round(probability * 100)}%`;
  item.append(text, bar);
  return item;
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

main().catch((error) => fail(`The page stopped: ${error.message}`));
