// The edge-ingest console: plain DOM, the public API, and uPlot. The token lives in sessionStorage
// (this tab only) and travels in the Authorization header, never in a URL.

const TOKEN_KEY = "edge-ingest-token";
const REFRESH_MS = 5000;
const MAX_REJECTIONS = 100;
/** One chart per metric of the agent (each with its own scale: metrics rarely share a unit), at most this many. */
const MAX_CHARTS = 6;
/** A burst of live readings redraws the charts once. */
const REDRAW_AFTER_MS = 1000;

const $ = (selector) => document.querySelector(selector);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  who: undefined,
  /** Viewer view: the chosen agent, its metrics, the chart window and a chart per metric. */
  agent: undefined,
  metrics: [],
  windowMs: 3_600_000,
  /** The window the charts show now, in seconds (uPlot's time unit). */
  range: [0, 0],
  charts: new Map(),
  redraw: undefined,
  /** Counts by reason of the tenant's kept refusals, and how many hours they cover. */
  rejectionCounts: new Map(),
  rejectionHours: 24,
  /** Admin view: the chosen tenant. */
  tenant: undefined,
  timers: [],
  stream: undefined,
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return undefined;
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, payload.error?.message ?? `HTTP ${response.status}`);
  return payload;
}

/** Builds an element: `el("td", {className: "x"}, "text", child)`; text is never parsed as HTML. */
function el(tag, properties = {}, ...children) {
  const element = Object.assign(document.createElement(tag), properties);
  for (const child of children) element.append(child instanceof Node ? child : String(child ?? ""));
  return element;
}

function fillTable(table, rows) {
  table.querySelector("tbody").replaceChildren(...rows);
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

const time = (iso) => new Date(iso).toLocaleTimeString();

/** Shows when a polled panel was last refreshed. */
function stamp(selector) {
  $(selector).textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function every(ms, task) {
  const run = () => task().catch(showFailure);
  run();
  state.timers.push(setInterval(run, ms));
}

function showFailure(error) {
  if (error instanceof ApiError && error.status === 401)
    return signOut("Your token was revoked or is no longer valid.");
  const target = state.who?.kind === "admin" ? $("#admin-error") : $("#sign-in-error");
  target.textContent = error.message;
}

// ---- sign-in ----------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    state.who = await api("/api/v1/whoami");
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("#sign-in-error").textContent =
      error instanceof ApiError && error.status === 401 ? "That token is unknown or revoked." : error.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#sign-in").hidden = true;
  $("#sign-out").hidden = false;
  if (state.who.kind === "admin") {
    $("#who").textContent = "admin";
    showAdmin();
  } else {
    $("#who").textContent = `${state.who.tenant_name} · ${state.who.role ?? state.who.kind}`;
    showViewer();
  }
}

function signOut(message = "") {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.stream?.abort();
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, who: undefined, agent: undefined, metrics: [], tenant: undefined });
  clearCharts();
  clearTimeout(state.redraw);
  $("#viewer").hidden = true;
  $("#admin").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#who").textContent = "";
  $("#sign-in-error").textContent = message;
}

// ---- viewer -----------------------------------------------------------------------------------

function showViewer() {
  $("#viewer").hidden = false;
  // The refusals kept from before the page opened come first; live ones go on top of them.
  loadRejectionHistory()
    .catch(showFailure)
    .finally(() => follow("/api/v1/stream?include=metrics,rejections", { metric: onMetric, rejection: onRejection }));
  every(REFRESH_MS, async () => {
    await loadAgents();
    await loadCharts();
  });
}

async function loadAgents() {
  const { items } = await api("/api/v1/agents?limit=1000");
  $("#agents-empty").hidden = items.length > 0;
  fillTable(
    $("#agents"),
    items.map((agent) => {
      const row = el(
        "tr",
        { className: `selectable${agent.agent_id === state.agent ? " selected" : ""}` },
        el("td", {}, agent.agent_id),
        el(
          "td",
          {},
          el("span", { className: `dot${agent.connected ? " on" : ""}` }),
          agent.connected ? `yes (${agent.connections})` : "no",
        ),
        el("td", { title: agent.last_seen_at ?? "" }, ago(agent.last_seen_at)),
        el("td", {}, agent.readings_last_hour.toLocaleString()),
      );
      row.dataset.agent = agent.agent_id;
      row.addEventListener("click", () => selectAgent(agent.agent_id).catch(showFailure));
      return row;
    }),
  );
  stamp("#agents-updated");
  const select = $("#chart-agent");
  const known = [...select.options].map((option) => option.value).join();
  if (known !== items.map((agent) => agent.agent_id).join()) {
    select.replaceChildren(...items.map((agent) => el("option", { value: agent.agent_id }, agent.agent_id)));
  }
  if (state.agent === undefined && items.length > 0) await selectAgent(items[0].agent_id, false);
  else select.value = state.agent ?? "";
}

/** Shows an agent's latest values and its charts (`draw`: now, rather than at the next refresh). */
async function selectAgent(agentId, draw = true) {
  state.agent = agentId;
  $("#chart-agent").value = agentId;
  $("#latest-agent").textContent = `of ${agentId}`;
  for (const row of $("#agents").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.agent === agentId);
  }
  const { items } = await api(`/api/v1/metrics/latest?agent_id=${encodeURIComponent(agentId)}&limit=1000`);
  fillTable($("#latest"), items.map(latestRow));
  state.metrics = items.map((item) => item.name);
  clearCharts();
  if (draw) await loadCharts();
}

function latestRow(item) {
  const row = el(
    "tr",
    {},
    el("td", {}, item.name),
    el("td", { className: "value" }, item.value),
    el("td", { title: item.ts }, time(item.ts)),
    el("td", {}, el("code", {}, item.tags ? JSON.stringify(item.tags) : "")),
  );
  row.dataset.metric = item.name;
  return row;
}

function clearCharts() {
  for (const { plot } of state.charts.values()) plot.destroy();
  state.charts.clear();
  $("#charts").replaceChildren();
}

/**
 * Every bucket of the window, in order, with `null` where no reading fell: the line breaks at a
 * gap instead of joining its two sides. Buckets start at `from` (the server bins from there).
 */
function bucketGrid({ from, to, step_ms: step, buckets }) {
  const values = new Map(buckets.map((bucket) => [Date.parse(bucket.start), bucket.avg]));
  const xs = [];
  const ys = [];
  for (let start = Date.parse(from); start < Date.parse(to); start += step) {
    xs.push(start / 1000);
    ys.push(values.get(start) ?? null);
  }
  return [xs, ys];
}

/** The agent's charts over the chosen window, the same window for all, its step the server's default. */
async function loadCharts() {
  if (!state.agent) return;
  const to = Date.now();
  const from = to - state.windowMs;
  const names = state.metrics.slice(0, MAX_CHARTS);
  const agent = state.agent;
  const series = await Promise.all(
    names.map((name) => api(`/api/v1/metrics/series?${new URLSearchParams({ agent_id: agent, name, from, to })}`)),
  );
  if (agent !== state.agent) return;
  state.range = [from / 1000, to / 1000];
  $("#charts-empty").hidden = names.length > 0;
  for (const [i, name] of names.entries()) drawChart(name, bucketGrid(series[i]));
  stamp("#charts-updated");
}

function drawChart(name, points) {
  const count = points[1].filter((value) => value !== null).length;
  let chart = state.charts.get(name);
  if (!chart) {
    const plot = el("div", { className: "plot" });
    const figure = el("figure", {}, el("figcaption", {}, name, el("span", { className: "count" })), plot);
    figure.dataset.metric = name;
    $("#charts").append(figure);
    const options = {
      width: Math.max(280, plot.clientWidth || $("#charts").clientWidth),
      height: 220,
      // The x-axis is the chosen window, whatever the readings in it: one reading is one point on it.
      scales: { x: { time: true, range: () => state.range } },
      series: [{}, { label: name, stroke: "#1769aa", width: 2, points: { show: true, size: 5 } }],
      axes: [{}, { size: 60 }],
      hooks: {
        // The x-axis as uPlot scaled it, for a test or a curious reader.
        setScale: [
          (u, key) => {
            if (key === "x") Object.assign(figure.dataset, { xMin: u.scales.x.min, xMax: u.scales.x.max });
          },
        ],
      },
    };
    chart = { figure, plot: new uPlot(options, points, plot) };
    state.charts.set(name, chart);
  } else {
    chart.plot.setData(points);
  }
  chart.figure.querySelector(".count").textContent = count === 1 ? "1 point" : `${count} points`;
  chart.figure.dataset.buckets = points[0].length;
}

function onMetric(metric) {
  if (metric.agent_id !== state.agent) return;
  const latest = $("#latest tbody");
  const existing = latest.querySelector(`tr[data-metric="${CSS.escape(metric.name)}"]`);
  const row = latestRow(metric);
  if (existing) existing.replaceWith(row);
  else {
    latest.append(row);
    state.metrics.push(metric.name);
  }
  // The charts show buckets, which the server computes: they are read again, once per burst.
  clearTimeout(state.redraw);
  state.redraw = setTimeout(() => loadCharts().catch(showFailure), REDRAW_AFTER_MS);
}

async function loadRejectionHistory() {
  const { items, counts, window_hours: hours } = await api(`/api/v1/rejections?limit=${MAX_REJECTIONS}`);
  state.rejectionHours = hours;
  state.rejectionCounts = new Map(counts.map(({ reason, count }) => [reason, count]));
  $("#rejections tbody").replaceChildren(...items.map(rejectionRow));
  showRejectionCounts();
}

function rejectionRow(rejection) {
  return el(
    "tr",
    {},
    el("td", { title: rejection.at }, time(rejection.at)),
    el("td", {}, rejection.agent_id),
    el("td", {}, rejection.source),
    el("td", { className: "reason" }, rejection.reason),
    el("td", {}, rejection.count),
    el("td", { className: "message" }, rejection.message),
  );
}

function showRejectionCounts() {
  const counts = [...state.rejectionCounts].sort((a, b) => b[1] - a[1]);
  const window = `the last ${state.rejectionHours} h`;
  $("#rejection-counts").textContent =
    counts.length === 0
      ? ""
      : `${counts.map(([reason, count]) => `${reason} ${count.toLocaleString()}`).join(" · ")} (${window})`;
  $("#rejections-empty").hidden = counts.length > 0;
  $("#rejections-empty").textContent = `Nothing refused in ${window}.`;
}

function onRejection(rejection) {
  const body = $("#rejections tbody");
  body.prepend(rejectionRow(rejection));
  while (body.children.length > MAX_REJECTIONS) body.lastElementChild.remove();
  state.rejectionCounts.set(rejection.reason, (state.rejectionCounts.get(rejection.reason) ?? 0) + rejection.count);
  showRejectionCounts();
}

/**
 * Server-Sent Events over fetch, so the token goes in a header (EventSource can only put it in the
 * URL). Reconnects after a pause until signed out.
 */
async function follow(path, handlers) {
  const controller = new AbortController();
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(path, {
        headers: { authorization: `Bearer ${state.token}` },
        signal: controller.signal,
      });
      if (response.status === 401) return signOut("Your token was revoked or is no longer valid.");
      if (!response.ok) throw new Error(`stream: HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          dispatch(buffer.slice(0, end), handlers);
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      console.warn(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

function dispatch(block, handlers) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (data && handlers[event]) handlers[event](JSON.parse(data));
}

// ---- admin ------------------------------------------------------------------------------------

function showAdmin() {
  $("#admin").hidden = false;
  every(REFRESH_MS, async () => {
    await loadTenants();
    if (state.tenant) await loadTenantDetails();
  });
}

async function loadTenants() {
  const tenants = await api("/api/v1/admin/tenants");
  fillTable(
    $("#tenants"),
    tenants.map((tenant) => {
      const row = el(
        "tr",
        { className: `selectable${tenant.id === state.tenant?.id ? " selected" : ""}` },
        el("td", {}, tenant.name),
        el("td", {}, el("code", {}, tenant.id)),
        el("td", {}, tenant.agents),
        el("td", {}, tenant.active_credentials),
      );
      row.dataset.tenant = tenant.id;
      row.addEventListener("click", () => selectTenant(tenant).catch(showFailure));
      return row;
    }),
  );
  stamp("#tenants-updated");
  // The first tenant's details from the start, rather than an empty panel until one is clicked.
  if (!state.tenant && tenants.length > 0) await selectTenant(tenants[0]);
}

async function selectTenant(tenant) {
  state.tenant = tenant;
  $("#tenant-name").textContent = tenant.name;
  $("#tenant-panel").hidden = false;
  $("#tenant-details").hidden = false;
  $("#secret").hidden = true;
  for (const row of $("#tenants").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.tenant === tenant.id);
  }
  await loadTenantDetails();
}

async function loadTenantDetails() {
  const tenantPath = `/api/v1/admin/tenants/${state.tenant.id}`;
  const [credentials, clients, cas] = await Promise.all([
    api(`${tenantPath}/credentials`),
    api(`${tenantPath}/clients`),
    api(`${tenantPath}/cas`),
  ]);
  $("#cas-empty").hidden = cas.length > 0;
  fillTable(
    $("#cas"),
    cas.map((ca) => {
      const remove = el("button", { type: "button", className: "danger" }, "Remove");
      remove.addEventListener("click", () => removeCa(ca).catch(showFailure));
      const row = el(
        "tr",
        {},
        el("td", {}, ca.subject),
        el("td", {}, el("code", { title: ca.fingerprint }, `${ca.fingerprint.slice(0, 12)}…`)),
        el("td", {}, ca.register_agents ? "yes" : "no"),
        el("td", { title: ca.not_after }, ca.not_after.slice(0, 10)),
        el("td", {}, remove),
      );
      row.dataset.fingerprint = ca.fingerprint;
      return row;
    }),
  );
  fillTable(
    $("#credentials"),
    credentials.map((credential) => {
      const revoke = el("button", { type: "button", className: "danger" }, "Revoke");
      revoke.addEventListener("click", () => revokeCredential(credential).catch(showFailure));
      const row = el(
        "tr",
        { className: credential.revoked_at ? "revoked" : "" },
        el("td", {}, el("code", {}, credential.username)),
        el("td", {}, credential.role),
        el("td", {}, credential.agent_id ?? ""),
        el("td", { title: credential.created_at }, ago(credential.created_at)),
        el("td", {}, credential.revoked_at ? `revoked ${ago(credential.revoked_at)}` : "active"),
        el("td", {}, credential.revoked_at ? "" : revoke),
      );
      row.dataset.username = credential.username;
      return row;
    }),
  );
  $("#clients-empty").hidden = clients.length > 0;
  fillTable(
    $("#clients"),
    clients.map((client) =>
      el(
        "tr",
        {},
        el("td", {}, el("code", {}, client.client_id)),
        el("td", {}, client.kind),
        el("td", {}, client.agent_id ?? client.username),
        el("td", {}, el("code", {}, client.broker.slice(0, 8))),
      ),
    ),
  );
}

async function revokeCredential(credential) {
  const what = credential.agent_id ? `agent ${credential.agent_id}'s credential` : `the ${credential.role} token`;
  if (!confirm(`Revoke ${what} (${credential.username})? Its connections close at once.`)) return;
  await api(`/api/v1/admin/credentials/${encodeURIComponent(credential.username)}`, { method: "DELETE" });
  await Promise.all([loadTenantDetails(), loadTenants()]);
}

function showSecret(text) {
  $("#secret-text").textContent = text;
  $("#secret").hidden = false;
}

function shellQuote(value) {
  return `'${String(value).replaceAll("'", "'\\''")}'`;
}

async function createAgent(agentId, certificate) {
  const agent = await api(`/api/v1/admin/tenants/${state.tenant.id}/agents`, {
    body: certificate ? { agent_id: agentId, certificate } : { agent_id: agentId },
    method: "POST",
  });
  const topic = `metrics/${agent.tenant_id}/${agent.agent_id}/temperature`;
  if (!agent.password) {
    // A pinned certificate: nothing secret to show, the key stays on the device.
    showSecret(
      [
        `agent ${agent.agent_id}: certificate pinned (${agent.username})`,
        "",
        "Publish a reading over TLS with the device's certificate and key:",
        `mosquitto_pub -h ${location.hostname} -p <TLS port> --cafile server.pem --cert device.pem --key device.key -q 1 -t ${shellQuote(topic)} -m '{"value": 21.5}'`,
      ].join("\n"),
    );
    await Promise.all([loadTenantDetails(), loadTenants()]);
    return;
  }
  showSecret(
    [
      `agent ${agent.agent_id}`,
      `username: ${agent.username}`,
      `password: ${agent.password}`,
      "",
      "Publish a reading:",
      `mosquitto_pub -h ${location.hostname} -p ${state.who.mqtt.port} -q 1 -u ${shellQuote(agent.username)} -P ${shellQuote(agent.password)} -t ${shellQuote(topic)} -m '{"value": 21.5}'`,
    ].join("\n"),
  );
  await Promise.all([loadTenantDetails(), loadTenants()]);
}

async function addCa(pem, registerAgents) {
  await api(`/api/v1/admin/tenants/${state.tenant.id}/cas`, {
    body: { pem, register_agents: registerAgents },
    method: "POST",
  });
  await loadTenantDetails();
}

async function removeCa(ca) {
  if (!confirm(`Stop trusting ${ca.subject}? The devices it identified are disconnected at once.`)) return;
  await api(`/api/v1/admin/tenants/${state.tenant.id}/cas/${encodeURIComponent(ca.fingerprint)}`, { method: "DELETE" });
  await loadTenantDetails();
}

async function createToken(role) {
  const token = await api(`/api/v1/admin/tenants/${state.tenant.id}/tokens`, { body: { role }, method: "POST" });
  showSecret(`${role} token for ${state.tenant.name}:\n${token.token}`);
  await loadTenantDetails();
}

// ---- wiring -----------------------------------------------------------------------------------

function onSubmit(selector, handler) {
  $(selector).addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    $("#admin-error").textContent = "";
    handler(new FormData(form))
      .then(() => form.reset())
      .catch(showFailure);
  });
}

$("#sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  $("#sign-in-error").textContent = "";
  signIn($("#token").value.trim());
  $("#token").value = "";
});
$("#sign-out").addEventListener("click", () => signOut());
$("#chart-agent").addEventListener("change", (event) => selectAgent(event.target.value).catch(showFailure));
$("#chart-window").addEventListener("change", (event) => {
  state.windowMs = Number(event.target.value);
  loadCharts().catch(showFailure);
});
$("#copy-secret").addEventListener("click", () => navigator.clipboard?.writeText($("#secret-text").textContent));
onSubmit("#create-tenant", async (form) => {
  const tenant = await api("/api/v1/admin/tenants", { body: { name: form.get("name") }, method: "POST" });
  await loadTenants();
  await selectTenant({ ...tenant, agents: 0, active_credentials: 0 });
});
onSubmit("#create-agent", (form) => createAgent(form.get("agent_id"), form.get("certificate")?.trim()));
onSubmit("#add-ca", (form) => addCa(form.get("pem"), form.get("register_agents") === "on"));
onSubmit("#create-token", (form) => createToken(form.get("role")));
window.addEventListener("resize", () => {
  for (const { figure, plot } of state.charts.values()) {
    plot.setSize({ width: Math.max(280, figure.clientWidth), height: 220 });
  }
});

if (state.token) signIn(state.token);
