// Models: GET /v1/models, promote (a console form that calls POST /v1/models/{version}/promote), training progress.
"use strict";

(() => {
  const state = document.getElementById("models-state");
  const signedIn = document.body.dataset.signedIn === "true";
  const csrf = state.dataset.csrf;

  function metrics(values) {
    const entries = Object.entries(values || {}).filter(([, v]) => typeof v === "number").slice(0, 4);
    return entries.length ? entries.map(([k, v]) => `${k} ${K.number(v, 4)}`).join(", ") : "–";
  }

  function gate(decision) {
    if (!decision) return "–";
    return K.el("span", { title: decision.reason || "" }, `${decision.decision}${decision.reason ? `: ${decision.reason}` : ""}`);
  }

  function promoteForm(version) {
    return K.el("form", { method: "post", action: `/console/models/${K.enc(version)}/promote`, class: "inline" },
      K.el("input", { type: "hidden", name: "csrf_token", value: csrf }),
      K.el("button", { type: "submit", class: "promote", "data-version": version, "aria-label": `Promote ${version}` }, "Promote"));
  }

  async function versions() {
    const answer = await K.get("/models");
    const status = document.getElementById("models-status");
    const body = document.querySelector("#versions tbody");
    if (!answer.ok) {
      K.fill(status, answer.status === 404 || answer.status === 405
        ? K.el("span", { id: "models-unavailable" }, "Model versions are not available on this server yet (GET /v1/models answered 404).")
        : K.problem(answer, "Model versions"));
      return;
    }
    const list = Array.isArray(answer.body) ? answer.body : answer.body.versions || answer.body.models || [];
    status.textContent = `${list.length} version(s).`;
    K.fill(body, list.map((v) => {
      const version = v.version || v.id;
      const active = v.status === "active" || v.active === true;
      return K.el("tr", { "data-version": version, class: active ? "active" : null },
        K.el("th", { scope: "row" }, K.el("code", {}, version)),
        K.el("td", {}, K.el("span", { class: `status ${v.status || ""}` }, v.status || (active ? "active" : "–"))),
        K.el("td", {}, K.when(v.created_at)),
        K.el("td", { class: "small" }, metrics(v.metrics)),
        K.el("td", { class: "small" }, gate(v.gate)),
        K.el("td", {}, K.bytes(v.artifact_bytes)),
        K.el("td", {}, signedIn && !active && v.status !== "writing" ? promoteForm(version) : ""));
    }));
  }

  async function follow(jobId) {
    const target = document.getElementById("job");
    for (;;) {
      const answer = await K.get(`/jobs/${K.enc(jobId)}`);
      if (!answer.ok) { K.fill(target, K.problem(answer, `Job ${jobId}`)); return; }
      const job = answer.body;
      const percent = job.percent === null || job.percent === undefined ? null : Math.round(job.percent);
      K.fill(target, K.el("p", {}, `Job ${job.id}: ${job.state}${job.stage ? ` · ${job.stage}` : ""}${percent === null ? "" : ` · ${percent}%`}`),
        percent === null ? null : K.el("progress", { max: "100", value: String(percent), "aria-label": "training progress" }),
        job.error ? K.el("p", { class: "error" }, job.error) : null);
      if (["SUCCESS", "FAILURE", "REVOKED"].includes(job.state)) { if (job.state === "SUCCESS") versions(); return; }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  versions().then(K.ready);
  if (state.dataset.jobId) follow(state.dataset.jobId);
})();
