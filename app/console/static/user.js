// User: interests (decayed now), latest interactions, recommendations with reasons, and "why?" as a graph.
"use strict";

(() => {
  const userId = document.getElementById("user-id").dataset.userId;
  const base = `/users/${K.enc(userId)}`;
  const DAY = 86400000;

  function interestTable(title, entries) {
    if (!entries.length) return K.el("p", { class: "muted" }, `No ${title.toLowerCase()}.`);
    const top = Math.max(...entries.map((e) => e.weight), 1e-9);
    const rows = entries.map((e) =>
      K.el("tr", {},
        K.el("th", { scope: "row" }, e.name),
        K.el("td", { class: "nowrap" }, K.el("meter", { min: "0", max: String(top), value: String(e.weight), "aria-label": `${e.name} weight` }), " ", K.number(e.weight, 2)),
        K.el("td", {}, String(e.events)),
        K.el("td", { class: "small" }, e.items.map((d, i) => [i ? ", " : "", K.itemLink(d.item_id, d.title)]))));
    return K.el("table", {},
      K.el("caption", {}, title),
      K.el("thead", {}, K.el("tr", {}, ["Name", "Weight now", "Events", "Driven by"].map((h) => K.el("th", { scope: "col" }, h)))),
      K.el("tbody", {}, rows));
  }

  async function interests() {
    const answer = await interestsAnswer;
    if (!answer.ok) return K.fill("interests", K.problem(answer, "Interests"));
    K.fill("interests", interestTable("Brands", answer.body.brands), interestTable("Categories", answer.body.categories), interestTable("Topics", answer.body.topics || []));
  }

  const interestsAnswer = K.get(`${base}/interests?k=8&items=2`);
  const timelineAnswer = K.get(`${base}/timeline?limit=200`);
  const SERIES_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f"];

  // Per day of the last 90, how many of the user's items were last touched, in all and per strongest
  // interest (the timeline keeps one row per item, so this is an approximation of the event history).
  function activityChart(events, interests) {
    const now = Date.now();
    const start = Math.floor((now - 90 * DAY) / DAY) * DAY;
    const stamped = events.filter((e) => e.last_ts !== null && e.last_ts >= start);
    const target = document.getElementById("activity-chart");
    if (!stamped.length) {
      K.fill(target, K.el("p", { class: "muted" }, "No timed interactions in the last 90 days (this data may have no timestamps)."));
      return;
    }
    const days = Array.from({ length: 91 }, (_, i) => (start + i * DAY) / 1000);
    const count = (keep) => {
      const counts = days.map(() => 0);
      for (const e of stamped) if (keep(e)) counts[Math.min(90, Math.floor((e.last_ts - start) / DAY))] += 1;
      return counts;
    };
    const series = [{ label: "all items", data: count(() => true) }, ...interests.slice(0, 4).map((t) => ({
      label: t.name, data: count((e) => (t.kind === "Brand" ? e.brands : e.categories).includes(t.id)),
    }))];
    const width = Math.max(280, target.clientWidth || 480);
    K.fill(target);
    new uPlot({
      width, height: 170, legend: { show: true },
      series: [{}, ...series.map((x, i) => ({ label: x.label, stroke: SERIES_COLOURS[i], width: i ? 1.5 : 2.5 }))],
      axes: [{}, { size: 36 }],
    }, [days, ...series.map((x) => x.data)], target);
  }

  async function timeline() {
    const [answer, interestAnswer] = await Promise.all([timelineAnswer, interestsAnswer]);
    const list = document.getElementById("timeline");
    if (!answer.ok) return K.fill(list, K.el("li", {}, K.problem(answer, "Interactions")));
    const strongest = interestAnswer.ok
      ? [...interestAnswer.body.brands.map((b) => ({ ...b, kind: "Brand" })), ...interestAnswer.body.categories.map((c) => ({ ...c, kind: "Category" }))]
        .sort((a, b) => b.weight - a.weight)
      : [];
    activityChart(answer.body.events, strongest);
    const events = answer.body.events.slice(0, 30);
    if (!events.length) return K.fill(list, K.el("li", { class: "muted" }, "No interactions (an unknown user gets popular items)."));
    K.fill(list, events.map((e) => {
      const stamp = e.last_ts !== null ? K.when(e.last_ts) : e.last_seq !== null ? `#${e.last_seq} in history` : "";
      const counts = Object.entries(e.counts).map(([name, n]) => `${name} ×${n}`).join(", ");
      return K.el("li", {}, K.el("span", { class: "when" }, stamp), " ", K.itemLink(e.item_id, e.title),
        K.el("span", { class: "small muted" }, ` ${counts} · weight ${K.number(e.weight, 2)}`));
    }));
  }

  // --- "why?" ---------------------------------------------------------------------------------

  function pathGraph(paths) {
    const nodes = new Map();
    const edges = [];
    const seen = new Set();
    paths.forEach((path, p) => {
      // Other customers are anonymous (no id): one node per path, named by how many they are.
      const keys = path.nodes.map((n) => (n.anonymous ? `${n.label}:anonymous:${p}` : `${n.label}:${n.id}`));
      path.nodes.forEach((n, i) => {
        const name = n.anonymous ? `${path.support} other customer${path.support === 1 ? "" : "s"}` : n.name;
        nodes.set(keys[i], { key: keys[i], label: n.label, id: n.id, name, centre: i === 0 || i === keys.length - 1 });
      });
      path.relationships.forEach((r, i) => {
        const [source, target] = r.direction === "out" ? [keys[i], keys[i + 1]] : [keys[i + 1], keys[i]];
        const id = `${source}|${r.type}|${r.relation}|${target}`;
        if (!seen.has(id)) { seen.add(id); edges.push({ source, target, type: r.type, relation: r.relation, weight: r.weight }); }
      });
    });
    return { nodes: [...nodes.values()], edges };
  }

  function cypherBlock(path, index) {
    const code = K.el("pre", { class: "cypher", id: `cypher-${index}` }, K.el("code", {}, path.cypher));
    const status = K.el("span", { class: "small muted", role: "status" });
    const button = K.el("button", {
      type: "button", class: "small", "aria-describedby": `cypher-${index}`,
      onclick: async () => {
        try { await navigator.clipboard.writeText(path.cypher); status.textContent = " Copied."; }
        catch (_) {
          const range = document.createRange();
          range.selectNodeContents(code);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          status.textContent = " Selected: press Ctrl+C to copy.";
        }
      },
    }, "Copy Browser Cypher");
    return [code, button, status];
  }

  async function why(itemId, button) {
    const started = performance.now();
    const section = document.getElementById("why");
    section.hidden = false;
    K.fill("why-item", K.itemLink(itemId));
    K.fill("why-paths", K.el("li", { class: "muted" }, "Loading…"));
    const answer = await K.get(`${base}/recommendations/${K.enc(itemId)}/explanation?max_paths=3`);
    if (!answer.ok) return K.fill("why-paths", K.el("li", {}, K.problem(answer, "Explanation")));
    const paths = answer.body.paths;
    if (!paths.length) {
      K.fill("why-paths", K.el("li", { class: "muted" }, "No path of at most 3 hops links this user to the item (the model ranked it from embeddings alone)."));
      if (window.kgrecGraphs["why-graph"]) window.kgrecGraphs["why-graph"].elements().remove();
    } else {
      const graph = pathGraph(paths);
      const width = document.getElementById("why-graph").clientWidth;
      const positions = KGraph.pathPositions(paths.map((p) => p.nodes.map((n) => `${n.label}:${n.id}`)), width);
      await KGraph.draw("why-graph", graph.nodes, graph.edges, {
        name: "preset", positions: (node) => positions[node.id()], fit: true, padding: 40, animate: false,
      });
      K.fill("why-paths", paths.map((p, i) => K.el("li", {},
        K.el("p", {}, K.el("strong", {}, p.kind.replace("_", " ")), ` (score ${K.number(p.score)}): ${p.sentence}`),
        cypherBlock(p, i))));
    }
    window.kgrecLastGraphMs = performance.now() - started;
    window.kgrecLastExplanation = answer.body;
    document.getElementById("why").dataset.item = itemId;
    document.getElementById("why-title").focus();
    if (button) button.setAttribute("aria-expanded", "true");
  }

  async function recommendations() {
    const answer = await K.get(`${base}/recommendations?k=10&explain=true&record=false`);
    const body = document.querySelector("#recs tbody");
    if (!answer.ok) {
      K.fill("recs-meta", K.problem(answer, "Recommendations"));
      return;
    }
    const recs = answer.body;
    // A cold start says why when it is not plain popularity (a searching newcomer's page).
    const cold = recs.cold_start ? ` · cold start: ${recs.reason || "popular items"}` : "";
    K.fill("recs-meta", `Model ${recs.model_version}${cold}`);
    K.fill(body, recs.items.map((item, i) => K.el("tr", {},
      K.el("td", {}, String(i + 1)),
      K.el("td", {}, K.itemLink(item.item_id)),
      K.el("td", {}, K.number(item.score)),
      K.el("td", { class: "reason" }, item.reason ? item.reason.sentence : K.el("span", { class: "muted" }, "no path found")),
      K.el("td", {}, item.rules.length ? item.rules.join(", ") : "–"),
      K.el("td", {}, K.el("button", {
        type: "button", class: "why", "data-item": item.item_id, "aria-controls": "why", "aria-expanded": "false",
        "aria-label": `Why ${item.item_id}?`, onclick: (event) => why(item.item_id, event.currentTarget),
      }, "why?")))));
  }

  Promise.all([interests(), timeline(), recommendations()]).then(K.ready);
})();
