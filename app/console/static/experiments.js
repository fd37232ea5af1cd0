// Experiments: the list (GET /v1/experiments); one's results (GET /v1/experiments/{id}): per-variant rates with 95% intervals drawn as SVG; stop and promote forms.
"use strict";

(() => {
  const box = document.getElementById("experiment");
  const experimentId = box.dataset.experimentId;
  const csrf = box.dataset.csrf;
  const signedIn = document.body.dataset.signedIn === "true";
  const METRICS = [["ctr", "CTR"], ["conversion", "Conversion"], ["revenue_per_impression", "Revenue / impression"], ["add_to_cart_rate", "Add-to-cart rate"]];
  const SVG = "http://www.w3.org/2000/svg";

  function estimate(e, digits = 4) {
    return `${K.number(e.value, digits)} [${K.number(e.ci_low, digits)}, ${K.number(e.ci_high, digits)}]`;
  }

  function versus(v, metric) {
    const d = v.vs_control && v.vs_control[metric];
    if (!d || d.difference === null) return "";
    return ` Δ ${K.number(d.difference, 4)} [${K.number(d.ci_low, 4)}, ${K.number(d.ci_high, 4)}], p = ${K.number(d.p_value, 3)}`;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  // One metric: each variant's value as a dot and its 95% interval as a bar, on a shared scale.
  function intervalChart(metric, title, variants) {
    const top = Math.max(...variants.map((v) => v[metric].ci_high), 1e-9);
    const width = 320, row = 26, left = 90;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${row * variants.length + 8}`, width: "100%", role: "img", "aria-label": `${title} per variant with 95% intervals` });
    variants.forEach((v, i) => {
      const y = 14 + i * row;
      const x = (value) => left + ((width - left - 10) * value) / top;
      const label = svg("text", { x: 0, y: y + 4, "font-size": 12, fill: "#1b1b1b" });
      label.textContent = v.name;
      chart.append(label,
        svg("line", { x1: left, x2: width - 10, y1: y, y2: y, stroke: "#d0d4d9" }),
        svg("line", { x1: x(v[metric].ci_low), x2: x(v[metric].ci_high), y1: y, y2: y, stroke: "#4e79a7", "stroke-width": 6, "stroke-linecap": "round" }),
        svg("circle", { cx: x(v[metric].value), cy: y, r: 4, fill: "#1b1b1b" }));
    });
    const tests = variants.filter((v) => v.vs_control && v.vs_control[metric] && v.vs_control[metric].p_value !== null)
      .map((v) => ` · ${v.name} vs control: p = ${K.number(v.vs_control[metric].p_value, 3)}`);
    return K.el("figure", { class: "interval", "data-metric": metric }, K.el("figcaption", {}, title, K.el("span", { class: "muted small" }, tests)), chart);
  }

  function form(action, label, fields) {
    return K.el("form", { method: "post", action, class: "inline" },
      K.el("input", { type: "hidden", name: "csrf_token", value: csrf }),
      Object.entries(fields).map(([name, value]) => K.el("input", { type: "hidden", name, value })),
      K.el("button", { type: "submit" }, label));
  }

  async function load() {
    const answer = await K.get(`/experiments/${K.enc(experimentId)}`);
    const status = document.getElementById("experiment-status");
    if (!answer.ok) return K.fill(status, K.problem(answer, `Experiment ${experimentId}`));
    const x = answer.body;
    const base = `/console/experiments/${K.enc(x.id)}`;
    const promoted = x.promoted ? ` · promoted ${x.promoted.variant} (${x.promoted.model_version})` : "";
    status.textContent = `${x.name} (${x.id}): ${x.status}, started ${K.when(x.created_at)}${x.stopped_at ? `, stopped ${K.when(x.stopped_at)}` : ""}${promoted}.`;
    K.fill(document.querySelector("#variants tbody"), x.variants.map((v) => K.el("tr", { "data-variant": v.name },
      K.el("th", { scope: "row" }, v.name, v.name === x.control ? K.el("span", { class: "muted small" }, " (control)") : ""),
      K.el("td", {}, K.el("code", {}, v.model_version)),
      K.el("td", {}, `${K.number(100 * v.traffic, 1)}%`),
      K.el("td", {}, K.number(v.users, 0)),
      K.el("td", {}, K.number(v.impressions, 0)),
      ...["ctr", "conversion", "revenue_per_impression"].map((m) => K.el("td", { class: "small" }, estimate(v[m]), K.el("span", { class: "muted" }, versus(v, m)))),
      K.el("td", {}, signedIn && !x.promoted ? form(`${base}/promote`, `Promote ${v.name}`, { variant: v.name }) : ""))));
    K.fill("intervals", METRICS.map(([m, title]) => intervalChart(m, title, x.variants)));
    K.fill("sample-ratio", sampleRatio(x));
    K.fill("tests", `Tests: ${x.tests}.`);
    K.fill("experiment-actions", signedIn && x.status === "running" ? form(`${base}/stop`, "Stop the experiment", {})
      : signedIn ? null : K.el("p", { class: "muted" }, "Sign in to stop the experiment or promote a variant."));
  }

  // The split check: users per variant against the traffic shares (a mismatch voids the results).
  function sampleRatio(x) {
    if (!x.sample_ratio_users) return K.el("span", { class: "muted" }, "Sample ratio: not counted (the experiment started before per-user totals).");
    const users = x.sample_ratio_users.map((n, i) => `${x.variants[i].name} ${K.number(n, 0)}`).join(", ");
    // Below 0.001, three decimals would read 0.000.
    const text = `Sample ratio: users ${users} against the traffic shares, χ² p = ${x.sample_ratio_p !== null && x.sample_ratio_p < 0.001 ? x.sample_ratio_p.toExponential(1) : K.number(x.sample_ratio_p, 3)}`;
    // The threshold is the API's (sample_ratio_alpha), so the page says what the check used.
    return x.sample_ratio_mismatch
      ? K.el("strong", { class: "error", role: "alert" }, `${text}: the split is broken (p < ${x.sample_ratio_alpha}), distrust these results.`)
      : K.el("span", { class: "muted" }, `${text} (a split counts as broken at p < ${x.sample_ratio_alpha}).`);
  }

  function variantsOf(x) {
    return x.variants.map((v, i) => [i ? ", " : "", `${v.name} `, K.el("code", {}, v.model_version), ` ${K.number(100 * v.traffic, 1)}%`]);
  }

  // A page at a time (the API lists at most 100): "More" asks for the next, older page by its cursor.
  const PAGE = Number(new URLSearchParams(location.search).get("per_page")) || 100;
  const shown = [];
  let running = null;

  function row(x) {
    return K.el("tr", { "data-experiment": x.id, class: x.id === experimentId ? "active" : null },
      K.el("th", { scope: "row" }, K.el("a", { href: `/console/experiments?id=${K.enc(x.id)}`, "aria-current": x.id === experimentId ? "page" : null }, x.name),
        K.el("span", { class: "muted small" }, ` ${x.id}`)),
      K.el("td", {}, K.el("span", { class: `status ${x.status}` }, x.promoted ? `${x.status}, promoted ${x.promoted.variant}` : x.status)),
      K.el("td", { class: "small" }, variantsOf(x)),
      K.el("td", {}, K.when(x.created_at)));
  }

  async function list(cursor) {
    const more = document.getElementById("more-experiments");
    const qs = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) qs.set("cursor", cursor);
    const answer = await K.get(`/experiments?${qs}`);
    const status = document.getElementById("list-status");
    if (!answer.ok) return K.fill(status, K.problem(answer, "Experiments"));
    shown.push(...answer.body.experiments);
    if (!cursor) running = answer.body.running;
    const next = answer.body.next_cursor;
    const counted = next ? `The newest ${shown.length} experiments (older ones: More)` : `${shown.length} experiment(s), newest first`;
    status.textContent = shown.length ? `${counted}${running ? `; ${running} is running` : ""}.`
      : "No experiment yet (POST /v1/experiments starts one).";
    K.fill(document.querySelector("#experiments tbody"), shown.map(row));
    more.hidden = !next;
    more.onclick = next ? () => { more.disabled = true; list(next).then(() => { more.disabled = false; }); } : null;
  }

  Promise.all([list(null), experimentId ? load() : null]).then(K.ready);
})();
