// The operator dashboard: /admin/fleet once a second, drawn as tables and uPlot charts.
// The token is asked for once and kept for the browser session (sessionStorage), never in a URL.
"use strict";

const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const TOKEN_KEY = "flash-sale.admin-token";

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (value != null) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const number = (n) => (n == null ? "–" : new Intl.NumberFormat().format(n));
const ms = (n) => (n == null ? "–" : `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`);

function say(text) {
  $("dash-state").textContent = text;
}

// ---- reading the fleet ----------------------------------------------------------------------

async function fetchFleet(token) {
  const response = await fetch("/admin/fleet", {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => null);
    throw Object.assign(new Error(body?.error?.message ?? "refused"), { refused: true });
  }
  if (!response.ok) throw new Error(`the edge answered ${response.status}`);
  return response.json();
}

// The last whole second an edge reported, or nothing.
function lastSecond(edge) {
  const seconds = edge.status?.cart_updates;
  const i = (seconds?.updates.length ?? 0) - 1;
  if (i < 0) return null;
  return { updates: seconds.updates[i], p50_ms: seconds.p50_ms[i], p99_ms: seconds.p99_ms[i] };
}

// ---- tables ---------------------------------------------------------------------------------

function drawEdges(fleet) {
  $("edges").tBodies[0].replaceChildren(
    ...fleet.edges.map((edge) => {
      const status = edge.status;
      const last = lastSecond(edge);
      return el(
        "tr",
        {
          "data-edge": edge.edge_id,
          class: edge.stale ? "stale" : null,
          title: edge.error ? `${edge.error}${edge.stale ? " (last known numbers shown)" : ""}` : (status?.not_ready_because ?? edge.url),
        },
        el("th", { scope: "row" }, edge.edge_id),
        el("td", { class: `state state-${edge.state}` }, edge.state.replace("_", " ")),
        el("td", { class: "module" }, status?.module_version ?? "–"),
        el("td", { class: "num backlog" }, number(status?.outbox_backlog)),
        el("td", { class: "num lag" }, status ? ms(status.sync_lag_ms) : "–"),
        el("td", { class: "num rate" }, number(last?.updates)),
        el("td", { class: "num p50" }, ms(last?.p50_ms)),
        el("td", { class: "num p99" }, ms(last?.p99_ms)),
      );
    }),
  );
}

// Every SKU on sale: central's total and unallocated units, then each edge's own counters.
function skuRows(fleet) {
  const codes = new Set(fleet.stock.map((s) => s.sku));
  for (const edge of fleet.edges) for (const code of Object.keys(edge.status?.skus ?? {})) codes.add(code);
  return [...codes].sort().map((code) => {
    const central = fleet.stock.find((s) => s.sku === code);
    const perEdge = fleet.edges.map((edge) => edge.status?.skus?.[code] ?? null);
    const sold = perEdge.reduce((sum, units) => sum + (units?.sold ?? 0), 0);
    const total = central?.stock_total ?? fleet.edges.map((e) => e.status?.stock_total?.[code]).find((t) => t != null);
    return { code, total, unallocated: central?.unallocated, sold, perEdge };
  });
}

function drawStock(fleet, rows) {
  const table = $("stock");
  table.tHead.replaceChildren(
    el(
      "tr",
      {},
      el("th", { scope: "col" }, "SKU"),
      el("th", { scope: "col", class: "num" }, "Stock"),
      el("th", { scope: "col", class: "num" }, "Unallocated"),
      el("th", { scope: "col", class: "num" }, "Sold"),
      ...fleet.edges.map((edge) => el("th", { scope: "col", class: "num" }, edge.edge_id)),
    ),
  );
  table.tBodies[0].replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        { "data-sku": row.code },
        el("th", { scope: "row" }, row.code),
        el("td", { class: "num stock-total" }, number(row.total)),
        el("td", { class: "num unallocated" }, number(row.unallocated)),
        el("td", { class: "num sold" }, number(row.sold)),
        ...row.perEdge.map((units, i) =>
          el(
            "td",
            { class: "num units", "data-edge": fleet.edges[i].edge_id },
            units
              ? `${units.free} / ${units.held} / ${units.sold}`
              : "–",
          ),
        ),
      ),
    ),
  );
}

// ---- charts ---------------------------------------------------------------------------------

const charts = { sell: null, sellKeys: "", edges: new Map() };

// The time axis of every chart: ticks on whole seconds (or minutes), read as the clock reads,
// never uPlot's sub-second ':37.500' of the first seconds after the page opens.
const clock = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const timeAxis = {
  incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600],
  values: (_u, ticks) => ticks.map((t) => clock.format(new Date(t * 1000))),
};

function chartWidth(node) {
  return Math.max(240, node.clientWidth || 600);
}

// One SKU's sell-through as [seconds, % of its stock sold]: from its sale's start, one point at
// the end of each of central's steps (the last ends now, or at the sale's end).
function sellThroughTable(s) {
  const at = [s.starts_at / 1000];
  const share = [0];
  s.sold.forEach((units, i) => {
    const t = Math.min(s.starts_at + (i + 1) * s.step_ms, s.until) / 1000;
    const v = s.stock_total ? (100 * units) / s.stock_total : 0;
    if (t === at.at(-1)) {
      share[share.length - 1] = v;
    } else {
      at.push(t);
      share.push(v);
    }
  });
  return [at, share];
}

// Sell-through from each sale's start as central has the orders, one line per SKU; sales that
// started at different times share one time axis (uPlot.join fills the gaps).
function drawSellThrough(fleet) {
  const lines = (fleet.sell_through ?? []).map((s) => ({ code: s.sku, table: sellThroughTable(s) }));
  const codes = lines.map((line) => line.code);
  const data = lines.length ? uPlot.join(lines.map((line) => line.table)) : [[]];
  const node = $("sell-chart");
  if (charts.sellKeys !== codes.join()) {
    charts.sell?.destroy();
    charts.sellKeys = codes.join();
    charts.sell = new uPlot(
      {
        width: chartWidth(node),
        height: 220,
        scales: { y: { range: [0, 100] } },
        axes: [timeAxis, { label: "% sold", size: 50 }],
        series: [{}, ...codes.map((code, i) => ({ label: code, stroke: palette(i), width: 2, spanGaps: true }))],
      },
      data,
      node,
    );
  } else {
    charts.sell.setData(data);
  }
  node.dataset.points = String(data[0].length);
  node.dataset.from = String(data[0][0] ?? "");
  node.dataset.last = JSON.stringify(Object.fromEntries(lines.map((line) => [line.code, line.table[1].at(-1)])));
}

function drawEdgeCharts(fleet) {
  const holder = $("edge-charts");
  const seen = new Set();
  for (const edge of fleet.edges) {
    seen.add(edge.edge_id);
    const seconds = edge.status?.cart_updates ?? { first: 0, updates: [], p50_ms: [], p99_ms: [] };
    const quiet = (column) => column.map((v, i) => (seconds.updates[i] ? v : null));
    const data = [
      seconds.updates.map((_, i) => seconds.first + i),
      seconds.updates,
      quiet(seconds.p50_ms),
      quiet(seconds.p99_ms),
    ];
    let chart = charts.edges.get(edge.edge_id);
    if (!chart) {
      const box = el("div", { class: "chart", "data-edge": edge.edge_id }, el("h3", {}, edge.edge_id));
      holder.append(box);
      chart = new uPlot(
        {
          width: chartWidth(box),
          height: 200,
          scales: { ms: { range: (_u, _min, max) => [0, Math.max(10, max)] } },
          axes: [timeAxis, { label: "updates/s", size: 55 }, { scale: "ms", side: 1, label: "ms", grid: { show: false } }],
          series: [
            {},
            { label: "updates/s", stroke: "#2b6cb0", fill: "rgba(43,108,176,.12)", width: 2 },
            { label: "p50", scale: "ms", stroke: "#1f7a3f", width: 1.5 },
            { label: "p99", scale: "ms", stroke: "#b4232a", width: 1.5 },
          ],
        },
        data,
        box,
      );
      charts.edges.set(edge.edge_id, chart);
    } else {
      chart.setData(data);
    }
    chart.root.parentElement.dataset.updates = String(seconds.updates.reduce((sum, n) => sum + n, 0));
  }
  for (const [id, chart] of charts.edges) {
    if (!seen.has(id)) {
      chart.root.parentElement.remove();
      chart.destroy();
      charts.edges.delete(id);
    }
  }
}

function palette(i) {
  return ["#b4232a", "#2b6cb0", "#1f7a3f", "#9a5b00", "#6b3fa0", "#0f766e", "#be185d", "#4b5563"][i % 8];
}

// ---- the loop -------------------------------------------------------------------------------

// Each edge's last status: an edge that misses a poll keeps its numbers (marked stale), so a
// slow answer in the rush does not dip the sums.
const lastKnown = new Map();

function draw(fleet) {
  for (const edge of fleet.edges) {
    if (edge.status) lastKnown.set(edge.edge_id, edge.status);
    else if (lastKnown.has(edge.edge_id)) {
      edge.status = lastKnown.get(edge.edge_id);
      edge.stale = true;
    }
  }
  const rows = skuRows(fleet);
  drawEdges(fleet);
  drawStock(fleet, rows);
  drawSellThrough(fleet);
  drawEdgeCharts(fleet);
  const down = fleet.edges.filter((e) => e.state === "down").length;
  say(
    `${fleet.edges.length} edge${fleet.edges.length === 1 ? "" : "s"}` +
      (down ? `, ${down} down` : "") +
      (fleet.central_error ? ` · ${fleet.central_error}` : "") +
      ` · as of ${new Date(fleet.at).toLocaleTimeString()}`,
  );
  $("board").dataset.at = fleet.at;
}

let watching = 0; // bumped on each new token, so an old loop stops
async function watch(token) {
  const me = ++watching;
  $("board").hidden = false;
  while (me === watching) {
    try {
      draw(await fetchFleet(token));
    } catch (error) {
      if (error.refused) {
        sessionStorage.removeItem(TOKEN_KEY);
        $("board").hidden = true;
        $("login").hidden = false;
        say(`That token was refused: ${error.message}.`);
        return;
      }
      say(`Could not read the fleet (${error.message}); retrying.`);
    }
    await sleep(POLL_MS);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("login").hidden = true;
  watch(token);
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  $("login").hidden = true;
  watch(saved);
}
