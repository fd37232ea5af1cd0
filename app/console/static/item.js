// Item: fields and availability, rules touching it, its neighbourhood drawn, similar items, who interacts.
"use strict";

(() => {
  const itemId = document.getElementById("item-id").dataset.itemId;
  const base = `/items/${K.enc(itemId)}`;

  function field(name, value) {
    return [K.el("dt", {}, name), K.el("dd", {}, value === null || value === undefined || value === "" ? "–" : value)];
  }

  // Whether serving applies the rule to the item (kgrec/rules.py). A pin moves only the item it pins:
  // its `when` says on which requests, not which items. Block, boost and bury reach their target's
  // items: the item; the items of a brand (serving knows one brand per item, the first in id order,
  // the API's `brand`); a category and every category below it (so the item's own categories and
  // those above them); or the items with an attribute value.
  function touches(rule, item) {
    if (rule.action === "pin") return rule.item === item.item_id;
    const target = rule.target || {};
    if (target.item !== undefined) return target.item === item.item_id;
    if (target.brand !== undefined) return target.brand === item.brand;
    if (target.category !== undefined) return item.categories.includes(target.category) || item.categories_above.includes(target.category);
    if (target.attribute) return (item.attributes[target.attribute.relation] || []).includes(target.attribute.value);
    return false;
  }

  async function fields() {
    const [answer, rules] = await Promise.all([K.get(base), K.get("/rules")]);
    if (!answer.ok) {
      K.fill("fields", K.problem(answer, "Item"));
      K.fill("rules");
      return;
    }
    const item = answer.body;
    const live = item.available && (item.delisted_at === null || item.delisted_at > Date.now()) && (item.listed_at === null || item.listed_at <= Date.now());
    const SHOWN = 12;
    const attributes = Object.entries(item.attributes).map(([relation, values]) => field(relation,
      values.length > SHOWN ? `${values.slice(0, SHOWN).join(", ")} … (${values.length} in all)` : values.join(", ")));
    K.fill("fields",
      field("Title", item.title),
      field("Availability", K.el("span", { class: live ? "ok" : "bad" }, live ? "recommendable" : "not recommended (unavailable, delisted or not yet listed)")),
      field("Brand", item.brands.join(", ")),
      field("Categories", item.categories.join(" › ")),
      field("Price", item.price === null ? null : `${K.number(item.price, 2)} ${item.currency || ""}`),
      field("Stock", item.stock),
      field("In the catalogue", item.listed ? "yes" : "no (only a co-purchase target)"),
      field("Listed from", item.listed_at ? K.when(item.listed_at) : null),
      field("Delisted at", item.delisted_at ? K.when(item.delisted_at) : null),
      attributes);
    if (!rules.ok) return K.fill("rules", K.el("li", {}, K.problem(rules, "Rules")));
    const mine = rules.body.rules.filter((r) => touches(r, item));
    K.fill("rules", mine.length ? mine.map((r) => K.el("li", {},
      K.el("strong", {}, r.action), ` ${r.id}`, r.factor ? ` ×${r.factor}` : "", r.position ? ` at position ${r.position}` : "",
      r.active && !r.expired ? "" : K.el("span", { class: "muted" }, r.expired ? " (ended)" : " (not started)")))
      : K.el("li", { class: "muted" }, "No rule applies to this item, its brand, categories (or those above them) or attributes."));
  }

  async function neighbourhood() {
    const answer = await K.get(`${base}/neighbourhood?limit=24&per_node=2`);
    if (!answer.ok) return K.fill("hood-meta", K.problem(answer, "Neighbourhood"));
    const { nodes, relationships } = answer.body;
    const centre = `Item:${itemId}`;
    const depth = KGraph.hops(centre, relationships);
    nodes.forEach((n) => { n.centre = n.key === centre; });
    await KGraph.draw("hood-graph", nodes, relationships, {
      name: "concentric", concentric: (n) => 3 - (depth.get(n.id()) ?? 2), levelWidth: () => 1, minNodeSpacing: 24, padding: 16, animate: false,
    }, relationships.length <= 30);
    K.fill("hood-meta", `${nodes.length} nodes, ${relationships.length} relationships.`);
    const ORDER = ["Brand", "Category", "Entity", "Topic", "User", "Item"];
    const other = (r) => (r.source === centre ? r.target : r.source);
    const rank = (r) => ORDER.indexOf(other(r).split(":")[0]);
    const direct = relationships.filter((r) => r.source === centre || r.target === centre).sort((a, b) => rank(a) - rank(b));
    const byKey = new Map(nodes.map((n) => [n.key, n]));
    const users = direct.map((r) => byKey.get(other(r))).filter((n) => n.label === "User");
    K.fill("who", users.length ? users.map((u) => K.el("li", {}, K.userLink(u.id))) : K.el("li", { class: "muted" }, "Nobody in the shown neighbourhood."));
    K.fill("neighbours", direct.filter((r) => byKey.get(other(r)).label !== "User").map((r) => {
      const node = byKey.get(other(r));
      const name = node.label === "Item" ? K.itemLink(node.id, node.name) : `${node.name}`;
      return K.el("li", {}, K.el("span", { class: `badge ${node.label}` }, node.label), ` ${r.source === centre ? "→" : "←"} ${r.relation || r.type} `, name);
    }));
  }

  async function similar() {
    const answer = await K.get(`${base}/similar?k=10&record=false`);
    if (!answer.ok) return K.fill("similar", K.el("li", {}, K.problem(answer, "Similar items")));
    K.fill("similar", answer.body.items.map((s) => K.el("li", {}, K.itemLink(s.item_id), K.el("span", { class: "muted small" }, ` cosine ${K.number(s.score)}`))));
  }

  Promise.all([fields(), neighbourhood(), similar()]).then(K.ready);
})();
