// Small helpers for writing SVG by hand: elements, number formats, linear scales and tick values.

const NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes (undefined ones left out) and children. */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

export function text(x, y, content, attrs = {}) {
  const node = el("text", { x, y, ...attrs });
  node.textContent = content;
  return node;
}

/** A value for people: 6 significant digits, no trailing zeros. */
export function fmt(value) {
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "−∞";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6 || magnitude < 1e-4) return Number(value.toPrecision(4)).toExponential().replaceAll("-", "−");
  return String(Number(value.toPrecision(6))).replace("-", "−");
}

/** Pixel coordinates rounded to 0.01: exact enough for drawing, and a smaller document. */
export const px = (value) => Math.round(value * 100) / 100;

/** The linear map from `domain` to `range`, with its inverse. */
export function linear([d0, d1], [r0, r1]) {
  const k = (r1 - r0) / (d1 - d0);
  const map = (v) => r0 + (v - d0) * k;
  map.invert = (r) => d0 + (r - r0) / k;
  return map;
}

/** Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi], about `count` of them. */
export function ticks(lo, hi, count = 6) {
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** `n` evenly spaced values from `lo` to `hi`, both included. */
export function linspace(lo, hi, n) {
  return Array.from({ length: n }, (_, k) => (k === n - 1 ? hi : lo + ((hi - lo) * k) / (n - 1)));
}

/** The point of an SVG element's user space under a mouse event. */
export function pointer(svg, event) {
  const point = svg.createSVGPoint();
  point.x = event.clientX;
  point.y = event.clientY;
  return point.matrixTransform(svg.getScreenCTM().inverse());
}
