// funnelsync dashboard, Automations panel: the rules, their last 24 hours, and the failed deliveries with
// a Replay button. Reads /v1/automations, /v1/automation_activity and /v1/automation_deliveries; replays
// through POST /v1/automation_deliveries/{id}/replay with the session's CSRF token.
// Every value from the API goes into the page as text (textContent), never as markup: rule conditions,
// message templates and receivers' error answers are written by people and machines outside our control.
// Secrets are never shown: a webhook's signing secret is left out, a URL is shown by its host only (a
// path or query may carry a token), and a Slack URL not at all.
"use strict";

(() => {
  const HOURS = 24;
  const RULE_KEYS = new Set(["name", "trigger", "where", "backfill", "actions", "applied_at", "updated_at"]);
  const REFERENCE = /^(env|prefect-secret|local-secret):/;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function csrfToken() {
    const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("fs_csrf="));
    return found ? decodeURIComponent(found.slice("fs_csrf=".length)) : "";
  }

  async function call(method, path) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
    const response = await fetch(path, { method, credentials: "same-origin", headers });
    if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) throw new Error(`${response.status} ${(body && body.message) || response.statusText}`);
    return body;
  }

  function host(url) {
    if (typeof url !== "string" || REFERENCE.test(url)) return "a URL from a secret";
    try { return new URL(url).host; } catch (_) { return "?"; }
  }

  // One action in a line of text, without its secrets.
  function describeAction(action) {
    const [kind, spec] = Object.entries(action)[0] || ["?", {}];
    if (kind === "webhook") return `webhook to ${host(spec.url)}`;
    if (kind === "slack") return `slack: ${spec.text || ""}`;
    if (kind === "set") return "set " + Object.entries(spec || {}).map(([k, v]) => `${k} = ${v}`).join(", ");
    if (kind === "run_deployment") return `run deployment ${spec.name}`;
    if (kind === "merge") return "merge the duplicates";
    return kind;
  }

  function describeTrigger(rule) {
    const params = Object.entries(rule).filter(([k]) => !RULE_KEYS.has(k)).map(([k, v]) => `${k}: ${v}`);
    return rule.trigger + (params.length ? ` (${params.join(", ")})` : "") + (rule.backfill ? ", backfilled" : "");
  }

  function table(id, headings) {
    const wrap = el("div", null, "scroll");
    const t = el("table");
    t.id = id;
    const row = el("tr");
    headings.forEach(([text, cls]) => row.appendChild(el("th", text, cls)));
    t.appendChild(el("thead")).appendChild(row);
    t.appendChild(el("tbody"));
    wrap.appendChild(t);
    return [wrap, t.tBodies[0]];
  }

  function cell(row, text, cls) {
    row.appendChild(el("td", text, cls));
  }

  function build(section) {
    section.replaceChildren();
    const heading = el("h2", "Automations");
    heading.appendChild(el("small", `last ${HOURS} hours`));
    section.appendChild(heading);
    const status = el("p", null, "automation-status");
    status.id = "automation-status";
    status.setAttribute("role", "status");
    section.appendChild(status);
    const [rulesWrap, rulesBody] = table("automation-rules", [
      ["Name"], ["Trigger"], ["Where"], ["Actions"], ["Detected", "num"], ["Delivered", "num"], ["Failed", "num"],
    ]);
    section.appendChild(rulesWrap);
    section.appendChild(el("h3", "Failed deliveries"));
    const [failedWrap, failedBody] = table("automation-failed", [
      ["Delivery"], ["Automation"], ["Customer"], ["Action"], ["Attempts", "num"], ["Last error"], [""],
    ]);
    section.appendChild(failedWrap);
    return { status, rulesBody, failedBody };
  }

  function showRules(body, rules, activity) {
    body.replaceChildren();
    const counts = new Map(activity.map((a) => [a.automation, a]));
    if (!rules.length) {
      const row = el("tr");
      const td = el("td", "No automations yet: funnelsync automations apply FILE stores them.", "empty");
      td.colSpan = 7;
      row.appendChild(td);
      body.appendChild(row);
    }
    for (const rule of rules) {
      const row = el("tr");
      row.dataset.automation = rule.name;
      cell(row, rule.name);
      cell(row, describeTrigger(rule));
      cell(row, rule.where || "–");
      const actions = el("td");
      (rule.actions || []).forEach((a) => actions.appendChild(el("div", describeAction(a))));
      row.appendChild(actions);
      const c = counts.get(rule.name) || {};
      cell(row, c.detected || 0, "num");
      cell(row, c.delivered || 0, "num");
      cell(row, c.failed || 0, "num");
      body.appendChild(row);
    }
  }

  function showFailed(view, deliveries, refresh) {
    const body = view.failedBody;
    body.replaceChildren();
    if (!deliveries.length) {
      const row = el("tr");
      const td = el("td", "No failed deliveries.", "empty");
      td.colSpan = 7;
      row.appendChild(td);
      body.appendChild(row);
      return;
    }
    for (const d of deliveries) {
      const row = el("tr");
      row.dataset.delivery = d.id;
      cell(row, d.id, "mono");
      cell(row, d.automation);
      cell(row, d.customer, "mono");
      cell(row, d.kind);
      cell(row, d.attempts, "num");
      cell(row, d.last_error || "", "automation-error");
      const td = el("td");
      const button = el("button", "Replay", "replay");
      button.type = "button";
      button.addEventListener("click", async () => {
        button.disabled = true;
        view.status.textContent = `Replaying ${d.id}…`;
        try {
          const done = await call("POST", `/v1/automation_deliveries/${encodeURIComponent(d.id)}/replay`);
          const after = (done.deliveries || [])[0] || {};
          view.status.textContent = after.status === "delivered"
            ? `${d.id}: delivered.` : `${d.id}: not delivered (${after.status}): ${after.last_error || ""}`;
        } catch (error) {
          view.status.textContent = `${d.id}: replay refused: ${error.message}`;
        }
        await refresh(false);
      });
      td.appendChild(button);
      row.appendChild(td);
      body.appendChild(row);
    }
  }

  async function start() {
    const section = document.getElementById("automations");
    if (!section) return;
    const view = build(section);
    const refresh = async (clearStatus) => {
      try {
        const [rules, activity, failed] = await Promise.all([
          call("GET", "/v1/automations"),
          call("GET", `/v1/automation_activity?hours=${HOURS}`),
          call("GET", "/v1/automation_deliveries?status=failed&limit=100"),
        ]);
        showRules(view.rulesBody, rules.entries, activity.entries);
        showFailed(view, failed.entries, refresh);
        if (clearStatus) view.status.textContent = "";
      } catch (error) {
        view.status.textContent = `Automations could not be read: ${error.message}`;
      }
      section.dataset.loaded = "true";
    };
    await refresh(true);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
