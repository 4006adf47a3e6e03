// The Soloist dashboard page: polls the JSON API and builds the DOM with textContent only,
// so whatever a task's arguments or errors hold is shown as text, never run.
"use strict";

const state = { csrf: "", readOnly: true, refresh: 2, deadCounts: "", deadRead: 0, task: "" };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function ago(seconds) {
  seconds = Math.max(seconds, 0);
  if (seconds < 90) return seconds.toFixed(0) + "s";
  if (seconds < 5400) return (seconds / 60).toFixed(0) + "m";
  return (seconds / 3600).toFixed(1) + "h";
}

function num(value) { return value === null || value === undefined ? "?" : value.toLocaleString(); }

function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : ""; }

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "content-type": "application/json", "x-soloist-csrf": state.csrf },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401 && body === undefined) {
    window.location.assign("/login");
    throw new Error("log in first");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function td(text, cls) { return el("td", text, cls); }

function taskLink(id) {
  const cell = el("td");
  if (!id) { cell.textContent = "?"; return cell; }
  const a = el("a", id);
  a.href = "#task=" + encodeURIComponent(id);
  cell.append(a);
  return cell;
}

function spark(svg, values) {
  const max = Math.max(1, ...values);
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  const step = width / Math.max(values.length - 1, 1);
  const points = values.map((v, i) =>
    (i * step).toFixed(1) + "," + (height - 2 - (v / max) * (height - 4)).toFixed(1));
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.replaceChildren(line);
}

function showOverview(data) {
  replaceRows($("queues").tBodies[0], data.queues.map((q) => row([
    td(q.queue), td(num(q.depth), "num"), td(num(q.delayed), "num"),
    td(num(q.in_flight), "num"), td(num(q.dead), "num"), td(num(q.lost), "num"),
  ])));
  replaceRows($("workers").tBodies[0], data.workers.map((w) => {
    const running = el("td", null, "text");
    if (!w.running.length) running.textContent = "idle";
    w.running.forEach((r, i) => {
      if (i) running.append(", ");
      running.append(r.task + " ");
      const a = el("a", r.id);
      a.href = "#task=" + encodeURIComponent(r.id);
      running.append(a, " for " + ago(r.for));
    });
    const seen = ago(data.time - w.last_seen) + " ago";
    return row([
      td(w.id), td(w.host || "?"), td(w.pid || "?", "num"),
      td(w.concurrency ? w.pool + " x" + w.concurrency : w.pool), running,
      td(num(w.done), "num"), td(num(w.failed), "num"), td(w.gone ? "gone (" + seen + ")" : seen),
    ], w.gone ? "gone" : "");
  }));
  spark($("spark-done"), data.throughput.done);
  spark($("spark-failed"), data.throughput.failed);
  $("done-total").textContent = data.throughput.done.reduce((a, b) => a + b, 0) + " in the hour";
  $("failed-total").textContent = data.throughput.failed.reduce((a, b) => a + b, 0) + " in the hour";
  $("updated").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
  // Dead letters are read again only when a queue's count changed (or every 30 s).
  const counts = data.queues.map((q) => q.queue + ":" + q.dead).join(",");
  if (counts !== state.deadCounts || Date.now() - state.deadRead > 30000) {
    state.deadCounts = counts;
    loadDead();
  }
}

async function confirmAct(question, path, body) {
  if (!window.confirm(question)) return;
  try {
    await call(path, body);
    $("problem").textContent = "";
  } catch (err) {
    $("problem").textContent = err.message;
  }
  state.deadCounts = "";
  await poll();
}

async function loadDead() {
  state.deadRead = Date.now();
  const letters = await call("/api/dead-letters");
  replaceRows($("dead").tBodies[0], letters.map((d) => {
    const buttons = el("td");
    const show = el("button", "Show");
    show.type = "button";
    show.addEventListener("click", () => showLetter(d.queue, d.id));
    buttons.append(show);
    if (!state.readOnly) {
      const requeue = el("button", "Requeue", "requeue");
      requeue.type = "button";
      requeue.addEventListener("click", () => confirmAct(
        "Requeue dead letter " + d.id + " (" + (d.task || "?") + ")?",
        "/api/dead-letters/requeue", { queue: d.queue, ids: [d.id] }));
      const drop = el("button", "Drop", "drop");
      drop.type = "button";
      drop.addEventListener("click", () => confirmAct(
        "Drop dead letter " + d.id + " for good?",
        "/api/dead-letters/drop", { queue: d.queue, ids: [d.id] }));
      buttons.append(" ", requeue, " ", drop);
    }
    return row([
      td(d.id), td(d.queue), td(d.task || "?"), taskLink(d.task_id),
      td(d.args === null ? "(" + d.size + " bytes, undecodable)" : d.args, "text"),
      td(d.reason, "text"), td(d.delivery_count, "num"), td(when(d.dead_at)), buttons,
    ], "letter");
  }));
}

async function showLetter(queue, id) {
  const letter = await call("/api/dead-letters/" + encodeURIComponent(queue) + "/" +
    encodeURIComponent(id));
  $("letter").textContent = JSON.stringify(letter, null, 2);
  $("letter").hidden = false;
}

async function settleAll(requeue) {
  const queues = state.deadCounts.split(",").map((c) => c.split(":"))
    .filter((c) => c.length === 2 && Number(c[1]) > 0).map((c) => c[0]);
  const total = state.deadCounts.split(",").reduce((n, c) => n + (Number(c.split(":")[1]) || 0), 0);
  if (!queues.length) return;
  const verb = requeue ? "Requeue" : "Drop";
  if (!window.confirm(verb + " all " + total + " dead letters of " + queues.join(", ") + "?")) return;
  try {
    for (const queue of queues) {
      await call("/api/dead-letters/" + (requeue ? "requeue" : "drop"), { queue, ids: null });
    }
    $("problem").textContent = "";
  } catch (err) {
    $("problem").textContent = err.message;
  }
  state.deadCounts = "";
  await poll();
}

async function loadSchedules() {
  const schedules = await call("/api/schedules");
  $("schedules-section").hidden = !schedules.length;
  replaceRows($("schedules").tBodies[0], schedules.map((s) => row([
    td(s.name), td(s.schedule + (s.catch_up ? ", catch up" : "")), td(s.queue),
    td(s.next.join("\n"), "text"), td(s.last ? s.last.tick : "-"),
    td(s.last ? s.last.worker : "-"),
  ])));
}

async function showTask(id) {
  state.task = id;
  if (!id) { $("task").hidden = true; return; }
  const t = await call("/api/tasks/" + encodeURIComponent(id));
  if (state.task !== id) return;
  $("task-tid").textContent = t.id;
  $("task-state").textContent = t.state;
  $("task-done").textContent = when(t.done);
  $("task-running").textContent = t.running.map((r) =>
    r.worker + " (" + (r.host || "?") + ") for " + ago(r.for)).join(", ") || "-";
  $("task-args").textContent = t.dead_letter ? t.dead_letter.args : "(kept only while a dead letter holds it)";
  const follows = t.dead_letter && t.dead_letter.workflow;
  $("task-workflow").replaceChildren();
  if (!follows) $("task-workflow").textContent = t.dead_letter ? "-" : "(known while a dead letter holds it)";
  (follows || []).forEach((step, i) => {
    if (i) $("task-workflow").append(el("br"));
    $("task-workflow").append(step.as + ": " + step.task + " ");
    if (step.id) {
      const a = el("a", step.id);
      a.href = "#task=" + encodeURIComponent(step.id);
      $("task-workflow").append(a);
    }
  });
  $("task-value").textContent = t.value !== undefined ? t.value : (t.record || "");
  $("task-error").textContent = t.error ?
    t.error.type + ": " + t.error.message + "\n\n" + t.error.traceback : "";
  const final = ["SUCCESS", "FAILURE", "REVOKED"].includes(t.state);
  $("revoke").disabled = final;
  $("terminate").disabled = final;
  $("task").hidden = false;
}

function taskFromHash() {
  const match = /^#task=(.*)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : "";
}

async function poll() {
  try {
    const overview = await call("/api/overview");
    showOverview(overview);
    if (state.task) await showTask(state.task);
    $("problem").textContent = overview.error ? "cannot read: " + overview.error : "";
  } catch (err) {
    $("problem").textContent = "cannot read: " + err.message;
  }
}

async function start() {
  const session = await call("/api/session");
  state.csrf = session.csrf;
  state.readOnly = session.read_only;
  state.refresh = Math.max(session.refresh, 1);
  $("app").textContent = session.app;
  $("broker").textContent = session.broker;
  $("mode").hidden = !session.read_only;
  $("logout").hidden = !session.auth;
  for (const node of document.querySelectorAll("[data-action]")) node.hidden = session.read_only;
  $("requeue-all").addEventListener("click", () => settleAll(true));
  $("drop-all").addEventListener("click", () => settleAll(false));
  $("revoke").addEventListener("click", () => confirmAct(
    "Revoke task " + state.task + "?", "/api/tasks/" + encodeURIComponent(state.task) + "/revoke",
    { terminate: false }));
  $("terminate").addEventListener("click", () => confirmAct(
    "Revoke task " + state.task + " and stop it if it runs?",
    "/api/tasks/" + encodeURIComponent(state.task) + "/revoke", { terminate: true }));
  $("lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = "task=" + encodeURIComponent($("task-id").value.trim());
  });
  window.addEventListener("hashchange", () => showTask(taskFromHash()).catch((err) => {
    $("problem").textContent = err.message;
  }));
  state.task = taskFromHash();
  await poll();
  window.setInterval(poll, state.refresh * 1000);
  // Schedules change only with the code; their last ticks are read every 30 s.
  const schedules = () => loadSchedules().catch((err) => { $("problem").textContent = err.message; });
  schedules();
  window.setInterval(schedules, 30000);
}

start().catch((err) => { $("problem").textContent = err.message; });
