// Pieces shared by the viewer and the report: how a trace, a source, messages, verdicts and a
// histogram are drawn. Every value from a run is model output or user data, so it only ever goes
// into the page as text (Preact text nodes and attribute values); nothing here builds markup from it.
(function () {
  "use strict";
  const { html, useEffect, useRef } = window.htmPreact;

  // The value at a dotted path ("error_details.error_sentence"), or undefined.
  function at(obj, path) {
    if (!path) return undefined;
    let v = obj;
    for (const part of path.split(".")) {
      if (v === null || typeof v !== "object") return undefined;
      v = v[part];
    }
    return v;
  }

  // The field a row shows as `role`: the recipe's declaration, else the first candidate it has.
  function pick(view, role, data) {
    const declared = view && view.declared && view.declared[role];
    if (declared && at(data, declared) !== undefined) return declared;
    for (const path of (view && view.candidates && view.candidates[role]) || []) {
      if (at(data, path) !== undefined && at(data, path) !== null) return path;
    }
    return null;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en") : v.toPrecision(4).replace(/\.?0+$/, "");
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // A trace as segments: text outside tags, and <think>/<thought>/<reasoning>/<answer> blocks.
  const TAG = /<(think|thought|reasoning|answer)>([\s\S]*?)(?:<\/\1>|$)/gi;
  function segments(text) {
    const out = [];
    let last = 0;
    text.replace(TAG, (whole, tag, inner, offset) => {
      if (offset > last) out.push({ text: text.slice(last, offset) });
      out.push({ tag: tag.toLowerCase(), text: inner });
      last = offset + whole.length;
      return whole;
    });
    if (last < text.length) out.push({ text: text.slice(last) });
    return out.filter((s) => s.tag || s.text.trim());
  }

  function Trace({ text }) {
    if (typeof text !== "string") return html`<pre class="text">${fmt(text)}</pre>`;
    return html`<div class="trace">${segments(text).map((s) =>
      s.tag ? html`<div class=${"block block-" + s.tag}><span class="tag">${s.tag}</span><pre class="text">${s.text.trim()}</pre></div>`
            : html`<pre class="text">${s.text.trim()}</pre>`)}</div>`;
  }

  // The source with each mark's text highlighted where it occurs; marks not found in it are listed.
  function Source({ text, marks }) {
    if (typeof text !== "string") return html`<pre class="text">${fmt(text)}</pre>`;
    const found = [], missing = [];
    for (const [label, value] of marks || []) {
      if (typeof value !== "string" || !value) continue;
      const i = text.indexOf(value);
      (i >= 0 ? found : missing).push({ label, value, i });
    }
    found.sort((a, b) => a.i - b.i);
    const parts = [];
    let pos = 0;
    for (const m of found) {
      if (m.i < pos) { missing.push(m); continue; }
      parts.push(text.slice(pos, m.i));
      parts.push(html`<mark class=${"mark-" + m.label} title=${m.label}>${m.value}</mark>`);
      pos = m.i + m.value.length;
    }
    parts.push(text.slice(pos));
    return html`<div><pre class="text source">${parts}</pre>
      ${missing.map((m) => html`<div class=${"marked mark-" + m.label}><span class="tag">${m.label}</span>${m.value}</div>`)}</div>`;
  }

  function Messages({ value }) {
    if (!Array.isArray(value)) return html`<pre class="text">${fmt(value)}</pre>`;
    return html`<div class="messages">${value.map((m) => html`<div class="message">
      <span class="tag">${fmt(m && m.role)}</span><pre class="text">${typeof (m && m.content) === "string" ? m.content : fmt(m && m.content)}</pre></div>`)}</div>`;
  }

  // A verdict (checks, judges, grades) as a table; nested values as indented JSON text.
  function Table({ value }) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return html`<pre class="text">${typeof value === "string" ? value : JSON.stringify(value, null, 2)}</pre>`;
    }
    return html`<table class="kv"><tbody>${Object.entries(value).map(([k, v]) => html`<tr>
      <th>${k}</th><td>${v !== null && typeof v === "object" ? html`<pre class="text">${JSON.stringify(v, null, 2)}</pre>` : fmt(v)}</td></tr>`)}</tbody></table>`;
  }

  // Bars of a histogram ({min, width, bins}) with uPlot; `onPick(lo, hi)` when a bar is clicked.
  function Histogram({ hist, onPick, width = 260, height = 90, label = "" }) {
    const ref = useRef(null);
    useEffect(() => {
      if (!ref.current || !hist || !hist.bins) return undefined;
      const xs = hist.bins.map((_, i) => hist.min + (i + 0.5) * hist.width);
      const plot = new window.uPlot({
        width, height, legend: { show: false }, cursor: { y: false, points: { show: false } },
        scales: { x: { time: false } },
        axes: [{ size: 24, font: "10px sans-serif", values: (u, v) => v.map((x) => fmt(x)) },
               { size: 30, font: "10px sans-serif" }],
        series: [{}, { label, fill: "rgba(60,110,190,0.55)", stroke: "rgb(60,110,190)", points: { show: false },
                       paths: window.uPlot.paths.bars({ size: [0.9, 60] }) }],
      }, [xs, hist.bins], ref.current);
      const click = () => {
        const i = plot.cursor.idx;
        if (onPick && i !== null && i !== undefined) onPick(hist.min + i * hist.width, hist.min + (i + 1) * hist.width);
      };
      plot.over.addEventListener("click", click);
      return () => plot.destroy();
    }, [hist && JSON.stringify(hist)]);
    return html`<div class="hist" ref=${ref} data-testid=${"hist-" + label}></div>`;
  }

  window.ST = { at, pick, fmt, segments, Trace, Source, Messages, Table, Histogram };
})();
