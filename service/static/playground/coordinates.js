// Arguments as the API takes them (JSON pytrees), the scalar coordinates in them that a plot can
// vary, and batches of points in `in_axes` form: every argument that holds a varied coordinate is
// stacked along a new axis 0 at the array leaves that hold one; the rest is shared (null).

/** An array leaf as the service decodes it: a number or boolean, or nested lists of them. */
export function isArrayLeaf(value) {
  if (typeof value === "number" || typeof value === "boolean") return true;
  return Array.isArray(value) && value.length > 0 && value.every(isArrayLeaf);
}

const clone = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

function at(tree, path) {
  return path.reduce((node, key) => node[key], tree);
}

/** A copy of `tree` with the value at `path` replaced. */
export function withValue(tree, path, value) {
  if (path.length === 0) return value;
  const copy = Array.isArray(tree) ? tree.slice() : { ...tree };
  copy[path[0]] = withValue(tree[path[0]], path.slice(1), value);
  return copy;
}

function label(name, path) {
  return path.reduce((text, key) => (typeof key === "number" ? `${text}[${key}]` : `${text}.${key}`), name);
}

/** Every number in the arguments, as {param, path, label, value}. */
export function coordinates(params, args) {
  const found = [];
  const walk = (param, node, path) => {
    if (typeof node === "number") {
      found.push({ param, path, label: label(params[param], path), value: node });
    } else if (Array.isArray(node)) {
      node.forEach((item, i) => walk(param, item, [...path, i]));
    } else if (node !== null && typeof node === "object") {
      Object.keys(node).forEach((key) => walk(param, node[key], [...path, key]));
    }
  };
  args.forEach((arg, i) => walk(i, arg, []));
  return found;
}

/** The keys from an argument's root to the array leaf that holds `path`. */
function leafKeys(arg, path) {
  const keys = [];
  let node = arg;
  while (!isArrayLeaf(node)) {
    keys.push(path[keys.length]);
    node = node[path[keys.length - 1]];
  }
  return keys;
}

/** The argument's structure with null at every array leaf (an in_axes entry mapping nothing). */
function unmapped(arg) {
  if (arg === null || isArrayLeaf(arg)) return null;
  if (Array.isArray(arg)) return arg.map(unmapped);
  if (typeof arg === "object") return Object.fromEntries(Object.entries(arg).map(([k, v]) => [k, unmapped(v)]));
  return null;
}

/**
 * Arguments and in_axes for a batch of points: point k gives `points[k][j]` to `varied[j]`.
 * Returns {args, inAxes}.
 */
export function batch(args, varied, points) {
  const out = [];
  const inAxes = [];
  args.forEach((arg, param) => {
    const mine = varied.map((c, j) => ({ c, j })).filter(({ c }) => c.param === param);
    if (mine.length === 0) {
      out.push(arg);
      inAxes.push(null);
      return;
    }
    let value = arg;
    let axes = unmapped(arg);
    const leaves = new Map();
    for (const entry of mine) {
      const keys = leafKeys(arg, entry.c.path);
      const id = JSON.stringify(keys);
      if (!leaves.has(id)) leaves.set(id, { keys, entries: [] });
      leaves.get(id).entries.push(entry);
    }
    for (const { keys, entries } of leaves.values()) {
      const leaf = at(arg, keys);
      const stacked = points.map((point) => entries.reduce(
        (item, { c, j }) => withValue(item, c.path.slice(keys.length), point[j]), clone(leaf)));
      value = withValue(value, keys, stacked);
      axes = keys.length === 0 ? 0 : withValue(axes, keys, 0);
    }
    out.push(value);
    inAxes.push(axes);
  });
  return { args: out, inAxes };
}

/** `tree` (arguments or tangents) batched like `batch` does for the same coordinates, with the
 *  values it holds at them repeated `n` times. */
export function repeated(tree, varied, n) {
  const values = varied.map((c) => at(tree[c.param], c.path));
  return batch(tree, varied, Array.from({ length: n }, () => values));
}

/** Zeros shaped like the arguments (false stays false: an integer argument's tangent is zero too). */
export function zerosLike(tree) {
  if (typeof tree === "number") return 0;
  if (typeof tree === "boolean") return false;
  if (Array.isArray(tree)) return tree.map(zerosLike);
  if (tree !== null && typeof tree === "object") {
    return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, zerosLike(v)]));
  }
  return tree;
}

/** The unit tangent along coordinate `direction` (zeros elsewhere), one per argument. */
export function unitTangent(args, direction) {
  return args.map((arg, param) => (param === direction.param ? withValue(zerosLike(arg), direction.path, 1) : zerosLike(arg)));
}
