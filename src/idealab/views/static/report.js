// Renders an idealab run from the JSON in #idealab-data; the live dashboard polls for a fresh copy.
"use strict";
(function () {
  const STATUS_COLORS = {
    ok: "#2e9d4b", failed: "#d7263d", timeout: "#f08a24", invalid: "#9b5de5", tampered: "#6d2e46",
    unimplementable: "#8d99ae", refused: "#8a1c7c", cancelled: "#bfc5cc", proposed: "#4ea8de", implementing: "#48bfe3",
    ready: "#5390d9", running: "#f4c430",
  };
  const STATUS_ORDER = Object.keys(STATUS_COLORS);
  const PLOT_CONFIG = { displaylogo: false, responsive: true };
  const TABLE_PAGE = 500; // rows drawn at once; "show more" adds as many (ten thousand rows redraw slowly)
  const state = { data: null, sortKey: "id", sortDir: 1, open: new Set(), filter: "", xAxis: "time",
    shown: TABLE_PAGE, details: new Map(), live: null };

  const $ = (id) => document.getElementById(id);
  const fmt = (v, digits = 4) => (v === null || v === undefined ? "" : Number(v).toPrecision(digits));
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const wrap = (s, width = 90) => {
    const out = []; let line = "";
    for (const word of String(s).split(/\s+/)) {
      if ((line + " " + word).length > width && line) { out.push(line); line = word; } else { line = line ? line + " " + word : word; }
    }
    if (line) out.push(line);
    return out.slice(0, 8).map(esc).join("<br>") + (out.length > 8 ? "<br>…" : "");
  };
  const when = (t) => new Date(t * 1000).toISOString();

  function layout(extra) {
    return Object.assign({ margin: { l: 60, r: 20, t: 10, b: 40 }, hovermode: "closest",
      legend: { orientation: "h", y: -0.28 }, font: { size: 12 } }, extra);
  }

  // ---- the search curve -------------------------------------------------------------------------------
  function renderCurve(d) {
    const epochs = d.epochs.map((r) => r.epoch);
    const withBest = d.epochs.filter((r) => r.best !== null);
    const traces = [
      { name: "best of epoch", x: withBest.map((r) => r.epoch), y: withBest.map((r) => r.best), mode: "lines+markers",
        line: { color: "#0b62c4" },
        // Confirmed results carry an interval (data.Measured); single runs have none and draw no bar.
        error_y: { type: "data", symmetric: false, visible: withBest.some((r) => r.best_low !== null),
          array: withBest.map((r) => (r.best_high === null ? 0 : r.best_high - r.best)),
          arrayminus: withBest.map((r) => (r.best_low === null ? 0 : r.best - r.best_low)) } },
      { name: "mean of epoch", x: d.epochs.filter((r) => r.mean !== null).map((r) => r.epoch),
        y: d.epochs.filter((r) => r.mean !== null).map((r) => r.mean), mode: "lines+markers", line: { color: "#8d99ae" } },
      { name: "best so far", x: d.epochs.filter((r) => r.best_so_far !== null).map((r) => r.epoch),
        y: d.epochs.filter((r) => r.best_so_far !== null).map((r) => r.best_so_far), mode: "lines",
        line: { color: "#2e9d4b", dash: "dot" } },
    ];
    const shapes = [];
    const b = d.baseline;
    if (b.value !== null) {
      const x0 = epochs.length ? Math.min(...epochs) - 0.3 : -0.5, x1 = epochs.length ? Math.max(...epochs) + 0.3 : 0.5;
      traces.push({ name: "baseline", x: [x0, x1], y: [b.value, b.value], mode: "lines", line: { color: "#d7263d", dash: "dash" } });
      if (b.low !== null && b.high !== null) {
        shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: b.low, y1: b.high, fillcolor: "#d7263d", opacity: 0.12, line: { width: 0 } });
      }
    }
    Plotly.react("plot-curve", traces, layout({ shapes, xaxis: { title: { text: "epoch" }, dtick: 1, zeroline: false },
      yaxis: { title: { text: `${d.metric.name} (${d.metric.goal})` } } }), PLOT_CONFIG);
  }

  // ---- every experiment as a point ----------------------------------------------------------------------
  function renderExperiments(d) {
    const byTime = state.xAxis === "time";
    const xOf = (e) => (byTime ? when(e.time) : e.epoch + (e.idx + 0.5) / Math.max(1, d.ideas_per_epoch) - 0.5);
    const traces = [];
    for (const status of STATUS_ORDER) {
      const group = d.experiments.filter((e) => e.status === status);
      if (!group.length) continue;
      for (const measured of [true, false]) {
        const pts = group.filter((e) => (e.metric !== null) === measured);
        if (!pts.length) continue;
        traces.push({
          name: status, legendgroup: status, showlegend: measured || !group.some((e) => e.metric !== null),
          type: "scatter", mode: "markers", x: pts.map(xOf),
          y: measured ? pts.map((e) => e.metric) : pts.map((e) => e.status),
          yaxis: measured ? "y" : "y2", customdata: pts.map((e) => e.id),
          marker: { color: STATUS_COLORS[status] || "#333", size: 8, line: { width: 0.5, color: "#fff" } },
          hovertext: pts.map((e) => `#${e.id} · epoch ${e.epoch} · ${e.kind} · ${e.status}` +
            (e.metric !== null ? ` · ${d.metric.name} ${fmt(e.metric, 6)}` : "") + `<br>${wrap(e.idea)}`),
          hoverinfo: "text",
        });
      }
    }
    const shapes = d.baseline.value === null ? [] : [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: d.baseline.value,
      y1: d.baseline.value, yref: "y", line: { color: "#d7263d", dash: "dash", width: 1 } }];
    // Experiments without a metric (failed, timeout, ...) sit on a strip below, one row per status.
    const strip = d.experiments.some((e) => e.metric === null);
    Plotly.react("plot-experiments", traces, layout({ shapes,
      xaxis: Object.assign({ anchor: strip ? "y2" : "y" },
        byTime ? { type: "date", title: { text: "finished at (UTC)" } } : { title: { text: "epoch" }, dtick: 1, zeroline: false }),
      yaxis: { domain: strip ? [0.32, 1] : [0, 1], title: { text: d.metric.name } },
      yaxis2: { domain: [0, 0.22], type: "category", visible: strip, title: { text: "no metric" } } }), PLOT_CONFIG);
    const plot = $("plot-experiments");
    if (!plot.dataset.bound) {
      plot.dataset.bound = "1";
      plot.on("plotly_click", (ev) => { if (ev.points.length) openRow(ev.points[0].customdata, true); });
    }
  }

  // ---- completion per epoch -------------------------------------------------------------------------------
  function renderCompletion(d) {
    const x = d.epochs.map((r) => r.epoch);
    const traces = STATUS_ORDER.filter((s) => d.epochs.some((r) => r.statuses[s])).map((s) => ({
      name: s, type: "bar", x, y: d.epochs.map((r) => r.statuses[s] || 0), marker: { color: STATUS_COLORS[s] } }));
    for (const [key, color] of [["proposed", "#1d232b"], ["implemented", "#0b62c4"], ["ran", "#f08a24"]]) {
      traces.push({ name: key, type: "scatter", mode: "lines+markers", x, y: d.epochs.map((r) => r[key]),
        line: { color, width: 1.5 }, marker: { symbol: "diamond" } });
    }
    Plotly.react("plot-completion", traces, layout({ barmode: "stack", xaxis: { title: { text: "epoch" }, dtick: 1 },
      yaxis: { title: { text: "ideas" } } }), PLOT_CONFIG);
  }

  // ---- cost and compute -----------------------------------------------------------------------------------
  function renderCost(d) {
    const x = d.epochs.map((r) => r.epoch);
    const gpu = d.totals.gpu_hours > 0;
    const hours = gpu ? "gpu_hours" : "job_hours", label = gpu ? "GPU-hours" : "job-hours (no GPU)";
    const traces = [
      { name: "LLM $", type: "bar", x, y: d.epochs.map((r) => r.llm_cost_usd), marker: { color: "#9b5de5" }, offsetgroup: 1 },
      { name: label, type: "bar", x, y: d.epochs.map((r) => r[hours]), marker: { color: "#f08a24" }, yaxis: "y2", offsetgroup: 2 },
      { name: "LLM $ cumulative", type: "scatter", mode: "lines+markers", x, y: d.epochs.map((r) => r.cum_llm_cost_usd), line: { color: "#9b5de5" } },
      { name: `${label} cumulative`, type: "scatter", mode: "lines+markers", x, y: d.epochs.map((r) => r["cum_" + hours]),
        line: { color: "#f08a24" }, yaxis: "y2" },
    ];
    Plotly.react("plot-cost", traces, layout({ barmode: "group", margin: { l: 60, r: 70, t: 10, b: 40 }, xaxis: { title: { text: "epoch" }, dtick: 1 },
      yaxis: { title: { text: "LLM $" }, rangemode: "tozero" },
      yaxis2: { title: { text: label }, overlaying: "y", side: "right", rangemode: "tozero" } }), PLOT_CONFIG);
  }

  // ---- cards and run metadata -----------------------------------------------------------------------------
  function renderCards(d) {
    const best = d.experiments.find((e) => e.id === d.best_id);
    const counts = {};
    for (const e of d.experiments) counts[e.status] = (counts[e.status] || 0) + 1;
    const cards = [
      ["baseline " + d.metric.name, d.baseline.value === null ? (d.baseline.status || "pending") : fmt(d.baseline.value, 6)],
      ["best " + d.metric.name, best ? `${fmt(best.metric, 6)} (#${best.id})` : "none yet"],
      ["experiments", `${d.experiments.length}`], ["ok", `${counts.ok || 0}`],
      ["failed / other", `${d.experiments.length - (counts.ok || 0)}`],
      ["LLM cost", `$${d.totals.llm_cost_usd.toFixed(4)}`],
      [d.totals.gpu_hours > 0 ? "GPU-hours" : "job-hours", fmt(d.totals.gpu_hours > 0 ? d.totals.gpu_hours : d.totals.job_hours, 3)],
    ];
    $("cards").innerHTML = cards.map(([l, v]) => `<div class="card"><div class="label">${esc(l)}</div><div class="value">${esc(v)}</div></div>`).join("");
    $("meta").tBodies[0].innerHTML = d.meta.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("");
    $("metric-header").textContent = d.metric.name;
  }

  // ---- the experiments table ------------------------------------------------------------------------------
  function sortedRows(d) {
    const key = state.sortKey, dir = state.sortDir;
    const f = state.filter.toLowerCase();
    const rows = d.experiments.filter((e) => !f || `${e.status} ${e.kind} ${e.idea} #${e.id}`.toLowerCase().includes(f));
    return rows.sort((a, b) => {
      const x = a[key], y = b[key];
      if (x === null && y === null) return a.id - b.id;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir || a.id - b.id;
    });
  }

  function detailHtml(d, e) {
    const children = d.experiments.filter((c) => c.parents.includes(e.id)).map((c) => c.id);
    const link = (id) => `<a href="#exp-${id}" data-open="${id}">#${id}</a>`;
    const parts = [`<h4>Idea</h4><pre>${esc(e.idea)}</pre>`,
      `<h4>Lineage</h4><div class="lineage">parents: ${e.parents.map(link).join(" ") || "none"}` +
      ` · children: ${children.map(link).join(" ") || "none"}` + (e.strategy ? ` · ${esc(e.strategy)}` : "") + `</div>`];
    if (e.reason) parts.push(`<h4>Reason</h4><pre>${esc(e.reason)}</pre>`);
    if (e.flags.length) parts.push(`<h4>Flags</h4><p>${esc(e.flags.join(", "))}</p>`);
    if (e.audit) parts.push(`<h4>Audit (${esc(e.audit.model)}): ${esc(e.audit.verdict)}</h4><pre>${esc(e.audit.reasoning)}</pre>`);
    const more = e.details === false ? state.details.get(e.id) : e;
    if (more) {
      // diff_html is produced by Pygments on the server side: already escaped.
      parts.push(`<h4>Diff</h4>` + (more.diff_html ? `<pre class="diff">${more.diff_html}</pre>` : `<p class="muted">no code change</p>`));
      if (more.log_tail) parts.push(`<h4>Log tail</h4><pre>${esc(more.log_tail)}</pre>`);
    } else if (state.live) {
      parts.push(`<p class="muted">loading the diff and log tail…</p>`);
      fetchDetails(e.id);
    } else {
      parts.push(`<p class="muted details-omitted">This report embeds the diff and log tail of ${d.details_embedded} of ` +
        `${d.experiments.length} experiments (the best, the winners and the latest). This one's: ` +
        `<code>idealab serve</code> shows it, <code>idealab export</code> holds every diff, and its logs are in ` +
        `<code>experiments/${String(e.id).padStart(5, "0")}/logs/</code> of the run directory.</p>`);
    }
    parts.push(`<p class="muted">created ${esc(e.created_iso)} · attempts ${e.attempts} · ${fmt(e.job_hours, 3)} job-h · ` +
      `${fmt(e.gpu_hours, 3)} GPU-h · LLM $${e.llm_cost_usd.toFixed(4)} (${e.llm_calls} calls)</p>`);
    return parts.join("");
  }

  async function fetchDetails(id) {
    if (state.details.has(id)) return;
    state.details.set(id, null);
    try {
      const resp = await fetch(state.live.detail_url.replace("{id}", id), { cache: "no-store" });
      if (resp.ok) { state.details.set(id, await resp.json()); renderTable(state.data); return; }
    } catch (err) { /* the server is gone: the live badge says so */ }
    state.details.delete(id);
  }

  function renderTable(d) {
    const body = $("experiments").tBodies[0];
    const html = [];
    const rows = sortedRows(d);
    for (const e of rows.slice(0, state.shown)) {
      const open = state.open.has(e.id);
      html.push(`<tr class="row${open ? " open" : ""}" id="exp-${e.id}" data-id="${e.id}"><td class="num">${e.id}</td>` +
        `<td class="num">${e.epoch}</td><td>${esc(e.kind)}</td>` +
        `<td><span class="status" style="background:${STATUS_COLORS[e.status] || "#333"}">${esc(e.status)}</span>` +
        (e.flags.length ? ` <span class="flags">${esc(e.flags.join(", "))}</span>` : "") + `</td>` +
        `<td class="num">${fmt(e.metric, 6)}</td><td class="num">${e.duration_s === null ? "" : e.duration_s.toFixed(1)}</td>` +
        `<td class="num">${e.llm_cost_usd ? e.llm_cost_usd.toFixed(4) : ""}</td><td class="idea" title="${esc(e.idea)}">${esc(e.idea)}</td></tr>`);
      if (open) html.push(`<tr class="detail"><td colspan="8">${detailHtml(d, e)}</td></tr>`);
    }
    if (rows.length > state.shown) {
      html.push(`<tr class="more"><td colspan="8"><button type="button" id="show-more">show ${Math.min(TABLE_PAGE, rows.length - state.shown)} more ` +
        `(${state.shown} of ${rows.length} shown)</button></td></tr>`);
    }
    body.innerHTML = html.join("");
    for (const th of $("experiments").tHead.rows[0].cells) {
      th.classList.toggle("asc", th.dataset.key === state.sortKey && state.sortDir === 1);
      th.classList.toggle("desc", th.dataset.key === state.sortKey && state.sortDir === -1);
    }
  }

  function openRow(id, scroll) {
    state.open.add(id);
    const at = sortedRows(state.data).findIndex((e) => e.id === id);
    if (at >= state.shown) state.shown = at + 1; // a row opened from a link or a plot is drawn
    renderTable(state.data);
    if (scroll) { const row = $(`exp-${id}`); if (row) row.scrollIntoView({ block: "center" }); }
  }

  function bindTable() {
    $("experiments").tHead.addEventListener("click", (ev) => {
      const th = ev.target.closest("th"); if (!th) return;
      state.sortDir = state.sortKey === th.dataset.key ? -state.sortDir : 1;
      state.sortKey = th.dataset.key;
      renderTable(state.data);
    });
    $("experiments").tBodies[0].addEventListener("click", (ev) => {
      if (ev.target.closest("#show-more")) { state.shown += TABLE_PAGE; renderTable(state.data); return; }
      const link = ev.target.closest("a[data-open]");
      if (link) { ev.preventDefault(); openRow(Number(link.dataset.open), true); return; }
      const row = ev.target.closest("tr.row"); if (!row) return;
      const id = Number(row.dataset.id);
      if (state.open.has(id)) state.open.delete(id); else state.open.add(id);
      renderTable(state.data);
    });
    $("filter").addEventListener("input", (ev) => { state.filter = ev.target.value; renderTable(state.data); });
    $("x-axis").addEventListener("change", (ev) => { state.xAxis = ev.target.value; renderExperiments(state.data); });
  }

  function render(d) {
    state.data = d;
    renderCards(d); renderCurve(d); renderExperiments(d); renderCompletion(d); renderCost(d); renderTable(d);
  }

  // ---- live: short polling with ETags (the server answers 304 while the database is unchanged) --------------
  function startLive(live) {
    let etag = live.etag;
    const badge = $("live-state");
    $("run-select").addEventListener("change", (ev) => { window.location.href = ev.target.value; });
    async function poll() {
      try {
        const resp = await fetch(live.data_url, { headers: etag ? { "If-None-Match": etag } : {}, cache: "no-store" });
        if (resp.status === 200) { etag = resp.headers.get("ETag"); state.details.clear(); render(await resp.json()); }
        badge.textContent = "live"; badge.classList.remove("stale");
      } catch (err) {
        badge.textContent = "server unreachable"; badge.classList.add("stale");
      }
      setTimeout(poll, live.interval_ms);
    }
    setTimeout(poll, live.interval_ms);
  }

  const data = JSON.parse($("idealab-data").textContent);
  const liveNode = $("idealab-live");
  const live = liveNode ? JSON.parse(liveNode.textContent) : null;
  state.live = live;
  bindTable();
  render(data);
  if (live) startLive(live);
  window.idealab = { state, render };
})();
