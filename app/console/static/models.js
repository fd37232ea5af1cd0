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
        K.el("th", { scope: "row" }, K.el("code", {}, version),
          v.parent ? K.el("div", { class: "small parent" }, "update of ", K.el("code", {}, v.parent)) : null),
        K.el("td", {}, K.el("span", { class: `status ${v.status || ""}` }, v.status || (active ? "active" : "–"))),
        K.el("td", {}, K.when(v.created_at)),
        K.el("td", { class: "small" }, metrics(v.metrics)),
        K.el("td", { class: "small" }, gate(v.gate)),
        K.el("td", {}, K.bytes(v.artifact_bytes)),
        K.el("td", {}, signedIn && !active && v.status !== "writing" ? promoteForm(version) : ""));
    }));
  }

  // Who would run a training: the workers that answer a ping (GET /v1/queue).
  async function workers() {
    const answer = await K.get("/queue");
    const line = document.getElementById("workers");
    if (!answer.ok) { K.fill(line, K.problem(answer, "Workers")); return; }
    const names = answer.body.workers || [];
    line.textContent = !answer.body.broker ? "Workers: the job queue's broker does not answer; nothing would run a training."
      : names.length ? `Workers: ${names.length} up (${names.join(", ")}).`
      : "Workers: none answered a ping within half a second (busy, or not running); a training waits in the queue until one takes it.";
  }

  function outcome(result) {
    if (!result || !result.version) return null;
    const gateNote = result.gate ? ` · gate: ${result.gate.decision}${result.gate.reason ? ` (${result.gate.reason})` : ""}` : "";
    return K.el("p", { class: "small" }, "Trained ", K.el("code", {}, result.version), gateNote);
  }

  // Answers that say the service is away for now (the graph or job queue stalled or restarting: 503
  // with Retry-After; no answer at all while gunicorn restarts; a proxy's 502/504 meanwhile).
  const TRANSIENT = [0, 502, 503, 504];
  const RETRY_CAP_S = 30;
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Seconds before the next read after `failures` transient answers in a row: the server's
  // Retry-After, at least a doubling backoff (1, 2, 4, … s), at most RETRY_CAP_S.
  function retryDelay(answer, failures) {
    const backoff = 2 ** Math.min(failures - 1, 5);
    return Math.min(RETRY_CAP_S, Math.max(backoff, Math.ceil(answer.retryAfter || 0)));
  }

  // A job's state, stage and percent, read again every second until it ends (GET /v1/jobs/{id}).
  // While the service is away, the last state stays on screen under a line saying when it reads again.
  async function follow(jobId) {
    const target = document.getElementById("job");
    let shown = [];
    let failures = 0;
    for (;;) {
      const answer = await K.get(`/jobs/${K.enc(jobId)}`);
      if (!answer.ok && TRANSIENT.includes(answer.status)) {
        failures += 1;
        const delay = retryDelay(answer, failures);
        const why = answer.status === 0 ? "no answer from the server"
          : answer.body && answer.body.error ? answer.body.error : `status ${answer.status}`;
        const at = new Date(Date.now() + delay * 1000).toISOString().slice(11, 19);
        K.fill(target, shown, K.el("p", { id: "job-retry", class: "small muted" },
          `The service is unavailable for now (${why}); still following job ${jobId}: next try in ${delay} s (${at} UTC).`));
        await pause(delay * 1000);
        continue;
      }
      if (!answer.ok) { K.fill(target, K.problem(answer, `Job ${jobId}`)); return; }
      failures = 0;
      const job = answer.body;
      const percent = job.percent === null || job.percent === undefined ? null : Math.round(job.percent);
      target.dataset.state = job.state;
      shown = [K.el("p", {}, `Job ${job.id}: ${job.state}${job.stage ? ` · ${job.stage}` : ""}${percent === null ? "" : ` · ${percent}%`}`),
        percent === null ? null : K.el("progress", { max: "100", value: String(percent), "aria-label": "training progress" }),
        job.state === "SUCCESS" ? outcome(job.result) : null,
        job.error ? K.el("p", { class: "error" }, job.error) : null];
      K.fill(target, shown);
      if (["SUCCESS", "FAILURE", "REVOKED"].includes(job.state)) { if (job.state === "SUCCESS") versions(); return; }
      await pause(1000);
    }
  }

  versions().then(K.ready);
  workers();
  setInterval(workers, 5000); // a worker busy training can miss one ping
  if (state.dataset.jobId) follow(state.dataset.jobId);
})();
