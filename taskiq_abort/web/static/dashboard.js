// taskiq-abort dashboard: polls the operator API every second and renders with textContent
// only (no HTML parsing of data), so a task named "<script>" is shown as text.
"use strict";
(() => {
  const POLL_MS = 1000;
  const RULES_EVERY = 5;  // polls: rules change seldom, and each listing reads every rule
  const RULES_SHOWN = 50;
  const readOnly = document.body.dataset.readOnly === "true";
  const api = (path) => new URL(path, document.baseURI).toString();
  const $ = (id) => document.getElementById(id);
  const state = { offset: 0, limit: 100, name: "", worker: "", seen: new Map(), updated: 0, polls: 0 };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function duration(s) {
    s = Math.max(0, s);
    if (s < 60) return s.toFixed(1) + "s";
    const w = Math.floor(s);
    if (w < 3600) return Math.floor(w / 60) + "m" + String(w % 60).padStart(2, "0") + "s";
    if (w < 86400) return Math.floor(w / 3600) + "h" + String(Math.floor((w % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(w / 86400) + "d" + String(Math.floor((w % 86400) / 3600)).padStart(2, "0") + "h";
  }

  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(api(path), init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
      throw new Error(detail || response.status + " " + response.statusText);
    }
    return data;
  }

  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  function replaceRows(tbody, rows) {
    const fragment = document.createDocumentFragment();
    rows.forEach((row) => fragment.appendChild(row));
    tbody.replaceChildren(fragment);
  }

  function renderWorkers(data) {
    const now = Date.now() / 1000;
    const live = new Set();
    for (const w of data.workers) {
      live.add(w.worker_id);
      state.seen.set(w.worker_id, { info: w, goneAt: null });
    }
    for (const [id, entry] of state.seen) {
      if (!live.has(id) && entry.goneAt === null) entry.goneAt = now;
    }
    const rows = [];
    for (const [id, entry] of state.seen) {
      const w = entry.info;
      const tr = el("tr");
      tr.dataset.worker = id;
      tr.append(el("td", id, "id"), el("td", w.host), el("td", w.pid));
      tr.append(el("td", entry.goneAt === null ? duration(w.up_s) : "-"));
      tr.append(el("td", entry.goneAt === null ? w.running : "-"));
      tr.append(entry.goneAt === null
        ? el("td", "live", "alive")
        : el("td", "gone " + duration(now - entry.goneAt) + " ago (lease expired)", "gone"));
      rows.push(tr);
    }
    replaceRows($("workers").tBodies[0], rows);
    $("workers-summary").textContent =
      data.workers.length + " live, " + data.running + " running task" + (data.running === 1 ? "" : "s");
  }

  // Its indexed labels (the tree labels aside) and the task that kicked it, if one did.
  function labelsCell(t) {
    const parts = [];
    for (const [key, value] of Object.entries(t.labels || {})) {
      if (key !== "abort_parent" && key !== "abort_root") parts.push(key + "=" + value);
    }
    if (t.parent) parts.push("parent " + t.parent);
    const cell = el("td", parts.length ? parts.join(", ") : "-", "labels");
    cell.title = parts.join("\n");
    return cell;
  }

  function renderTasks(page) {
    const rows = [];
    let group = null;
    for (const t of page.tasks) {
      if (t.worker !== group) {
        group = t.worker;
        const head = el("tr", undefined, "group");
        const cell = el("td", t.worker + " · " + t.host + " pid " + t.pid);
        cell.colSpan = 6;
        head.appendChild(cell);
        rows.push(head);
      }
      const tr = el("tr");
      tr.dataset.taskId = t.task_id;
      const name = el("td", t.task_name, "name");
      name.title = t.task_name;  // the whole name, when the cell cuts it
      const running = el("td", duration(t.running_for_s) +
        (t.time_left_s === null || t.time_left_s === undefined ? "" : " (" + duration(t.time_left_s) + " left)"));
      const limits = [];
      if (t.soft_time_limit_s != null) limits.push("soft time limit " + t.soft_time_limit_s + " s");
      if (t.time_limit_s != null) limits.push("time limit " + t.time_limit_s + " s");
      if (limits.length) running.title = limits.join(", ");
      tr.append(el("td", t.task_id, "id"), name, running, labelsCell(t));
      tr.append(t.abort_requested
        ? el("td", "requested" + (t.abort_reason ? ": " + t.abort_reason : ""), "status-requested")
        : el("td", "-"));
      const action = el("td", undefined, "writes");
      if (!readOnly) {
        const button = el("button", "Abort", "danger abort");
        button.type = "button";
        button.addEventListener("click", () => abortOne(t));
        action.appendChild(button);
      }
      tr.appendChild(action);
      rows.push(tr);
    }
    replaceRows($("tasks").tBodies[0], rows);
    const last = Math.min(page.offset + page.tasks.length, page.total);
    $("page-info").textContent = page.total ? (page.offset + 1) + "–" + last + " of " + page.total : "none";
    $("tasks-summary").textContent = page.total + " matching";
    $("prev").disabled = page.offset === 0;
    $("next").disabled = last >= page.total;
    if (page.offset > 0 && page.offset >= page.total) {
      state.offset = Math.max(0, page.total - state.limit);  // the last page emptied
    }
  }

  function renderOutcomes(data) {
    const rows = data.outcomes.map((o) => {
      const tr = el("tr");
      tr.dataset.taskId = o.task_id;
      tr.append(
        el("td", new Date(o.at * 1000).toLocaleTimeString()),
        el("td", o.task_id, "id"),
        el("td", o.status, "status status-" + o.status),
        el("td", o.worker || "-"),
        el("td", o.reason || ""),
        el("td", o.elapsed_ms.toFixed(1) + " ms"),
      );
      return tr;
    });
    replaceRows($("outcomes").tBodies[0], rows);
  }

  // Each refuses the matching tasks at their start until it expires (abort-where, cascades).
  function renderRules(data) {
    const now = Date.now() / 1000;
    const rows = data.rules.map((r) => {
      const tr = el("tr");
      tr.dataset.ruleId = r.rule_id;
      const matches = Object.entries(r.labels).map(([k, v]) => k + "=" + v);
      if (r.task_name) matches.push("name " + r.task_name);
      tr.append(
        el("td", r.rule_id, "id"),
        el("td", duration(r.expires_at - now)),
        el("td", matches.join(", "), "labels"),
        el("td", r.reason),
      );
      const action = el("td", undefined, "writes");
      if (!readOnly) {
        const button = el("button", "Cancel rule", "cancel-rule");
        button.type = "button";
        button.addEventListener("click", () => cancelRule(r, matches.join(", ")));
        action.appendChild(button);
      }
      tr.appendChild(action);
      return tr;
    });
    replaceRows($("rules").tBodies[0], rows);
    const more = data.total > data.rules.length ? " (the " + data.rules.length + " expiring soonest shown)" : "";
    $("rules-summary").textContent = data.total ? data.total + " in force" + more : "none";
  }

  // Apart from the rest of the poll: a failure here leaves the other panels updating.
  async function pollRules() {
    try {
      renderRules(await call("GET", "rules?limit=" + RULES_SHOWN));
    } catch (error) {
      $("rules-summary").textContent = "cannot list the rules: " + error.message;
    }
  }

  async function cancelRule(rule, matches) {
    if (!window.confirm("Cancel rule " + rule.rule_id + " (" + matches + ")? Matching tasks that start from now on will run.")) return;
    try {
      await call("POST", "rules/" + encodeURIComponent(rule.rule_id) + "/cancel", {});
      toast("rule " + rule.rule_id + " cancelled");
      pollRules();  // at once, not at the next rules poll
    } catch (error) {
      toast("cancelling the rule failed: " + error.message);
    }
  }

  function tasksQuery() {
    const q = new URLSearchParams({ offset: state.offset, limit: state.limit });
    if (state.name) q.set("name", state.name);
    if (state.worker) q.set("worker", state.worker);
    return "tasks?" + q;
  }

  // A poll starts every second (not a second after the last one ended): at most ~1 s stale.
  async function poll() {
    const began = Date.now();
    try {
      const rules = state.polls++ % RULES_EVERY === 0 ? pollRules() : null;
      const [workers, page, outcomes] = await Promise.all([
        call("GET", "workers"), call("GET", tasksQuery()), call("GET", "outcomes?limit=50"),
      ]);
      renderWorkers(workers);
      renderTasks(page);
      renderOutcomes(outcomes);
      await rules;
      state.updated = Date.now();
      $("live").textContent = "live · updated every second";
      $("live").className = "live";
    } catch (error) {
      $("live").textContent = "not updating: " + error.message;
      $("live").className = "live stale";
    } finally {
      setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - began)));
    }
  }

  // One dialog asks for the reason and the confirmation; resolves to the reason, or null.
  function confirmAbort(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-reason").value = "";
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "ok" ? $("confirm-reason").value : null);
      }, { once: true });
    });
  }

  async function abortOne(task) {
    const reason = await confirmAbort('Abort task "' + task.task_name + '" (' + task.task_id + ") on " + task.worker + "?");
    if (reason === null) return;
    try {
      const outcome = await call("POST", "tasks/" + encodeURIComponent(task.task_id) + "/abort", { reason: reason || null, wait: true });
      toast(outcome.task_id + ": " + outcome.status);
    } catch (error) {
      toast("abort failed: " + error.message);
    }
  }

  async function abortByName(name) {
    let matched;
    try {
      matched = (await call("GET", "tasks?limit=1&name=" + encodeURIComponent(name))).total;
    } catch (error) {
      toast("cannot count the tasks: " + error.message);
      return;
    }
    if (!matched) {
      toast('no running task named "' + name + '"');
      return;
    }
    const reason = await confirmAbort("Abort all " + matched + ' running tasks named "' + name + '"?');
    if (reason === null) return;
    try {
      const result = await call("POST", "tasks/abort", { task_name: name, confirm: true, reason: reason || null });
      const counts = Object.entries(result.counts).filter(([, n]) => n).map(([k, n]) => n + " " + k);
      toast('"' + name + '": ' + (counts.join(", ") || "nothing to abort"));
    } catch (error) {
      toast("bulk abort failed: " + error.message);
    }
  }

  function bind() {
    const refilter = () => {
      state.name = $("filter-name").value.trim();
      state.worker = $("filter-worker").value.trim();
      state.offset = 0;
    };
    $("filter-name").addEventListener("input", refilter);
    $("filter-worker").addEventListener("input", refilter);
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("page-size").addEventListener("change", () => { state.limit = Number($("page-size").value); state.offset = 0; });
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); });
    $("next").addEventListener("click", () => { state.offset += state.limit; });
    $("bulk").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("bulk-name").value.trim();
      if (name) abortByName(name);
    });
  }

  bind();
  poll();
})();
