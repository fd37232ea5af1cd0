// kgrec console: helpers every page uses. Pages read the public JSON API (/v1/...) like any client.
"use strict";

const K = (() => {
  const body = document.body;
  const api = body.dataset.api || "/v1";
  let pending = 0;

  /** A Retry-After header in seconds (delay-seconds or an HTTP date), or null when absent or unreadable. */
  function retryAfter(value) {
    if (!value) return null;
    const seconds = /^\s*\d+\s*$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
    return Number.isFinite(seconds) ? Math.max(0, seconds) : null;
  }

  /** GET an API path; resolves to {status, ok, body, retryAfter} and never throws (a network error is status 0). */
  async function get(path) {
    pending += 1;
    try {
      const response = await fetch(api + path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      let data = null;
      try { data = await response.json(); } catch (_) { data = null; }
      return { status: response.status, ok: response.ok, body: data, retryAfter: retryAfter(response.headers.get("Retry-After")) };
    } catch (error) {
      return { status: 0, ok: false, body: { detail: String(error) }, retryAfter: null };
    } finally {
      pending -= 1;
    }
  }

  /** Build an element: el("a", {href: "/x", class: "y"}, "text", child). Text is never parsed as HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const enc = encodeURIComponent;
  const userLink = (id) => el("a", { href: `/console/users/${enc(id)}` }, id);
  const itemLink = (id, title) => el("a", { href: `/console/items/${enc(id)}` }, title && title !== id ? `${title} (${id})` : id);

  function number(value, digits = 3) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en", { maximumFractionDigits: digits });
  }

  function when(ms) {
    if (ms === null || ms === undefined) return "–";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  function bytes(size) {
    if (size === null || size === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let value = size, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  /** Replace a container's children. */
  function fill(target, ...children) {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
    return node;
  }

  /** A sentence for a failed API answer, shown where the data would be. */
  function problem(answer, what) {
    if (answer.status === 404) return el("p", { class: "muted" }, `${what}: not available (${answer.body && answer.body.detail ? answer.body.detail : "404"}).`);
    if (answer.status === 401) return el("p", { class: "error" }, `${what}: this server needs a key to read (sign in).`);
    const detail = answer.body && answer.body.detail ? answer.body.detail : `status ${answer.status}`;
    return el("p", { class: "error", role: "alert" }, `${what} could not be loaded: ${detail}`);
  }

  /** The page's first data is on screen: record how long it took (the browser tests read this). */
  function ready() {
    window.kgrecReadyMs = performance.now();
    body.dataset.ready = "true";
  }

  return { get, el, enc, userLink, itemLink, number, when, bytes, fill, problem, ready, pending: () => pending };
})();

// Pages with no data of their own are ready at once.
if (!["search", "user", "item", "models", "health", "audiences", "experiments"].includes(document.body.dataset.page)) K.ready();
