// The playground's page: reads the form, asks this service's /v1 API, and draws the answers.
//
// Along one varied coordinate c (a number somewhere in the arguments), f' and f'' are the first
// and second derivatives of t -> f(point with c = t): forward-mode directional derivatives along
// the unit tangent e_c. /v1/jvp gives f and f' = Df[e_c]; /v1/jvp of the derived function
// {"jvp": f} at (point, e_c) with tangents (e_c, 0) gives f' and f'' = D²f[e_c, e_c]. Both run
// on every sample at once with in_axes (one request each, exact per sample whatever f does
// across elements). Over two coordinates, two such jvp requests give f and its gradient.

import { ApiError, apiKey, get, number, post, setApiKey } from "./api.js";
import { batch, coordinates, repeated, unitTangent, zerosLike } from "./coordinates.js";
import { MAX_DRAWN_NODES, drawGraph } from "./graph.js";
import { contourPlot, linePlot } from "./plot.js";
import { fmt, linspace } from "./svg.js";

const SAMPLES = 201;
const GRID = 41;
const ORDERS = [1, 2, 3, 4];
const $ = (id) => document.getElementById(id);

const state = { graphs: new Map(), shownOrder: 1, models: [] };

function html(tag, attrs = {}, content = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const c of [].concat(content)) node.append(c);
  return node;
}

// ------------------------------------------------------------------ the function and its arguments

const source = () => document.querySelector("input[name=source]:checked").value;

function paramNames() {
  if (source() === "model") {
    const model = state.models.find((m) => m.name === $("model").value);
    return model ? model.params : [];
  }
  return $("params").value.split(",").map((p) => p.trim()).filter(Boolean);
}

function functionSpec() {
  if (source() === "model") return { model: $("model").value };
  return { expr: $("expr").value, params: paramNames() };
}

/** An argument from a model's schema: arrays of 0.5 with every named dimension 2. */
function example(spec) {
  if (spec && Array.isArray(spec.shape)) {
    const fill = spec.dtype && spec.dtype.startsWith("bool") ? false : spec.dtype && /int/.test(spec.dtype) ? 0 : 0.5;
    const build = (dims) => (dims.length === 0 ? fill : Array.from({ length: typeof dims[0] === "number" ? dims[0] : 2 }, () => build(dims.slice(1))));
    return build(spec.shape);
  }
  if (Array.isArray(spec)) return spec.map(example);
  if (spec && typeof spec === "object") return Object.fromEntries(Object.entries(spec).map(([k, v]) => [k, example(v)]));
  return 0.5;
}

function renderArgs(defaults = {}) {
  const previous = Object.fromEntries([...$("args").querySelectorAll("input")].map((i) => [i.dataset.param, i.value]));
  const rows = paramNames().map((name, k) => {
    const value = previous[name] ?? JSON.stringify(name in defaults ? defaults[name] : 1.0);
    const input = html("input", { id: `arg-${k}`, "data-param": name, value, spellcheck: "false" });
    input.addEventListener("change", renderCoordinates);
    return html("label", { class: "arg" }, [html("span", {}, name), input]);
  });
  $("args").replaceChildren(...rows);
  renderCoordinates();
}

function readArgs() {
  return [...$("args").querySelectorAll("input")].map((input) => {
    try {
      return JSON.parse(input.value);
    } catch {
      input.classList.add("invalid");
      throw new Error(`the value of ${input.dataset.param} is not JSON: ${input.value.slice(0, 40)}`);
    }
  });
}

function renderCoordinates() {
  let found = [];
  try {
    found = coordinates(paramNames(), readArgs());
    $("args").querySelectorAll("input").forEach((i) => i.classList.remove("invalid"));
  } catch {
    return; // the argument is shown as invalid; the selects keep their options
  }
  // New coordinates (other parameters or argument shapes) bring back the defaults.
  const labels = JSON.stringify(found.map((c) => c.label));
  const same = $("vary-x").dataset.labels === labels;
  $("vary-x").dataset.labels = labels;
  const fill = (select, withNone, fallback) => {
    const kept = select.value;
    const options = found.map((c, k) => html("option", { value: c.label, "data-index": k }, c.label));
    if (withNone) options.unshift(html("option", { value: "" }, "(nothing: plot f, f′, f″)"));
    select.replaceChildren(...options);
    select.value = same ? kept : fallback;
  };
  fill($("vary-x"), false, found[0] ? found[0].label : "");
  // two numbers in all: a function of two variables, shown as a map unless asked otherwise
  fill($("vary-y"), true, found.length === 2 ? found[1].label : "");
  $("vary-y").dataset.count = found.length;
}

// ------------------------------------------------------------------ errors

function clearErrors() {
  $("error").hidden = true;
  $("error").replaceChildren();
  $("expr-backdrop").replaceChildren();
  $("expr").classList.remove("has-error");
}

/**
 * The column the API reports is 1-based, in characters of the line (past its end for an
 * unexpected end of input): the character there is marked in the editor and quoted below it.
 */
function showError(error) {
  const detail = error instanceof ApiError ? error.detail : {};
  const box = $("error");
  const advice = error.status === 401 ? " Enter the key in the API key field at the top." : "";
  box.replaceChildren(html("p", { class: "message" }, error.message + advice));
  box.dataset.type = error.type || "error";
  const located = source() === "expr" && Number.isInteger(detail.line) && Number.isInteger(detail.column);
  if (located) {
    const lines = $("expr").value.split("\n");
    const line = lines[detail.line - 1] ?? "";
    const chars = [...line];
    const col = Math.min(detail.column - 1, chars.length);
    box.dataset.line = detail.line;
    box.dataset.column = detail.column;
    const mark = (extra) => html("mark", { "data-line": detail.line, "data-column": detail.column, ...extra }, chars[col] ?? " ");
    box.append(html("pre", { class: "excerpt" }, [
      html("span", { class: "where" }, `${detail.line}:${detail.column}  `), chars.slice(0, col).join(""), mark(),
      chars.slice(col + 1).join("")]));
    // The same character marked in the editor, behind the transparent textarea.
    const before = lines.slice(0, detail.line - 1).map((l) => `${l}\n`).join("") + chars.slice(0, col).join("");
    const after = chars.slice(col + 1).join("") + lines.slice(detail.line).map((l) => `\n${l}`).join("");
    $("expr-backdrop").replaceChildren(before, mark({ id: "error-mark" }), after);
    $("expr").classList.add("has-error");
    const offset = before.length;
    $("expr").setSelectionRange(offset, offset + (chars[col] ? chars[col].length : 0));
  } else {
    delete box.dataset.line;
    delete box.dataset.column;
  }
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function isFunctionError(error) {
  return error instanceof ApiError && (error.status === 401 || error.status === 403 || Number.isInteger(error.detail.line)
    || error.type === "invalid_function" || error.type === "not_found");
}

// ------------------------------------------------------------------ curves

function scalarSeries(values, what) {
  if (!Array.isArray(values) || values.some((v) => Array.isArray(v) || (v !== null && typeof v === "object"))) {
    throw new Error(`${what}: the plot needs a scalar output per point, but the function returns an array; `
      + "wrap it in sum(...) or pick a scalar output");
  }
  return values.map(number);
}

/** The [from, to] of a range's two fields, refused unless from < to. */
function range(from, to, label) {
  const [lo, hi] = [Number($(from).value), Number($(to).value)];
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo < hi)) {
    throw new Error(`the range of ${label} must go from a number to a larger one (got ${$(from).value} to ${$(to).value})`);
  }
  return [lo, hi];
}

async function curves(spec, args, cx) {
  const xs = linspace(...range("x-from", "x-to", cx.label), SAMPLES);
  const varied = [cx];
  const point = batch(args, varied, xs.map((t) => [t]));
  const unit = repeated(unitTangent(args, cx), varied, SAMPLES);
  const zeros = repeated(zerosLike(args), varied, SAMPLES);
  const first = await post("v1/jvp", { function: spec, args: point.args, tangents: unit.args, in_axes: point.inAxes });
  const second = await post("v1/jvp", { function: { jvp: spec }, args: [...point.args, ...unit.args],
    tangents: [...unit.args, ...zeros.args], in_axes: [...point.inAxes, ...point.inAxes] });
  const series = [
    { name: "f", label: "f", values: scalarSeries(first.value, "f") },
    { name: "df", label: "f′", values: scalarSeries(first.jvp, "f′") },
    { name: "d2f", label: "f″", values: scalarSeries(second.jvp, "f″") },
  ];
  $("plot-title").textContent = `f, f′ and f″ against ${cx.label}`;
  const readout = $("readout");
  linePlot($("plot-area"), { xs, series, xLabel: cx.label, readout: (k) => {
    if (k === null) {
      readout.replaceChildren("Point at the plot to read the values.");
      delete readout.dataset.index;
      return;
    }
    readout.dataset.index = k;
    readout.dataset.x = xs[k];
    readout.replaceChildren(html("span", {}, `${cx.label} = ${fmt(xs[k])}`), ...series.map((s) => {
      readout.dataset[s.name] = s.values[k];
      return html("span", { class: `value series-${s.name}` }, `${s.label} = ${fmt(s.values[k])}`);
    }));
  } });
  readout.replaceChildren("Point at the plot to read the values.");
}

async function contours(spec, args, cu, cv) {
  const us = linspace(...range("x-from", "x-to", cu.label), GRID);
  const vs = linspace(...range("y-from", "y-to", cv.label), GRID);
  const varied = [cu, cv];
  const points = vs.flatMap((v) => us.map((u) => [u, v]));
  const grid = batch(args, varied, points);
  const along = async (c) => post("v1/jvp", { function: spec, args: grid.args,
    tangents: repeated(unitTangent(args, c), varied, points.length).args, in_axes: grid.inAxes });
  const du = await along(cu);
  const dv = await along(cv);
  const rows = (flat) => vs.map((_, j) => flat.slice(j * GRID, (j + 1) * GRID));
  const values = rows(scalarSeries(du.value, "f"));
  const gu = rows(scalarSeries(du.jvp, `∂f/∂${cu.label}`));
  const gv = rows(scalarSeries(dv.jvp, `∂f/∂${cv.label}`));
  $("plot-title").textContent = `f over ${cu.label} and ${cv.label}, with its gradient`;
  const readout = $("readout");
  contourPlot($("plot-area"), { us, vs, values, gu, gv, uLabel: cu.label, vLabel: cv.label, readout: (ij) => {
    if (ij === null) {
      readout.replaceChildren("Point at the map to read the values.");
      return;
    }
    const [i, j] = ij;
    readout.replaceChildren(...[`${cu.label} = ${fmt(us[i])}`, `${cv.label} = ${fmt(vs[j])}`, `f = ${fmt(values[j][i])}`,
      `∇f = (${fmt(gu[j][i])}, ${fmt(gv[j][i])})`].map((t) => html("span", {}, t)));
  } });
  readout.replaceChildren("Point at the map to read the values.");
}

// ------------------------------------------------------------------ the derivative's graph

function showGraph(order) {
  state.shownOrder = order;
  const answer = state.graphs.get(order);
  $("graph-counts").querySelectorAll("tr[data-order]").forEach((tr) => tr.classList.toggle("shown", Number(tr.dataset.order) === order));
  if (!answer || answer instanceof Error) {
    $("graph-area").replaceChildren(html("p", { class: "placeholder" }, answer ? answer.message : ""));
    return;
  }
  if (answer.nodes.optimised > MAX_DRAWN_NODES) {
    $("graph-area").replaceChildren(html("p", { class: "placeholder" },
      `The optimised graph of order ${order} has ${answer.nodes.optimised} operations: too many to draw here.`));
    return;
  }
  drawGraph($("graph-area"), answer.graph, answer.shapes);
}

async function graphs(spec, args, cx) {
  state.graphs.clear();
  const head = html("tr", {}, ["order", "function", "traced", "optimised"].map((t) => html("th", {}, t)));
  const table = $("graph-counts");
  table.replaceChildren(html("caption", {}, `operations of grad f with respect to ${paramNames()[cx.param]}; pick a row to draw it`), head);
  for (const order of ORDERS) {
    let row;
    try {
      const answer = await post("v1/graph", { function: spec, args, argnums: cx.param, order });
      state.graphs.set(order, answer);
      const n = answer.nodes;
      row = html("tr", { "data-order": order, "data-function": n.function, "data-traced": n.traced, "data-optimised": n.optimised },
        [order, n.function, n.traced, n.optimised].map((v) => html("td", {}, String(v))));
    } catch (error) {
      if (isFunctionError(error)) throw error;
      state.graphs.set(order, error);
      // grad of a gradient needs a scalar gradient: a parameter that is an array has none (as in JAX)
      const shape = error.detail && error.detail.shape;
      const why = error.type === "not_differentiable" && order > 1 && Array.isArray(shape) && shape.length
        ? `grad of order ${order} needs a scalar parameter: the gradient with respect to ${paramNames()[cx.param]} `
          + `has shape [${shape.join(", ")}]` : error.message;
      row = html("tr", { "data-order": order, "data-error": error.type || "error" },
        [html("td", {}, String(order)), html("td", { colspan: 3, class: "refused", title: error.message }, why)]);
    }
    row.tabIndex = 0;
    row.addEventListener("click", () => showGraph(order));
    row.addEventListener("keydown", (event) => event.key === "Enter" && showGraph(order));
    table.append(row);
  }
  showGraph(state.graphs.get(state.shownOrder) instanceof Error ? 1 : state.shownOrder);
}

// ------------------------------------------------------------------ check_grads

async function check(spec, args) {
  const order = Number($("check-order").value);
  const answer = await post("v1/check_grads", { function: spec, args, check: { order, modes: ["fwd", "rev"] } });
  const report = answer.check;
  const head = html("tr", {}, ["order", "mode", "max abs error", "max rel error", ""].map((t) => html("th", {}, t)));
  const rows = report.results.map((r) => html("tr", { "data-order": r.order, "data-mode": r.mode, "data-passed": r.passed }, [
    html("td", {}, String(r.order)), html("td", { title: r.kind }, r.mode), html("td", {}, fmt(number(r.max_abs_error))),
    html("td", {}, fmt(number(r.max_rel_error))), html("td", { class: r.passed ? "pass" : "fail" }, r.passed ? "pass" : "fail")]));
  const verdict = html("p", { class: `verdict ${report.passed ? "pass" : "fail"}`, "data-passed": report.passed },
    report.passed ? `Derivatives up to order ${order} agree with finite differences.`
      : "Some derivatives disagree with finite differences.");
  const tolerances = [...new Set(report.results.map((r) => `atol ${fmt(r.atol)}, rtol ${fmt(r.rtol)}`))].join("; ");
  $("check").replaceChildren(verdict, html("table", { class: "check" }, [
    html("caption", {}, `at the point on the left; fwd: jvp, rev: vjp; tolerance ${tolerances}`), head, ...rows]));
}

// ------------------------------------------------------------------ running it all

async function section(name, work) {
  try {
    await work();
  } catch (error) {
    if (isFunctionError(error)) throw error;
    const target = { plot: $("plot-area"), graph: $("graph-area"), check: $("check") }[name];
    target.replaceChildren(html("p", { class: "section-error", "data-error": error.type || "error" }, error.message));
  }
}

async function run(event) {
  event.preventDefault();
  clearErrors();
  const results = $("results");
  results.dataset.state = "busy";
  $("run").disabled = true;
  try {
    const spec = functionSpec();
    const args = readArgs();
    const found = coordinates(paramNames(), args);
    const cx = found.find((c) => c.label === $("vary-x").value);
    const cy = found.find((c) => c.label === $("vary-y").value);
    if (!cx) throw new Error("nothing to vary: the arguments hold no number");
    if (cy && cy.label === cx.label) throw new Error("vary two different numbers for a map");
    await section("plot", () => (cy ? contours(spec, args, cx, cy) : curves(spec, args, cx)));
    await section("graph", () => graphs(spec, args, cx));
    await section("check", () => check(spec, args));
    results.dataset.state = "done";
  } catch (error) {
    showError(error);
    results.dataset.state = "error";
  } finally {
    $("run").disabled = false;
  }
}

// ------------------------------------------------------------------ models and the key

async function loadModels() {
  try {
    const list = await get("v1/models?limit=1000");
    state.models = list.models;
    $("model").replaceChildren(...state.models.map((m) => html("option", { value: m.name },
      m.signature ? `${m.name} (${m.signature})` : m.name)));
    $("controls").dataset.models = state.models.length;
  } catch (error) {
    state.models = [];
    $("model").replaceChildren(html("option", { value: "" }, error.status === 401 ? "enter the API key to list models" : error.message));
  }
}

async function pickModel() {
  const name = $("model").value;
  const model = state.models.find((m) => m.name === name);
  $("model-description").textContent = model ? model.description : "";
  let defaults = {};
  if (model) {
    try {
      const info = await get(`v1/models/${encodeURIComponent(name)}`);
      defaults = Object.fromEntries(model.params.map((p) => [p, example((info.schema || {})[p])]));
    } catch (error) {
      showError(error);
    }
  }
  $("args").replaceChildren();
  renderArgs(defaults);
}

function switchSource() {
  const model = source() === "model";
  $("expr-source").hidden = model;
  $("model-source").hidden = !model;
  clearErrors();
  if (model) pickModel();
  else {
    $("args").replaceChildren();
    renderArgs();
  }
}

function syncBackdrop() {
  $("expr-backdrop").scrollTop = $("expr").scrollTop;
}

function init() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("api-key").dispatchEvent(new Event("change"));
  });
  $("api-key").addEventListener("change", () => {
    setApiKey($("api-key").value.trim());
    loadModels();
  });
  document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", switchSource));
  $("params").addEventListener("change", () => renderArgs());
  $("model").addEventListener("change", pickModel);
  $("expr").addEventListener("input", () => {
    if ($("expr").classList.contains("has-error")) clearErrors();
  });
  $("expr").addEventListener("scroll", syncBackdrop);
  $("controls").addEventListener("submit", run);
  renderArgs();
  loadModels().then(() => {
    document.body.dataset.ready = "true";
  });
}

init();
