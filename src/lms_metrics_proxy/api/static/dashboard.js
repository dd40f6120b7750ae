/*
 * LMS Metrics Proxy dashboard: reads the /stats/* JSON endpoints of the same
 * origin and draws them. Plain browser JavaScript, no build step; the chart
 * is uPlot (vendored next to this file).
 *
 * Text from the database (model and client names, prompts, responses, error
 * messages) only ever enters the page through textContent, never as HTML;
 * the page's Content-Security-Policy enforces Trusted Types, so assigning a
 * string as markup would throw.
 *
 * Token (STATS_TOKEN): open /dashboard?token=... (or use the form the server
 * shows without one). The token is kept in sessionStorage for this tab,
 * removed from the address bar, and sent as "Authorization: Bearer" on every
 * fetch.
 */
"use strict";
(function () {
  // ---- Endpoints and field names: the one place to adjust them. ----------

  const API = {
    summary: "/stats/summary",
    byModel: "/stats/by-model",
    byClient: "/stats/by-client",
    recent: "/stats/recent",
    timeseries: "/stats/timeseries",
    request: (id) => "/stats/requests/" + encodeURIComponent(String(id)),
  };
  const RECENT_LIMIT = 50;

  const FIELDS = {
    summary: {
      requests: "total_requests",
      failed: "failed_requests",
      input: "total_input_tokens",
      output: "total_output_tokens",
      total: "total_tokens",
      avgInput: "average_input_tokens",
      avgOutput: "average_output_tokens",
      duration: "total_duration_ms",
      estimated: "estimated_usage_requests",
      noUsage: "no_usage_requests",
    },
    timeseries: {
      list: "points",
      time: "time",
      requests: "requests",
      input: "input_tokens",
      output: "output_tokens",
      total: "total_tokens",
      errors: "errors",
    },
    byModel: {
      list: "models",
      name: "model",
      requests: "request_count",
      input: "total_input_tokens",
      output: "total_output_tokens",
      total: "total_tokens",
      avgInput: "avg_input_tokens",
      avgOutput: "avg_output_tokens",
      avgDuration: "avg_duration_ms",
    },
    byClient: {
      list: "clients",
      name: "client",
      requests: "request_count",
      input: "total_input_tokens",
      output: "total_output_tokens",
      total: "total_tokens",
      avgDuration: "avg_duration_ms",
    },
    recent: {
      list: "requests",
      id: "id",
      time: "start_time",
      client: "client",
      model: "model",
      endpoint: "endpoint",
      input: "input_tokens",
      output: "output_tokens",
      duration: "duration_ms",
      ttft: "ttft_ms",
      status: "http_status",
      isError: "is_error",
      streamed: "was_streamed",
      usageSource: "usage_source",
    },
    detail: { id: "id", prompt: "prompt", response: "response" },
  };

  const TOKEN_KEY = "lms-metrics-proxy.token";
  const FILTER_NAMES = ["range", "since", "until", "model", "client", "bucket"];
  const RANGE_SECONDS = { "1h": 3600, "24h": 86400, "7d": 604800, "30d": 2592000 };
  const BUCKET_SECONDS = { minute: 60, hour: 3600, day: 86400 };
  const RANGE_BUCKET = { "1h": "minute", "24h": "hour", "7d": "hour", "30d": "day" };
  // Zero-filling more buckets than this would only slow the chart down.
  const MAX_FILLED_POINTS = 5000;

  const $ = (id) => document.getElementById(id);
  const refreshMs = 1000 * Number(document.body.dataset.refreshSeconds || 10);
  const numberFormat = new Intl.NumberFormat();
  const decimalFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact" });

  // ---- Small formatting helpers: every one returns plain text. -----------

  const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
  const integer = (value) => (isNumber(value) ? numberFormat.format(value) : "–");
  const decimal = (value) => (isNumber(value) ? decimalFormat.format(value) : "–");

  function duration(ms) {
    if (!isNumber(ms)) return "–";
    if (ms < 1000) return numberFormat.format(Math.round(ms)) + " ms";
    if (ms < 60000) return decimalFormat.format(ms / 1000) + " s";
    return decimalFormat.format(ms / 60000) + " min";
  }

  const pad = (n) => String(n).padStart(2, "0");

  function localTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso ?? "–");
    const day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    return day + " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function text(value) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  /** Create an element; `content` is text (set with textContent) or child nodes. */
  function el(tag, options, content) {
    const node = document.createElement(tag);
    const opts = options || {};
    if (opts.className) node.className = opts.className;
    if (opts.title) node.title = opts.title;
    if (Array.isArray(content)) node.append(...content);
    else if (content !== undefined) node.textContent = content;
    return node;
  }

  // ---- Token and fetching. ------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Move a ?token= from the address into sessionStorage. */
  function takeToken() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("token")) return;
    window.sessionStorage.setItem(TOKEN_KEY, url.searchParams.get("token"));
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  async function errorMessage(response) {
    const body = await response.text();
    try {
      const data = JSON.parse(body);
      const error = data.error ?? data.message ?? data;
      return typeof error === "string" ? error : error.message ?? JSON.stringify(error);
    } catch (_) {
      return body.slice(0, 300) || response.statusText;
    }
  }

  /** GET a stats endpoint; `params` holds the query (filters and extras). */
  async function getJSON(path, params) {
    const headers = { Accept: "application/json" };
    const token = window.sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const query = params && params.toString() ? "?" + params.toString() : "";
    const response = await fetch(path + query, { headers, cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    return response.json();
  }

  // ---- Filters: the form, the address bar and the query of every fetch. --

  const form = $("filters");

  /** `datetime-local` value (local time) to "2026-01-19T10:00:00Z". */
  function toUtc(local) {
    const date = new Date(local);
    if (Number.isNaN(date.getTime())) return null;
    return date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  /** The filters as the stats endpoints take them. */
  function filterParams() {
    const params = new URLSearchParams();
    const range = form.elements.range.value;
    if (RANGE_SECONDS[range]) {
      const since = new Date(Date.now() - RANGE_SECONDS[range] * 1000);
      params.set("since", toUtc(since));
    } else if (range === "custom") {
      for (const name of ["since", "until"]) {
        const value = form.elements[name].value && toUtc(form.elements[name].value);
        if (value) params.set(name, value);
      }
    }
    for (const name of ["model", "client"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  function withParams(extra) {
    const params = filterParams();
    for (const [name, value] of Object.entries(extra)) params.set(name, value);
    return params;
  }

  function showCustomDates() {
    const custom = form.elements.range.value === "custom";
    for (const name of ["since", "until"]) {
      form.elements[name].closest("label").hidden = !custom;
    }
  }

  /** Keep the filters in the address, so a reload or a bookmark keeps them. */
  function saveFilters() {
    const url = new URL(window.location.href);
    const custom = form.elements.range.value === "custom";
    for (const name of FILTER_NAMES) {
      const value = form.elements[name].value.trim();
      const unused = !custom && (name === "since" || name === "until");
      const isDefault = (name === "range" && value === "all") || (name === "bucket" && value === "hour");
      if (value && !isDefault && !unused) url.searchParams.set(name, value);
      else url.searchParams.delete(name);
    }
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  function loadFilters() {
    const query = new URL(window.location.href).searchParams;
    for (const name of FILTER_NAMES) {
      if (query.has(name)) form.elements[name].value = query.get(name);
    }
    if (!form.elements.range.value) form.elements.range.value = "all";
    if (!form.elements.bucket.value) form.elements.bucket.value = "hour";
    showCustomDates();
  }

  // ---- Summary tiles. ------------------------------------------------------

  function setTile(key, value, sub, warn) {
    const tile = document.querySelector('[data-tile="' + key + '"]');
    tile.querySelector(".tile-value").textContent = value;
    tile.querySelector(".tile-sub").textContent = sub || "";
    tile.classList.toggle("warn", Boolean(warn));
  }

  function percent(part, whole) {
    if (!isNumber(part) || !isNumber(whole) || whole === 0) return "";
    return decimalFormat.format((100 * part) / whole) + "% of requests";
  }

  function renderSummary(summary) {
    const f = FIELDS.summary;
    const requests = summary[f.requests];
    const failed = summary[f.failed];
    const avgDuration = isNumber(requests) && requests > 0 ? summary[f.duration] / requests : null;
    setTile("requests", integer(requests), isNumber(failed) && isNumber(requests)
      ? integer(requests - failed) + " succeeded" : "");
    setTile("errors", integer(failed), percent(failed, requests), failed > 0);
    setTile("input", integer(summary[f.input]), "avg " + decimal(summary[f.avgInput]) + " per req");
    setTile("output", integer(summary[f.output]), "avg " + decimal(summary[f.avgOutput]) + " per req");
    setTile("total", integer(summary[f.total]), "input + output");
    setTile("duration", duration(avgDuration), "total " + duration(summary[f.duration]));
    setTile("estimated", integer(summary[f.estimated]), percent(summary[f.estimated], requests) ||
      "counted by the tokenizer");
    setTile("no-usage", integer(summary[f.noUsage]), percent(summary[f.noUsage], requests) ||
      "no count at all", summary[f.noUsage] > 0);
  }

  // ---- Tables: columns are declared once, header and cells come from them.

  const num = (field, format) => ({ field, format: format || integer, className: "num" });

  const MODEL_COLUMNS = [
    { label: "Model", field: FIELDS.byModel.name, className: "name" },
    { label: "Requests", ...num(FIELDS.byModel.requests) },
    { label: "Input", ...num(FIELDS.byModel.input) },
    { label: "Output", ...num(FIELDS.byModel.output) },
    { label: "Total", ...num(FIELDS.byModel.total) },
    { label: "Avg in", ...num(FIELDS.byModel.avgInput, decimal) },
    { label: "Avg out", ...num(FIELDS.byModel.avgOutput, decimal) },
    { label: "Avg time", ...num(FIELDS.byModel.avgDuration, duration) },
  ];

  const CLIENT_COLUMNS = [
    { label: "Client", field: FIELDS.byClient.name, className: "name", empty: "(no X-Client-Name)" },
    { label: "Requests", ...num(FIELDS.byClient.requests) },
    { label: "Input", ...num(FIELDS.byClient.input) },
    { label: "Output", ...num(FIELDS.byClient.output) },
    { label: "Total", ...num(FIELDS.byClient.total) },
    { label: "Avg time", ...num(FIELDS.byClient.avgDuration, duration) },
  ];

  const R = FIELDS.recent;
  const USAGE_CLASSES = { upstream: "badge ok", estimated: "badge estimated", none: "badge none" };
  const RECENT_COLUMNS = [
    { label: "Time", field: R.time, format: localTime, className: "time", title: (row) => row[R.time] },
    { label: "Client", field: R.client, className: "name" },
    { label: "Model", field: R.model, className: "name" },
    { label: "Endpoint", field: R.endpoint, className: "name" },
    { label: "In", ...num(R.input) },
    { label: "Out", ...num(R.output) },
    { label: "Duration", ...num(R.duration, duration) },
    { label: "TTFT", ...num(R.ttft, duration) },
    {
      label: "Status",
      field: R.status,
      className: "num",
      badge: (row) => (row[R.isError] ? "badge error" : "badge ok"),
    },
    { label: "Stream", field: R.streamed, className: "center" },
    { label: "Usage", field: R.usageSource, badge: (row) => USAGE_CLASSES[row[R.usageSource]] || "badge" },
  ];

  function cell(column, row) {
    const value = row[column.field];
    const shown = value === null || value === undefined || value === ""
      ? column.empty || "–"
      : (column.format || text)(value);
    const td = el("td", { className: column.className });
    if (column.badge) td.append(el("span", { className: column.badge(row) }, shown));
    else td.textContent = shown;
    if (column.className === "name") td.title = shown;
    if (column.title) td.title = text(column.title(row));
    if (shown === "–" || shown === column.empty) td.classList.add("muted");
    return td;
  }

  function renderTable(table, columns, rows, onRow) {
    const head = el("tr", {}, columns.map((c) => el("th", { className: c.className }, c.label)));
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr", {}, columns.map((column) => cell(column, row)));
      if (onRow) onRow(tr, row);
      body.append(tr);
    }
    if (rows.length === 0) {
      const td = el("td", { className: "empty" }, "Nothing recorded for these filters");
      td.colSpan = columns.length;
      body.append(el("tr", {}, [td]));
    }
    table.replaceChildren(el("thead", {}, [head]), body);
  }

  function fillNames(datalist, rows, field) {
    const names = rows.map((row) => row[field]).filter((name) => typeof name === "string");
    datalist.replaceChildren(...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      return option;
    }));
  }

  function renderRecent(rows) {
    renderTable($("recent"), RECENT_COLUMNS, rows, (tr, row) => {
      tr.tabIndex = 0;
      tr.dataset.id = String(row[R.id]);
      if (row[R.isError]) tr.classList.add("error");
      tr.addEventListener("click", () => showDetail(row[R.id]));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          showDetail(row[R.id]);
        }
      });
    });
  }

  // ---- Chart. ---------------------------------------------------------------

  let chart = null;
  const chartBox = $("chart");

  function cssColor(name) {
    return getComputedStyle(document.body).getPropertyValue(name).trim();
  }

  /** Points to uPlot's columns, with empty buckets filled in as zero. */
  function chartColumns(points, bucket) {
    const T = FIELDS.timeseries;
    const step = BUCKET_SECONDS[bucket] || 3600;
    const byTime = new Map();
    for (const point of points) {
      const seconds = Math.floor(new Date(point[T.time]).getTime() / 1000);
      if (Number.isFinite(seconds)) byTime.set(seconds, point);
    }
    let times = [...byTime.keys()].sort((a, b) => a - b);
    const first = times[0];
    const last = times[times.length - 1];
    // One point alone stretches the time axis over years: show its empty
    // neighbours too, but not a bucket that has not begun yet.
    if (times.length === 1) {
      times = [first - step, first];
      if (first + step <= Date.now() / 1000) times.push(first + step);
    }
    else if ((last - first) / step < MAX_FILLED_POINTS) {
      times = [];
      for (let t = first; t <= last; t += step) times.push(t);
    }
    const column = (field) => times.map((t) => (byTime.has(t) ? byTime.get(t)[field] ?? 0 : 0));
    return [times, column(T.input), column(T.output), column(T.total)];
  }

  function chartOptions() {
    const axis = { stroke: cssColor("--muted"), grid: { stroke: cssColor("--grid") }, ticks: { show: false } };
    const series = (label, color, dash) => ({
      label,
      stroke: color,
      width: 2,
      dash,
      fill: dash ? undefined : color + "22",
      points: { size: 4 },
      value: (_, v) => integer(v),
    });
    const xAxis = { ...axis, space: 70 };
    return {
      width: Math.max(chartBox.clientWidth, 200),
      height: 260,
      scales: { x: { time: true } },
      series: [
        { value: (_, v) => (v === null ? "–" : localTime(v * 1000)) },
        series("Input tokens", cssColor("--input")),
        series("Output tokens", cssColor("--output")),
        series("Total tokens", cssColor("--total"), [5, 4]),
      ],
      axes: [xAxis, { ...axis, size: 60, values: (_, ticks) => ticks.map((v) => compactFormat.format(v)) }],
    };
  }

  function renderChart(data) {
    const T = FIELDS.timeseries;
    const points = Array.isArray(data[T.list]) ? data[T.list] : [];
    const columns = chartColumns(points, data.bucket || form.elements.bucket.value);
    $("chart-empty").hidden = points.length > 0;
    if (typeof window.uPlot !== "function") return;
    if (chart === null) chart = new window.uPlot(chartOptions(), columns, chartBox);
    else chart.setData(columns);
  }

  new ResizeObserver(() => {
    if (chart !== null) chart.setSize({ width: Math.max(chartBox.clientWidth, 200), height: 260 });
  }).observe(chartBox);

  // ---- Detail panel. ------------------------------------------------------

  const dialog = $("detail");

  /** Prompts are stored as JSON (the messages); indent them when they are. */
  function readable(value) {
    if (value === null || value === undefined) return null;
    if (typeof value !== "string") return JSON.stringify(value, null, 2);
    try {
      const parsed = JSON.parse(value);
      if (parsed !== null && typeof parsed === "object") return JSON.stringify(parsed, null, 2);
    } catch (_) {
      // Plain text: shown as it is.
    }
    return value;
  }

  function showText(node, value) {
    const shown = readable(value);
    node.textContent = shown === null ? "(not stored)" : shown;
    node.classList.toggle("muted", shown === null);
  }

  function showFields(row) {
    const D = FIELDS.detail;
    const items = [];
    for (const [name, value] of Object.entries(row)) {
      if (name === D.prompt || name === D.response) continue;
      items.push(el("div", {}, [el("dt", {}, name), el("dd", {}, text(value))]));
    }
    $("detail-fields").replaceChildren(...items);
  }

  async function showDetail(id) {
    $("detail-title").textContent = "Request " + text(id);
    $("detail-status").textContent = "Loading…";
    $("detail-fields").replaceChildren();
    $("detail-prompt").textContent = "";
    $("detail-response").textContent = "";
    if (!dialog.open) dialog.showModal();
    try {
      // Filters would only hide the row: this fetch takes none.
      const row = await getJSON(API.request(id));
      $("detail-status").textContent = "";
      showFields(row);
      showText($("detail-prompt"), row[FIELDS.detail.prompt]);
      showText($("detail-response"), row[FIELDS.detail.response]);
    } catch (error) {
      $("detail-status").textContent = "Could not load this request: " + error.message;
    }
  }

  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });

  // ---- Refreshing. ----------------------------------------------------------

  const status = $("status");
  const pauseButton = $("pause");
  let timer = null;
  let paused = false;
  let loading = false;

  function showError(errors) {
    const banner = $("error");
    banner.hidden = errors.length === 0;
    if (errors.length === 0) return;
    const unauthorised = errors.some((e) => e.status === 401);
    $("sign-in").hidden = !unauthorised;
    $("error-text").textContent = unauthorised
      ? "The statistics need a token (STATS_TOKEN) and this one was not accepted."
      : "Could not load " + errors.map((e) => e.what + ": " + e.message).join("; ");
  }

  async function refresh() {
    if (loading) return;
    loading = true;
    status.textContent = "Updating…";
    const bucket = form.elements.bucket.value;
    const parts = [
      ["summary", API.summary, {}, renderSummary],
      ["by model", API.byModel, {}, (d) => {
        const rows = d[FIELDS.byModel.list] || [];
        renderTable($("by-model"), MODEL_COLUMNS, rows);
        fillNames($("model-names"), rows, FIELDS.byModel.name);
      }],
      ["by client", API.byClient, {}, (d) => {
        const rows = d[FIELDS.byClient.list] || [];
        renderTable($("by-client"), CLIENT_COLUMNS, rows);
        fillNames($("client-names"), rows, FIELDS.byClient.name);
      }],
      ["recent", API.recent, { limit: RECENT_LIMIT }, (d) => renderRecent(d[R.list] || [])],
      ["timeseries", API.timeseries, { bucket }, renderChart],
    ];
    const results = await Promise.allSettled(
      parts.map(([, path, extra]) => getJSON(path, withParams(extra))),
    );
    const errors = [];
    results.forEach((result, i) => {
      const [what, , , render] = parts[i];
      if (result.status === "fulfilled") render(result.value);
      else errors.push({ what, status: result.reason.status, message: result.reason.message });
    });
    showError(errors);
    loading = false;
    const now = new Date();
    status.textContent = (errors.length ? "Failed at " : "Updated ") +
      pad(now.getHours()) + ":" + pad(now.getMinutes()) + ":" + pad(now.getSeconds()) +
      (paused ? " · paused" : " · every " + refreshMs / 1000 + " s");
  }

  function tick() {
    if (!document.hidden) refresh();
  }

  function setPaused(value) {
    paused = value;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    window.clearInterval(timer);
    timer = paused ? null : window.setInterval(tick, refreshMs);
    status.textContent = status.textContent.replace(/ · .*$/, "") +
      (paused ? " · paused" : " · every " + refreshMs / 1000 + " s");
  }

  // ---- Wiring. ----------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveFilters();
    refresh();
  });
  form.elements.range.addEventListener("change", () => {
    const bucket = RANGE_BUCKET[form.elements.range.value];
    if (bucket) form.elements.bucket.value = bucket;
    showCustomDates();
    saveFilters();
    refresh();
  });
  form.elements.bucket.addEventListener("change", () => {
    saveFilters();
    refresh();
  });
  form.addEventListener("reset", () => {
    // After the browser has put the defaults back.
    window.setTimeout(() => {
      showCustomDates();
      saveFilters();
      refresh();
    });
  });
  pauseButton.addEventListener("click", () => setPaused(!paused));
  $("refresh-now").addEventListener("click", () => refresh());
  $("sign-in").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    window.location.reload();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !paused) refresh();
  });

  takeToken();
  loadFilters();
  setPaused(false);
  refresh();
})();
