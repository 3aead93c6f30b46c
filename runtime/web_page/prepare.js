// A camera frame to the model's input, as runtime.predict prepares it in Python (torch_tsm/frames.py,
// FrameTransform with resize "letterbox"): the whole frame scaled to fit S x S, aspect ratio kept, on
// grey (114); shrinking by exact halvings with 2x2 means first, then one bilinear step under 2x. The
// arithmetic is OpenCV's for uint8 (cv2.resize, INTER_AREA halvings and INTER_LINEAR in fixed point), so
// the page feeds the model the pixels Python would; tests/test_web.py compares the two on the page's frames.
// Pure functions on typed arrays, no DOM: node runs them too.

export const LETTERBOX_GREY = 114;
const COEF_BITS = 11; // OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights in units of 1/2048
const COEF_SCALE = 1 << COEF_BITS;

// RGBA (canvas ImageData) -> RGB, (h, w, 4) -> (h, w, 3)
export function rgbaToRgb(rgba, width, height) {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

// (h, w, 3) RGB -> (S, S, 3): torch_tsm.frames._letterbox_placement and _letterbox
export function letterbox(rgb, width, height, size) {
  const scale = size / Math.max(height, width);
  const newH = Math.max(1, roundHalfEven(height * scale));
  const newW = Math.max(1, roundHalfEven(width * scale));
  const top = Math.floor((size - newH) / 2);
  const left = Math.floor((size - newW) / 2);
  const resized = resizeFrame(rgb, width, height, newW, newH);
  const canvas = new Uint8Array(size * size * 3).fill(LETTERBOX_GREY);
  for (let y = 0; y < newH; y++) {
    canvas.set(resized.subarray(y * newW * 3, (y + 1) * newW * 3), ((top + y) * size + left) * 3);
  }
  return canvas;
}

// (h, w, 3) -> (height, width, 3): torch_tsm.frames.resize_frame
export function resizeFrame(rgb, width, height, toWidth, toHeight) {
  let frame = rgb, w = width, h = height;
  while (w >= 2 * toWidth && h >= 2 * toHeight) {
    frame = halve(frame, w, h);
    w = Math.floor(w / 2);
    h = Math.floor(h / 2);
  }
  if (w === toWidth && h === toHeight) return frame;
  return resizeLinear(frame, w, h, toWidth, toHeight);
}

// (h, w, 3) -> (h // 2, w // 2, 3), each pixel the rounded mean of a 2x2 block (cv2.INTER_AREA at 1/2)
function halve(rgb, width, height) {
  const w = Math.floor(width / 2), h = Math.floor(height / 2);
  const out = new Uint8Array(w * h * 3);
  const row = width * 3;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 2 * y * row + 2 * x * 3;
      for (let c = 0; c < 3; c++) {
        out[(y * w + x) * 3 + c] = (rgb[i + c] + rgb[i + 3 + c] + rgb[i + row + c] + rgb[i + row + 3 + c] + 2) >> 2;
      }
    }
  }
  return out;
}

// (h, w, 3) -> (toHeight, toWidth, 3), cv2.INTER_LINEAR on uint8: weights rounded to 1/2048 in float32,
// a horizontal pass in integers, a vertical pass rounded as OpenCV's SIMD code rounds it.
function resizeLinear(rgb, width, height, toWidth, toHeight) {
  const xs = taps(width, toWidth, true);
  const ys = taps(height, toHeight, false);
  const out = new Uint8Array(toWidth * toHeight * 3);
  const rows = [new Int32Array(toWidth * 3), new Int32Array(toWidth * 3)];
  for (let dy = 0; dy < toHeight; dy++) {
    const sy = ys.index[dy];
    for (let k = 0; k < 2; k++) horizontal(rgb, width, clamp(sy + k, 0, height - 1), xs, rows[k]);
    const b0 = ys.weight0[dy], b1 = ys.weight1[dy];
    for (let i = 0; i < toWidth * 3; i++) {
      const value = (((b0 * (rows[0][i] >> 4)) >> 16) + ((b1 * (rows[1][i] >> 4)) >> 16) + 2) >> 2;
      out[dy * toWidth * 3 + i] = clamp(value, 0, 255);
    }
  }
  return out;
}

function horizontal(rgb, width, y, xs, row) {
  const base = y * width * 3;
  for (let dx = 0; dx < xs.index.length; dx++) {
    const s = base + xs.index[dx] * 3, a0 = xs.weight0[dx], a1 = xs.weight1[dx];
    for (let c = 0; c < 3; c++) row[dx * 3 + c] = a1 === 0 ? rgb[s + c] * a0 : rgb[s + c] * a0 + rgb[s + 3 + c] * a1;
  }
}

// Source index and the two weights of each output position. OpenCV clamps a horizontal tap at the border
// (weight all on the edge pixel) but keeps a vertical one's weights and repeats the edge row instead.
function taps(from, to, clampWeights) {
  const scale = 1 / (to / from); // as OpenCV: 1 / inv_scale, not from / to (they differ in the last bit)
  const index = new Int32Array(to), weight0 = new Int32Array(to), weight1 = new Int32Array(to);
  for (let d = 0; d < to; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (clampWeights && s < 0) { f = 0; s = 0; }
    if (clampWeights && s >= from - 1) { f = 0; s = from - 1; }
    index[d] = s;
    weight0[d] = roundHalfEven(Math.fround(1 - f) * COEF_SCALE);
    weight1[d] = roundHalfEven(f * COEF_SCALE);
  }
  return { index, weight0, weight1 };
}

// Python's round() and C's lrint: halves to the even neighbour
export function roundHalfEven(x) {
  const floor = Math.floor(x), rest = x - floor;
  if (rest !== 0.5) return rest < 0.5 ? floor : floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

function clamp(x, low, high) {
  return x < low ? low : x > high ? high : x;
}

// Pixels (0..255) -> the model's uint8 input: runtime.clip.quantize with the input's scale and zero point
// (the toolkit's models take raw pixels 1:1, scale 1 and zero point 0; another pair is honoured all the same).
export function quantize(pixels, { scale, zero_point: zeroPoint }) {
  if (scale === 1 && zeroPoint === 0) return pixels;
  return Uint8Array.from(pixels, (p) => clamp(roundHalfEven(p / scale + zeroPoint), 0, 255));
}

// uint8 logits -> float logits: runtime.clip.dequantize
export function dequantize(values, { scale, zero_point: zeroPoint }) {
  return Float32Array.from(values, (v) => (v - zeroPoint) * scale);
}
