// The decision rule of torch_tsm.transcript.Transcriber, operation for operation in float64, so that the
// page prints the letters runtime.predict prints from the same logits (tests/test_web.py checks both on
// thousands of random sequences). The rule ({frame_step, smooth, confirm, threshold}) is the model card's
// "decision", which the server's manifest passes on.

const NO_EVENT = "no_event"; // torch_tsm.synthetic.NO_EVENT: decided like a sign, printed never

export class Transcriber {
  constructor(labels, rule) {
    this.rule = rule;
    this.noEvent = labels.indexOf(NO_EVENT);
    this.recent = []; // the probabilities of the last `smooth` kept frames
    this.candidate = -1;
    this.run = 0;
    this.decided = -1; // the class decided last, a sign or no_event; -1 before any
    this.shown = new Float64Array(labels.length); // the smoothed probabilities of the last frame
  }

  // (K,) logits of one kept frame -> the class whose letter this frame prints, or null
  add(logits) {
    this.recent.push(softmax(logits));
    if (this.recent.length > this.rule.smooth) this.recent.shift();
    const sum = new Float64Array(this.shown.length);
    for (const probabilities of this.recent) probabilities.forEach((p, k) => { sum[k] += p; });
    this.shown = sum.map((s) => s / this.recent.length);
    let top = 0;
    this.shown.forEach((p, k) => { if (p > this.shown[top]) top = k; }); // the first of equal ones, as argmax
    const confident = this.shown[top] >= this.rule.threshold;
    if (confident && top === this.candidate) {
      this.run += 1;
    } else {
      this.candidate = top;
      this.run = confident ? 1 : 0;
    }
    if (this.run !== this.rule.confirm) return null;
    const printed = top !== this.decided && top !== this.noEvent;
    this.decided = top;
    return printed ? top : null;
  }
}

// (K,) logits -> (K,) probabilities in float64, as torch_tsm.transcript.softmax
export function softmax(logits) {
  const top = Math.max(...logits);
  const exp = Float64Array.from(logits, (l) => Math.exp(l - top));
  const sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((e) => e / sum);
}
