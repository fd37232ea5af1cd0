// Audiences: GET /v1/audiences (one page at a time, with the cursor); the export is a signed-in form.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const status = document.getElementById("audience-status");
  const body = document.querySelector("#members tbody");
  const more = document.getElementById("more");
  let cursor = null;

  function query() {
    const qs = new URLSearchParams({ limit: "50" });
    qs.set(params.get("kind") || "brand", params.get("target") || "");
    for (const name of ["min_weight", "active_within_days"]) if (params.get(name)) qs.set(name, params.get(name));
    if (cursor) qs.set("cursor", cursor);
    return qs;
  }

  let loading = false;

  async function load() {
    if (loading) return;  // a second click before the page came back would fetch it twice
    loading = true;
    more.disabled = true;
    try {
      await loadPage();
    } finally {
      loading = false;
      more.disabled = false;
    }
  }

  async function loadPage() {
    const answer = await K.get(`/audiences?${query()}`);
    if (!answer.ok) {
      K.fill(status, K.problem(answer, "The audience"));
      more.hidden = true;
      return;
    }
    const page = answer.body;
    status.textContent = `${K.number(page.size, 0)} user(s) match; strongest first, weights decayed to ${K.when(page.as_of)}.`;
    body.append(...page.users.map((u) => K.el("tr", {},
      K.el("th", { scope: "row" }, K.userLink(u.user_id)),
      K.el("td", {}, K.number(u.weight)),
      K.el("td", {}, String(u.events)),
      K.el("td", {}, K.when(u.last_ts)))));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }

  more.addEventListener("click", load);
  if (params.get("target")) load().then(K.ready);
  else K.ready();
})();
