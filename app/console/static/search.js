// Search: GET /v1/search?q=&kind= ; users and items link to their pages.
"use strict";

(() => {
  const form = document.getElementById("search-form");
  const input = document.getElementById("q");
  const kind = document.getElementById("kind");
  const status = document.getElementById("search-status");
  const list = document.getElementById("search-results");
  const SHOWN = 30;
  const params = new URLSearchParams(location.search);
  // A kind the list lacks is still sent as given, so the API's refusal shows instead of "any".
  const asked = params.get("kind") || "";
  kind.value = asked;
  const kindOf = () => (kind.value || (kind.selectedIndex < 0 ? asked : ""));

  function hit(result) {
    let target;
    if (result.label === "User") target = K.userLink(result.id);
    else if (result.label === "Item") target = K.itemLink(result.id, result.name);
    else target = K.el("span", {}, result.name !== result.id ? `${result.name} (${result.id})` : result.id);
    return K.el("li", {}, K.el("span", { class: `badge ${result.label}` }, result.label), " ", target);
  }

  async function run(query, kindValue) {
    if (!query) { K.ready(); return; }
    status.textContent = "Searching…";
    // One more than is shown: a 31st result says the list is cut, so the page never passes 30 off as all.
    const qs = new URLSearchParams({ q: query, limit: String(SHOWN + 1) });
    if (kindValue) qs.set("kind", kindValue);
    const answer = await K.get(`/search?${qs}`);
    if (!answer.ok) {
      K.fill(list);
      // 401: search lists users, so a server with admin keys (or keyed reads) answers signed-in operators only.
      if (answer.status === 401) status.textContent = "Not searched: this server searches for signed-in operators only (sign in).";
      else status.textContent = answer.body && answer.body.detail ? `Not searched: ${answer.body.detail}` : `Search failed (${answer.status}).`;
    } else {
      const results = answer.body.results.slice(0, SHOWN);
      const more = answer.body.results.length > SHOWN;
      status.textContent = more ? `More than ${SHOWN} results for “${query}”: the first ${SHOWN} are shown (narrow the search or pick a kind).`
        : results.length ? `${results.length} result(s) for “${query}”.` : `Nothing matches “${query}”.`;
      K.fill(list, results.map(hit));
    }
    K.ready();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = input.value.trim();
    const url = new URL(location.href);
    url.searchParams.set("q", query);
    if (kindOf()) url.searchParams.set("kind", kindOf()); else url.searchParams.delete("kind");
    history.replaceState(null, "", url);
    run(query, kindOf());
  });

  run(input.value.trim(), kindOf());
})();
