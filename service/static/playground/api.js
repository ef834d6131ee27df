// Calls to this service's /v1 API. Paths are relative to the page, so the playground works
// behind a reverse proxy that serves the service under a prefix; nothing else is ever fetched.

const KEY = "nabla.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

// sessionStorage: the key lives as long as this tab, and is never written to disk by the page.
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** An error answer of the API: `type`, `message` and `detail` as the service sent them. */
export class ApiError extends Error {
  constructor(status, error, path) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "http_error";
    this.detail = error.detail || {};
    this.path = path;
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, {
    method, headers, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // a proxy's HTML error page, say: reported below with the status
  }
  if (!response.ok) {
    throw new ApiError(response.status, (payload && payload.error) || { message: `HTTP ${response.status}` }, path);
  }
  return payload;
}

export const post = (path, body) => request("POST", path, body);
export const get = (path) => request("GET", path);

/** A number as the API writes it: non-finite values arrive as the strings NaN, Infinity, -Infinity. */
export function number(value) {
  if (typeof value === "number") return value;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  return NaN;
}
