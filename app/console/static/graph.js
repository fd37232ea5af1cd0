// Drawing typed graphs with cytoscape: nodes coloured by label, relationship types and weights on edges.
"use strict";

const KGraph = (() => {
  // Colour-blind-safe hues (Tableau 10), dark labels on a white halo for contrast.
  const COLOURS = { User: "#4e79a7", Item: "#f28e2b", Brand: "#59a14f", Category: "#b07aa1", Entity: "#9c755f", Topic: "#e15759" };
  const drawn = {};
  window.kgrecGraphs = drawn;

  function short(text, size = 28) {
    const value = String(text);
    return value.length > size ? `${value.slice(0, size - 1)}…` : value;
  }

  function edgeText(edge) {
    const name = edge.relation && edge.relation.toUpperCase() !== edge.type ? `${edge.type} (${edge.relation})` : edge.type;
    return edge.weight === null || edge.weight === undefined ? name : `${name} · ${K.number(edge.weight, 2)}`;
  }

  const STYLE = [
    {
      selector: "node",
      style: {
        "background-color": (n) => COLOURS[n.data("label")] || "#bab0ac",
        label: "data(caption)",
        "font-size": 13,
        color: "#1b1b1b",
        "text-outline-color": "#ffffff",
        "text-outline-width": 2,
        "text-valign": "bottom",
        "text-margin-y": 4,
        width: 26,
        height: 26,
        "border-width": 1,
        "border-color": "#333333",
      },
    },
    { selector: "node[?centre]", style: { width: 38, height: 38, "border-width": 3 } },
    {
      selector: "edge",
      style: {
        width: 2,
        "line-color": "#8a8a8a",
        "target-arrow-color": "#8a8a8a",
        "target-arrow-shape": "triangle",
        "curve-style": "bezier",
        label: "data(caption)",
        "font-size": 11,
        color: "#333333",
        "text-rotation": "autorotate",
        "text-background-color": "#ffffff",
        "text-background-opacity": 0.85,
        "text-background-padding": 1,
      },
    },
  ];

  /**
   * Draw nodes [{key, label, id, name, centre?}] and edges [{source, target, type, relation, weight}]
   * into the element with id `containerId`; resolves once the layout has finished. A crowded graph
   * can leave its edges unlabelled (`edgeLabels` false): the page lists the relations in text.
   */
  function draw(containerId, nodes, edges, layout, edgeLabels = true) {
    if (drawn[containerId]) drawn[containerId].destroy();
    const elements = [
      ...nodes.map((n) => ({
        data: { id: n.key, label: n.label, name: n.name, nodeId: n.id, centre: Boolean(n.centre), caption: short(n.name) },
      })),
      ...edges.map((e, index) => ({
        data: { id: `e${index}`, source: e.source, target: e.target, type: e.type, weight: e.weight, caption: edgeLabels ? edgeText(e) : "" },
      })),
    ];
    const cy = cytoscape({
      container: document.getElementById(containerId),
      elements,
      style: STYLE,
      maxZoom: 1.2,
      layout: { name: "preset" },
    });
    drawn[containerId] = cy;
    return new Promise((resolve) => {
      const running = cy.layout(layout);
      running.one("layoutstop", () => resolve(cy));
      running.run();
    });
  }

  /** Hop distance of every node from `root` (undirected), for concentric layouts. */
  function hops(root, edges) {
    const next = new Map();
    for (const e of edges) {
      if (!next.has(e.source)) next.set(e.source, []);
      if (!next.has(e.target)) next.set(e.target, []);
      next.get(e.source).push(e.target);
      next.get(e.target).push(e.source);
    }
    const depth = new Map([[root, 0]]);
    const queue = [root];
    while (queue.length) {
      const node = queue.shift();
      for (const other of next.get(node) || []) {
        if (!depth.has(other)) { depth.set(other, depth.get(node) + 1); queue.push(other); }
      }
    }
    return depth;
  }

  /**
   * Positions for explanation paths, read left to right: the user in the first column, the
   * recommended item in the last, each path's middle nodes on a row of their own.
   */
  function pathPositions(paths, width) {
    const positions = {};
    const rows = paths.length;
    const span = Math.max(240, Math.min(900, width * 0.8));
    paths.forEach((nodes, row) => {
      nodes.forEach((key, column) => {
        if (positions[key]) return;
        const ends = column === 0 || column === nodes.length - 1;
        const x = (column / (nodes.length - 1)) * span;
        positions[key] = { x, y: ends ? ((rows - 1) * 90) / 2 : row * 90 };
      });
    });
    return positions;
  }

  return { draw, hops, pathPositions, COLOURS };
})();
