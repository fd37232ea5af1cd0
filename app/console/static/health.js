// Health: /readyz, /v1/graph/stats and the server's own Prometheus metrics (/metrics), sampled every 5 s.
"use strict";

(() => {
  const SAMPLE_MS = 5000;

  function dl(target, pairs) {
    K.fill(target, pairs.map(([name, value]) => [K.el("dt", {}, name), K.el("dd", {}, value)]));
  }

  async function readiness() {
    let answer;
    try {
      const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
      answer = { status: response.status, body: await response.json().catch(() => null) };
    } catch (error) {
      answer = { status: 0, body: { detail: String(error) } };
    }
    const ok = answer.status === 200;
    dl("ready", [
      ["API", K.el("span", { class: "ok" }, "up")],
      ["Graph and model", K.el("span", { class: ok ? "ok" : "bad" }, ok ? "ready" : `not ready (${answer.body && answer.body.detail ? answer.body.detail : answer.status})`)],
      ["Engine", ok ? answer.body.engine : "–"],
      ["Active model", ok ? answer.body.model_version : "–"],
    ]);
  }

  // Workers get half a second to answer a ping, so the page does not wait for them to be ready.
  async function queue() {
    const answer = await K.get("/queue");
    if (!answer.ok) return K.fill("queue", K.problem(answer, "Job queue"));
    const { broker, workers } = answer.body;
    dl("queue", [
      ["Broker", K.el("span", { class: broker ? "ok" : "bad" }, broker ? "up" : "down")],
      ["Workers", workers.length ? K.el("span", { class: "ok" }, workers.join(", ")) : K.el("span", { class: "bad" }, "none answered (training and fold-in wait)")],
    ]);
  }

  async function counts() {
    K.fill("counts", K.el("dt", {}, "Nodes and relationships"), K.el("dd", { class: "muted" }, "counting…"));
    const answer = await K.get("/graph/stats");
    if (!answer.ok) return K.fill("counts", K.problem(answer, "Graph counts"));
    const nodes = Object.entries(answer.body.nodes).map(([label, n]) => [`${label} nodes`, K.number(n, 0)]);
    const total = Object.values(answer.body.relationships).reduce((a, b) => a + b, 0);
    dl("counts", [...nodes, ["Relationships", K.number(total, 0)]]);
  }

  // Prometheus text: name{labels} value. Only the request counter and the latency histogram are read.
  // A label value may hold braces (the endpoint "/v1/users/{user_id}/..."): the labels are quoted
  // strings and what lies between them, up to the closing brace outside every quote.
  const SAMPLE = /^(\w+)\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}\s+([0-9.eE+-]+|NaN|[+-]Inf)$/;
  function parse(text) {
    const endpoints = new Map();
    let total = 0;
    const entry = (name) => {
      if (!endpoints.has(name)) endpoints.set(name, { requests: 0, errors: 0, seconds: 0, observed: 0 });
      return endpoints.get(name);
    };
    for (const line of text.split("\n")) {
      const match = SAMPLE.exec(line);
      if (!match) continue;
      const [, metric, rawLabels, rawValue] = match;
      const labels = Object.fromEntries([...rawLabels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
      const value = Number(rawValue);
      if (metric === "kgrec_http_requests_total") {
        const e = entry(labels.endpoint);
        e.requests += value;
        total += value;
        if (String(labels.status).startsWith("5")) e.errors += value;
      } else if (metric === "kgrec_http_request_duration_seconds_sum") {
        entry(labels.endpoint).seconds += value;
      } else if (metric === "kgrec_http_request_duration_seconds_count") {
        entry(labels.endpoint).observed += value;
      }
    }
    return { endpoints, total };
  }

  const times = [];
  const rates = [];
  window.kgrecRates = rates; // the chart's samples (requests/s), as the browser test reads them
  let previous = null;
  let chart = null;

  async function metrics() {
    let text = null;
    try {
      const response = await fetch("/metrics");
      if (response.ok) text = await response.text();
    } catch (_) { text = null; }
    // A failed read is no sample: taken as a total of 0, it made the next good sample's rate the
    // whole counter over 5 s (a false spike). The table and the last sample stay as they were.
    if (text === null) return;
    const { endpoints, total } = parse(text);
    const rows = [...endpoints.entries()].filter(([, e]) => e.requests > 0).sort((a, b) => b[1].requests - a[1].requests);
    K.fill(document.querySelector("#endpoints tbody"), rows.map(([name, e]) => K.el("tr", {},
      K.el("th", { scope: "row" }, K.el("code", {}, name)),
      K.el("td", {}, K.number(e.requests, 0)),
      K.el("td", {}, K.number(e.errors, 0)),
      K.el("td", {}, e.observed ? `${K.number((1000 * e.seconds) / e.observed, 1)} ms` : "–"))));
    const now = Date.now() / 1000;
    if (previous) {
      times.push(now);
      rates.push(Math.max(0, (total - previous.total) / (now - previous.at)));
      const target = document.getElementById("rate-chart");
      if (!chart) {
        K.fill(target);
        chart = new uPlot({
          width: Math.max(280, target.clientWidth || 480), height: 140, legend: { show: false },
          series: [{}, { label: "requests/s", stroke: "#4e79a7", width: 2 }], axes: [{}, { size: 40 }],
        }, [times, rates], target);
      } else {
        chart.setData([times, rates]);
      }
    } else {
      K.fill("rate-chart", K.el("p", { class: "muted" }, "Request rate: the first sample arrives in 5 s."));
    }
    previous = { total, at: now };
  }

  // Counting every node and relationship walks the whole graph (about 2 s on Amazon Beauty, while
  // the graph's query thread serves nobody else), so it runs only when asked.
  document.getElementById("count").addEventListener("click", counts);
  Promise.all([readiness(), metrics()]).then(K.ready);
  queue();
  setInterval(metrics, SAMPLE_MS);
  // A busy or restarting worker can miss one half-second ping: the queue panel asks again as often.
  setInterval(queue, SAMPLE_MS);
})();
