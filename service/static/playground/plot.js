// The plots, written as plain SVG: f, f' and f'' over a range, and a contour map of a function of
// two variables with its gradient field. Every drawn series carries `data-series` and the values
// it was drawn from, and the plot carries its scales, so what is on screen can be read back.

import { el, fmt, linear, pointer, px, text, ticks } from "./svg.js";

const MARGIN = { left: 64, right: 16, top: 30, bottom: 40 };
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
  "#b5de2b", "#fde725"];

/** A y range that shows the bulk of the values: an isolated spike (1/x near 0) is clipped. */
function robustDomain(values) {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (finite.length === 0) return [-1, 1];
  const q = (p) => finite[Math.min(finite.length - 1, Math.floor(p * (finite.length - 1)))];
  const spread = q(0.98) - q(0.02);
  let lo = Math.max(finite[0], q(0.02) - spread);
  let hi = Math.min(finite[finite.length - 1], q(0.98) + spread);
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    lo -= 1;
    hi += 1;
  }
  const pad = 0.05 * (hi - lo);
  return [lo - pad, hi + pad];
}

function axes(box, x, y, xDomain, yDomain, xLabel, yLabel, grid = true) {
  const g = el("g", { class: "axes" });
  for (const v of ticks(...xDomain, 8)) {
    const at = px(x(v));
    if (grid) g.append(el("line", { x1: at, x2: at, y1: box.top, y2: box.top + box.height, class: "grid" }));
    else g.append(el("line", { x1: at, x2: at, y1: box.top + box.height, y2: box.top + box.height + 4, class: "frame" }));
    g.append(text(at, box.top + box.height + 16, fmt(v), { class: "tick", "text-anchor": "middle" }));
  }
  for (const v of ticks(...yDomain, 6)) {
    const at = px(y(v));
    if (grid) g.append(el("line", { x1: box.left, x2: box.left + box.width, y1: at, y2: at, class: v === 0 ? "grid zero" : "grid" }));
    else g.append(el("line", { x1: box.left - 4, x2: box.left, y1: at, y2: at, class: "frame" }));
    g.append(text(box.left - 6, at + 4, fmt(v), { class: "tick", "text-anchor": "end" }));
  }
  g.append(el("rect", { x: box.left, y: box.top, width: box.width, height: box.height, class: "frame" }));
  g.append(text(box.left + box.width / 2, box.top + box.height + 34, xLabel, { class: "axis-label", "text-anchor": "middle" }));
  if (yLabel) {
    g.append(text(14, box.top + box.height / 2, yLabel,
      { class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${box.top + box.height / 2})` }));
  }
  return g;
}

function plotSvg(width, height, box, xDomain, yDomain, label) {
  return el("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img", "aria-label": label,
    "data-x-domain": JSON.stringify(xDomain), "data-y-domain": JSON.stringify(yDomain),
    "data-box": JSON.stringify([box.left, box.top, box.width, box.height]),
  });
}

/** A path through the finite points; a non-finite value breaks the line. */
function linePath(xs, values, x, y) {
  let d = "";
  let pen = false;
  xs.forEach((xv, k) => {
    const v = values[k];
    if (!Number.isFinite(v)) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${px(x(xv))} ${px(y(v))}`;
    pen = true;
  });
  return d;
}

/**
 * f, f' and f'' against one varied coordinate. `series` is [{name, label, color, values}];
 * `readout(index)` is called with the sample under the pointer (null when it leaves).
 */
export function linePlot(container, { xs, series, xLabel, readout }) {
  const width = 760;
  const height = 380;
  const box = { left: MARGIN.left, top: MARGIN.top, width: width - MARGIN.left - MARGIN.right,
    height: height - MARGIN.top - MARGIN.bottom };
  const xDomain = [xs[0], xs[xs.length - 1]];
  const yDomain = robustDomain(series.flatMap((s) => s.values));
  const x = linear(xDomain, [box.left, box.left + box.width]);
  const y = linear(yDomain, [box.top + box.height, box.top]);
  const svg = plotSvg(width, height, box, xDomain, yDomain, `f and its derivatives against ${xLabel}`);
  svg.dataset.xs = JSON.stringify(xs);
  const clip = `clip-${Math.random().toString(36).slice(2)}`;
  svg.append(el("defs", {}, [el("clipPath", { id: clip }, [
    el("rect", { x: box.left, y: box.top, width: box.width, height: box.height })])]));
  svg.append(axes(box, x, y, xDomain, yDomain, xLabel, ""));
  const lines = el("g", { "clip-path": `url(#${clip})` });
  for (const s of series) {
    lines.append(el("path", {
      d: linePath(xs, s.values, x, y), class: `series series-${s.name}`, "data-series": s.name,
      "data-label": s.label, "data-values": JSON.stringify(s.values.map((v) => (Number.isFinite(v) ? v : null))),
    }));
  }
  svg.append(lines);
  const legend = el("g", { class: "legend" });
  series.forEach((s, k) => {
    const lx = box.left + k * 64;
    legend.append(el("line", { x1: lx, x2: lx + 22, y1: box.top - 14, y2: box.top - 14, class: `series series-${s.name}` }));
    legend.append(text(lx + 27, box.top - 10, s.label, { class: "legend-label" }));
  });
  svg.append(legend);
  const cursor = el("g", { class: "cursor", visibility: "hidden" });
  const rule = el("line", { y1: box.top, y2: box.top + box.height, class: "rule" });
  cursor.append(rule);
  const dots = series.map((s) => el("circle", { r: 4, class: `dot series-${s.name}` }));
  dots.forEach((dot) => cursor.append(dot));
  svg.append(cursor);
  svg.addEventListener("pointermove", (event) => {
    const at = pointer(svg, event);
    if (at.x < box.left || at.x > box.left + box.width || at.y < box.top || at.y > box.top + box.height) {
      cursor.setAttribute("visibility", "hidden");
      readout(null);
      return;
    }
    const k = Math.max(0, Math.min(xs.length - 1, Math.round(((x.invert(at.x) - xs[0]) / (xDomain[1] - xDomain[0])) * (xs.length - 1))));
    const cx = px(x(xs[k]));
    rule.setAttribute("x1", cx);
    rule.setAttribute("x2", cx);
    series.forEach((s, j) => {
      const v = s.values[k];
      dots[j].setAttribute("visibility", Number.isFinite(v) && v >= yDomain[0] && v <= yDomain[1] ? "visible" : "hidden");
      dots[j].setAttribute("cx", cx);
      dots[j].setAttribute("cy", Number.isFinite(v) ? px(y(v)) : 0);
    });
    cursor.setAttribute("visibility", "visible");
    readout(k);
  });
  svg.addEventListener("pointerleave", () => {
    cursor.setAttribute("visibility", "hidden");
    readout(null);
  });
  container.replaceChildren(svg);
  return svg;
}

function colour(t) {
  const u = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(u));
  const mix = (a, b) => Math.round(a + (b - a) * (u - i));
  const rgb = (hex) => [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
  const [a, b] = [rgb(VIRIDIS[i]), rgb(VIRIDIS[i + 1])];
  return `rgb(${mix(a[0], b[0])},${mix(a[1], b[1])},${mix(a[2], b[2])})`;
}

/** Segments of the level set f = level on a grid (marching squares), as path data. */
function contourPath(values, us, vs, level, x, y) {
  let d = "";
  const point = (i0, j0, i1, j1) => {
    const a = values[j0][i0];
    const b = values[j1][i1];
    const t = (level - a) / (b - a);
    return [px(x(us[i0] + t * (us[i1] - us[i0]))), px(y(vs[j0] + t * (vs[j1] - vs[j0])))];
  };
  for (let j = 0; j + 1 < vs.length; j++) {
    for (let i = 0; i + 1 < us.length; i++) {
      const corners = [values[j][i], values[j][i + 1], values[j + 1][i + 1], values[j + 1][i]];
      if (!corners.every(Number.isFinite)) continue;
      // the edges (bottom, right, top, left) the level crosses, in order
      const edges = [[i, j, i + 1, j], [i + 1, j, i + 1, j + 1], [i, j + 1, i + 1, j + 1], [i, j, i, j + 1]];
      const crossed = edges.filter(([i0, j0, i1, j1]) => (values[j0][i0] < level) !== (values[j1][i1] < level));
      for (let k = 0; k + 1 < crossed.length; k += 2) {
        const [p, q] = [point(...crossed[k]), point(...crossed[k + 1])];
        d += `M${p[0]} ${p[1]}L${q[0]} ${q[1]}`;
      }
    }
  }
  return d;
}

/**
 * A heat map and contours of f over a grid, `values[j][i]` = f(us[i], vs[j]), with arrows of the
 * gradient (gu, gv) at every `stride`-th grid point, drawn in the plot's data coordinates.
 */
export function contourPlot(container, { us, vs, values, gu, gv, uLabel, vLabel, readout, stride = 4 }) {
  const size = 420;
  const bar = 70;
  const width = MARGIN.left + size + bar + MARGIN.right;
  const height = MARGIN.top + size + MARGIN.bottom;
  const box = { left: MARGIN.left, top: MARGIN.top, width: size, height: size };
  const uDomain = [us[0], us[us.length - 1]];
  const vDomain = [vs[0], vs[vs.length - 1]];
  const x = linear(uDomain, [box.left, box.left + box.width]);
  const y = linear(vDomain, [box.top + box.height, box.top]);
  const svg = plotSvg(width, height, box, uDomain, vDomain, `contours of f over ${uLabel} and ${vLabel}`);
  const finite = values.flat().filter(Number.isFinite);
  const [lo, hi] = finite.length ? [Math.min(...finite), Math.max(...finite)] : [0, 1];
  const shade = (v) => (Number.isFinite(v) ? colour(hi > lo ? (v - lo) / (hi - lo) : 0.5) : "#ccc");
  svg.dataset.fDomain = JSON.stringify([lo, hi]);
  // Cells centred on the grid points.
  const cells = el("g", { "data-series": "f", class: "heat" });
  const half = (grid, k) => [k === 0 ? grid[0] : (grid[k - 1] + grid[k]) / 2,
    k === grid.length - 1 ? grid[k] : (grid[k] + grid[k + 1]) / 2];
  vs.forEach((v, j) => {
    const [v0, v1] = half(vs, j);
    us.forEach((u, i) => {
      const [u0, u1] = half(us, i);
      cells.append(el("rect", {
        x: px(x(u0)), y: px(y(v1)), width: px(x(u1) - x(u0)) + 0.3, height: px(y(v0) - y(v1)) + 0.3,
        fill: shade(values[j][i]), "data-u": u, "data-v": v, "data-value": values[j][i],
      }));
    });
  });
  svg.append(cells);
  const contours = el("g", { "data-series": "contours", class: "contours" });
  if (hi > lo) {
    for (const level of ticks(lo, hi, 10)) {
      const d = contourPath(values, us, vs, level, x, y);
      if (d) contours.append(el("path", { d, "data-level": level }));
    }
  }
  svg.append(contours);
  svg.append(axes(box, x, y, uDomain, vDomain, uLabel, vLabel, false));
  svg.append(el("defs", {}, [el("marker", {
    id: "arrowhead", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 5, markerHeight: 5, orient: "auto-start-reverse",
  }, [el("path", { d: "M0 0L10 5L0 10z", class: "arrowhead" })])]));
  const arrows = el("g", { "data-series": "grad", class: "arrows" });
  const picked = [];
  for (let j = stride >> 1; j < vs.length; j += stride) {
    for (let i = stride >> 1; i < us.length; i += stride) {
      if (Number.isFinite(gu[j][i]) && Number.isFinite(gv[j][i])) picked.push([i, j]);
    }
  }
  // The longest arrow spans 90% of the spacing between arrows.
  const spacing = Math.min(x(us[Math.min(stride, us.length - 1)]) - x(us[0]), y(vs[0]) - y(vs[Math.min(stride, vs.length - 1)]));
  const pixels = ([i, j]) => [(x(us[i] + gu[j][i]) - x(us[i])), (y(vs[j] + gv[j][i]) - y(vs[j]))];
  const longest = Math.max(1e-300, ...picked.map((p) => Math.hypot(...pixels(p))));
  for (const [i, j] of picked) {
    const [dx, dy] = pixels([i, j]).map((d) => (d * 0.9 * spacing) / longest);
    const [x0, y0] = [x(us[i]) - dx / 2, y(vs[j]) - dy / 2];
    arrows.append(el("line", {
      x1: px(x0), y1: px(y0), x2: px(x0 + dx), y2: px(y0 + dy), "marker-end": Math.hypot(dx, dy) > 2 ? "url(#arrowhead)" : undefined,
      "data-u": us[i], "data-v": vs[j], "data-du": gu[j][i], "data-dv": gv[j][i],
    }));
  }
  svg.append(arrows);
  // colour bar
  const barBox = { left: box.left + box.width + 18, top: box.top, width: 14, height: box.height };
  const scale = el("g", { class: "colour-bar" });
  for (let k = 0; k < 50; k++) {
    scale.append(el("rect", { x: barBox.left, y: px(barBox.top + (barBox.height * (49 - k)) / 50), width: barBox.width,
      height: px(barBox.height / 50) + 0.3, fill: colour(k / 49) }));
  }
  if (hi > lo) {
    const yb = linear([lo, hi], [barBox.top + barBox.height, barBox.top]);
    for (const v of ticks(lo, hi, 6)) scale.append(text(barBox.left + barBox.width + 4, px(yb(v)) + 4, fmt(v), { class: "tick" }));
  }
  svg.append(scale);
  const marker = el("circle", { r: 5, class: "probe", visibility: "hidden" });
  svg.append(marker);
  svg.addEventListener("pointermove", (event) => {
    const at = pointer(svg, event);
    if (at.x < box.left || at.x > box.left + box.width || at.y < box.top || at.y > box.top + box.height) {
      marker.setAttribute("visibility", "hidden");
      readout(null);
      return;
    }
    const nearest = (grid, value) => grid.reduce((best, g, k) => (Math.abs(g - value) < Math.abs(grid[best] - value) ? k : best), 0);
    const [i, j] = [nearest(us, x.invert(at.x)), nearest(vs, y.invert(at.y))];
    marker.setAttribute("cx", px(x(us[i])));
    marker.setAttribute("cy", px(y(vs[j])));
    marker.setAttribute("visibility", "visible");
    readout([i, j]);
  });
  svg.addEventListener("pointerleave", () => {
    marker.setAttribute("visibility", "hidden");
    readout(null);
  });
  container.replaceChildren(svg);
  return svg;
}
