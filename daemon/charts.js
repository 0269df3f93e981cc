// Shared by the balancer's and the server's dashboards: DOM and SVG helpers and a
// hand-written SVG time chart (no library, nothing fetched from elsewhere).
"use strict";
// The SVG namespace, from the HTML parser (so that the page holds no URL at all).
const SVG_NS = (() => { const d = document.createElement("div"); d.innerHTML = "<svg></svg>"; return d.firstChild.namespaceURI; })();
const HOUR = 3600;
const $ = (id) => document.getElementById(id);
const color = (v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim() || "#888";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? "–"))));
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function fmt(v, digits) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits ?? 0); }

// ---- charts: hand-written SVG, one per question --------------------------------------
function chart(id, title, times, series, opts) {
  // series: [{name, values, color, area}], stacked when opts.stacked; drawn into the
  // element ``id`` (made in #charts if missing). The time axis spans what there is,
  // at least five minutes and at most an hour.
  const W = 400, H = 120, L = 34, B = 14;
  const box = $(id) || $("charts").appendChild(el("div", { class: "chart", id }));
  const n = times.length;
  const tMax = n ? times[n - 1] : Date.now() / 1000;
  const tMin = tMax - Math.min(HOUR, Math.max(300, n ? tMax - times[0] : 0));
  const x = (t) => L + (W - L) * (Math.max(t, tMin) - tMin) / (tMax - tMin || 1);
  let stack = new Array(n).fill(0);
  const shapes = [];
  let yMax = opts.max || 0;
  const tops = series.map((s) => {
    const top = s.values.map((v, i) => (opts.stacked ? stack[i] : 0) + (v || 0));
    if (opts.stacked) stack = top;
    return top;
  });
  for (const top of tops) for (const v of top) yMax = Math.max(yMax, v);
  yMax = yMax || 1;
  const y = (v) => (H - B) - (H - B - 4) * v / yMax;
  let below = new Array(n).fill(0);
  series.forEach((s, k) => {
    const top = tops[k];
    if (!n) return;
    const line = top.map((v, i) => `${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
    // A line breaks where a sample has no value (no job ended then), rather than fall to 0.
    const runs = [];
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || Number.isNaN(v)) { runs.push([]); return; }
      if (!runs.length) runs.push([]);
      runs[runs.length - 1].push(line[i]);
    });
    if (opts.stacked || s.area) {
      const base = (opts.stacked ? below : new Array(n).fill(0)).map((v, i) => `${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`).reverse();
      shapes.push(svg("polygon", { points: line.concat(base).join(" "), fill: s.color, "fill-opacity": opts.stacked ? 0.85 : 0.25, stroke: "none" }));
    }
    if (!opts.stacked) {
      for (const run of runs) {
        if (run.length > 1) shapes.push(svg("polyline", { points: run.join(" "), fill: "none", stroke: s.color, "stroke-width": 1.5 }));
      }
    }
    if (n <= 90) {  // (few points, as after a start: show each)
      top.forEach((v, i) => {
        if (s.values[i] === null || s.values[i] === undefined) return;
        shapes.push(svg("circle", { cx: x(times[i]).toFixed(1), cy: y(v).toFixed(1), r: 1.6, fill: s.color }));
      });
    }
    if (opts.stacked) below = top;
  });
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  for (const frac of [0, 0.5, 1]) {
    root.append(svg("line", { x1: L, x2: W, y1: y(yMax * frac), y2: y(yMax * frac), stroke: "#eef0f4" }));
    const label = svg("text", { x: L - 3, y: y(yMax * frac) + 3, "text-anchor": "end", class: "axis" });
    label.textContent = fmt(yMax * frac, yMax * frac < 10 && frac ? 1 : 0);
    root.append(label);
  }
  for (const [t, anchor] of [[tMin, "start"], [tMax, "end"]]) {
    const label = svg("text", { x: x(t), y: H - 2, "text-anchor": anchor, class: "axis" });
    label.textContent = clock(t);
    root.append(label);
  }
  root.append(...shapes);
  const legend = el("div", { class: "legend" });
  for (const s of series) {
    const swatch = el("i"); swatch.style.background = s.color;
    legend.append(swatch, s.name);
  }
  const last = n ? tops.length && tops[tops.length - 1][n - 1] : 0;
  box.setAttribute("data-points", String(n));
  // (for tests and curious readers: how many points, their sum, the newest top)
  box.setAttribute("data-total", String(series.reduce((sum, s) => sum + s.values.reduce((a, v) => a + (v || 0), 0), 0)));
  box.setAttribute("data-last", String(last));
  box.replaceChildren(el("h3", {}, title), root, legend);
}

function perSecond(values, seconds) { return values.map((v) => (v === null ? null : v / seconds)); }

// Adds to ``into`` (columns, oldest first) the rows of ``rows`` newer than its last,
// and drops what is older than an hour.
function appendRows(into, rows) {
  const last = into.t.length ? into.t[into.t.length - 1] : 0;
  rows.t.forEach((t, i) => {
    if (t <= last) return;
    for (const name of Object.keys(into)) into[name].push(rows[name] ? rows[name][i] : null);
  });
  const cut = into.t.length ? into.t[into.t.length - 1] - HOUR : 0;
  let drop = 0;
  while (drop < into.t.length && into.t[drop] <= cut) drop++;
  if (drop) for (const name of Object.keys(into)) into[name].splice(0, drop);
}
