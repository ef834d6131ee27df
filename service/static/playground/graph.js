// The derivative's graph (a nabla.graph/1 document from POST /v1/graph) drawn as a layered
// diagram: parameters and constants at the top, each operation below its inputs, outputs marked.

import { el, text } from "./svg.js";

export const MAX_DRAWN_NODES = 300;
const ROW = 64;
const NODE_HEIGHT = 38;
const GAP = 14;
const SHORT = { float64: "f64", float32: "f32", float16: "f16", int64: "i64", int32: "i32", int16: "i16",
  int8: "i8", uint8: "u8", uint16: "u16", uint32: "u32", uint64: "u64", bool: "bool" };

export const notation = ({ shape, dtype }) => `${SHORT[dtype] || dtype}[${shape.join(",")}]`;

function literal(input) {
  const v = input.literal;
  return typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v);
}

function attrsText(attrs) {
  const parts = Object.entries(attrs || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const joined = parts.join(" ");
  return joined.length > 22 ? `${joined.slice(0, 21)}…` : joined;
}

/** The document's nodes with their inputs resolved to node indices, and a label each. */
function nodesOf(doc, shapes) {
  const nodes = [];
  const index = new Map();
  const add = (node) => {
    index.set(node.id, nodes.length);
    nodes.push(node);
  };
  for (const p of doc.params) {
    const param = typeof p === "string" ? { name: p } : p;
    add({ id: param.name, kind: "param", title: param.name,
      detail: param.shape ? notation({ shape: param.shape, dtype: param.dtype || "float64" }) : "", inputs: [] });
  }
  for (const [name, c] of Object.entries(doc.constants || {})) {
    const spec = c.$array || c;
    add({ id: name, kind: "const", title: `const ${name}`,
      detail: spec.shape ? notation({ shape: spec.shape, dtype: spec.dtype || "float64" }) : "", inputs: [] });
  }
  for (const n of doc.nodes) {
    const outs = shapes[n.id] || [];
    const literals = n.inputs.filter((i) => typeof i === "object").map(literal);
    const title = [n.op, ...literals].join(" ");
    add({ id: n.id, kind: "op", op: n.op, title, detail: [outs.map(notation).join(" "), attrsText(n.attrs)].filter(Boolean).join(" · "),
      refs: n.inputs.filter((i) => typeof i === "string"), inputs: [], attrs: n.attrs });
  }
  // A secondary output of a multi-output node ("n3.1") belongs to the node listed as "n3.0".
  const resolve = (ref) => (index.has(ref) ? index.get(ref) : index.get(ref.replace(/\.\d+$/, ".0")));
  for (const node of nodes) {
    node.inputs = (node.refs || []).map(resolve).filter((k) => k !== undefined);
  }
  doc.outputs.forEach((name, k) => {
    const at = resolve(name);
    if (at !== undefined) nodes[at].output = (nodes[at].output ? `${nodes[at].output}, ` : "") + `out ${k}`;
  });
  return nodes;
}

/** Rows: an operation one below its deepest input; a source just above its first user. */
function layers(nodes) {
  const depth = nodes.map(() => 0);
  nodes.forEach((node, k) => {
    if (node.inputs.length) depth[k] = 1 + Math.max(...node.inputs.map((i) => depth[i]));
  });
  nodes.forEach((node, k) => {
    if (node.kind === "const") {
      const users = nodes.map((n, u) => (n.inputs.includes(k) ? depth[u] : Infinity));
      const first = Math.min(...users);
      if (Number.isFinite(first)) depth[k] = first - 1;
    }
  });
  return depth;
}

/** Node order within each row: a few sweeps placing each node at the mean position of its neighbours. */
function arrange(nodes, depth) {
  const rows = [];
  nodes.forEach((_, k) => (rows[depth[k]] ||= []).push(k));
  const position = new Map();
  const place = () => rows.forEach((row) => row.forEach((k, i) => position.set(k, (i + 1) / (row.length + 1))));
  const users = nodes.map(() => []);
  nodes.forEach((node, k) => node.inputs.forEach((i) => users[i].push(k)));
  const mean = (ks, own) => (ks.length ? ks.reduce((s, k) => s + position.get(k), 0) / ks.length : own);
  place();
  for (let sweep = 0; sweep < 4; sweep++) {
    for (const row of rows) row.sort((a, b) => mean(nodes[a].inputs, position.get(a)) - mean(nodes[b].inputs, position.get(b)));
    place();
    for (const row of [...rows].reverse()) row.sort((a, b) => mean(users[a], position.get(a)) - mean(users[b], position.get(b)));
    place();
  }
  return rows;
}

/** Draw `doc` (with `shapes`, node id -> output specs) into `container`; returns the SVG element. */
export function drawGraph(container, doc, shapes) {
  const nodes = nodesOf(doc, shapes);
  const depth = layers(nodes);
  const rows = arrange(nodes, depth);
  const widthOf = (node) => Math.max(70, 7.2 * Math.max(node.title.length, node.detail.length) + 16);
  const rowWidths = rows.map((row) => row.reduce((s, k) => s + widthOf(nodes[k]) + GAP, -GAP));
  const width = Math.max(320, ...rowWidths) + 2 * GAP;
  const height = rows.length * ROW + GAP;
  const at = new Map();
  rows.forEach((row, r) => {
    let left = (width - rowWidths[r]) / 2;
    for (const k of row) {
      at.set(k, { x: left, y: GAP + r * ROW, w: widthOf(nodes[k]) });
      left += widthOf(nodes[k]) + GAP;
    }
  });
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "graph", role: "img",
    "aria-label": "the derivative's graph", "data-nodes": doc.nodes.length });
  svg.append(el("defs", {}, [el("marker", { id: "edge-head", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6,
    markerHeight: 6, orient: "auto" }, [el("path", { d: "M0 0L10 5L0 10z", class: "edge-head" })])]));
  const edges = el("g", { class: "edges" });
  nodes.forEach((node, k) => {
    const to = at.get(k);
    node.inputs.forEach((i) => {
      const from = at.get(i);
      const [x0, y0, x1, y1] = [from.x + from.w / 2, from.y + NODE_HEIGHT, to.x + to.w / 2, to.y];
      const bend = (y1 - y0) / 2;
      edges.append(el("path", { d: `M${x0} ${y0}C${x0} ${y0 + bend} ${x1} ${y1 - bend} ${x1} ${y1}`, "marker-end": "url(#edge-head)" }));
    });
  });
  svg.append(edges);
  nodes.forEach((node, k) => {
    const { x, y, w } = at.get(k);
    const g = el("g", { class: `node ${node.kind}${node.output ? " output" : ""}`, "data-id": node.id,
      "data-op": node.op || node.kind, transform: `translate(${x} ${y})` });
    const tip = el("title");
    tip.textContent = [node.id, node.title, node.detail, node.output].filter(Boolean).join("\n");
    g.append(tip, el("rect", { width: w, height: NODE_HEIGHT, rx: 6 }));
    g.append(text(w / 2, 16, node.title, { class: "op", "text-anchor": "middle" }));
    g.append(text(w / 2, 31, node.detail, { class: "shape", "text-anchor": "middle" }));
    if (node.output) g.append(text(w + 4, 24, node.output, { class: "out-label" }));
    svg.append(g);
  });
  container.replaceChildren(svg);
  return svg;
}
