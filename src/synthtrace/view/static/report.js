// The report: the figures `synthtrace report` computed, drawn from the JSON inside this very file.
(function () {
  "use strict";
  const { html, render, useEffect, useRef } = window.htmPreact;
  const { at, pick, fmt, Trace, Source, Messages, Table, Histogram } = window.ST;
  const data = JSON.parse(document.getElementById("data").textContent);

  function Bars({ rows, label }) {
    const max = Math.max(1, ...rows.map((r) => r[1]));
    return html`<table class="bars" data-testid=${"bars-" + label}><tbody>${rows.map(([k, v, total]) => html`<tr>
      <th>${fmt(k)}</th><td><div class="bar" style=${"width:" + Math.round(100 * v / (total || max)) + "%"}></div></td>
      <td class="num">${total ? `${fmt(v)} / ${fmt(total)} (${Math.round(100 * v / total)} %)` : fmt(v)}</td></tr>`)}</tbody></table>`;
  }

  function Line({ xs, ys, label }) {
    const ref = useRef(null);
    useEffect(() => {
      const plot = new window.uPlot({ width: 520, height: 180, legend: { show: false }, scales: { x: { time: false } },
        axes: [{ label: "minutes", size: 30 }, { size: 60 }],
        series: [{}, { label, stroke: "rgb(60,110,190)", width: 2, points: { show: false } }] }, [xs, ys], ref.current);
      return () => plot.destroy();
    }, []);
    return html`<div class="line" ref=${ref} data-testid=${"line-" + label}></div>`;
  }

  function Mix({ cells }) {
    const types = [...new Set(cells.map((c) => c[0]))], levels = [...new Set(cells.map((c) => c[1]))];
    const n = (t, l) => (cells.find((c) => c[0] === t && c[1] === l) || [0, 0, 0])[2];
    return html`<table class="rows" data-testid="mix"><thead><tr><th></th>${levels.map((l) => html`<th>${fmt(l)}</th>`)}</tr></thead>
      <tbody>${types.map((t) => html`<tr><th>${fmt(t)}</th>${levels.map((l) => html`<td>${n(t, l) || ""}</td>`)}</tr>`)}</tbody></table>`;
  }

  function Sample({ doc }) {
    const d = doc.data, view = data.view;
    const q = pick(view, "question", d), t = pick(view, "trace", d), a = pick(view, "answer", d), s = pick(view, "source", d);
    const marks = ((view.declared && view.declared.marks) || []).map(([label, path]) => [label, at(d, path)]);
    return html`<details class="sample" data-testid="sample"><summary>line ${doc.line} · ${fmt(d.note_id || d.id || "")}</summary>
      ${s ? html`<h4>source</h4><${Source} text=${at(d, s)} marks=${marks} />` : ""}
      ${q ? html`<h4>question</h4><${Messages} value=${Array.isArray(at(d, q)) ? at(d, q) : [{ role: "user", content: at(d, q) }]} />` : ""}
      ${t ? html`<h4>trace</h4><${Trace} text=${at(d, t)} />` : ""}
      ${a ? html`<h4>answer</h4><pre class="text">${fmt(at(d, a))}</pre>` : ""}
      ${((view.declared && view.declared.verdicts) || []).filter((p) => at(d, p) !== undefined).map((p) =>
        html`<h4>${p}</h4><div data-testid="sample-verdict"><${Table} value=${at(d, p)} /></div>`)}</details>`;
  }

  function Report() {
    const f = data.funnel;
    return html`<div class="report-body">
      <h1>${fmt(data.recipe)} · ${data.run}</h1>
      <p class="muted">${fmt(data.model)} · ${fmt(data.status)} · made ${data.generated}</p>
      <section data-testid="funnel"><h3>Funnel</h3><${Bars} label="funnel" rows=${Object.entries(f).filter(([, v]) => v !== null && v !== undefined)} /></section>
      ${data.reasons.length ? html`<section data-testid="reasons"><h3>Rejected, by reason</h3>
        <${Bars} label="reasons" rows=${data.reasons.map((r) => [r.reason, r.count])} /></section>` : ""}
      ${data.stages.length ? html`<section><h3>Rejected, by stage</h3><${Bars} label="stages" rows=${data.stages} /></section>` : ""}
      ${data.verified ? html`<section data-testid="verified"><h3>Verified, by error type</h3><${Bars} label="verified" rows=${data.verified.by} />
        <h3>Verified on attempt</h3><${Bars} label="attempts" rows=${data.verified.attempts} /></section>` : ""}
      ${data.mix ? html`<section><h3>Question type × level</h3><${Mix} cells=${data.mix} /></section>` : ""}
      <section><h3>Distributions</h3><div class="grid">${Object.entries(data.distributions).map(([p, h]) => html`<div>
        <h4>${p}</h4><${Histogram} hist=${h} label=${p} width=${300} height=${110} /></div>`)}</div></section>
      ${data.spend && data.spend.minutes ? html`<section data-testid="spend"><h3>Over time</h3><div class="grid">
        <div><h4>tokens</h4><${Line} xs=${data.spend.minutes} ys=${data.spend.tokens} label="tokens" /></div>
        <div><h4>$</h4><${Line} xs=${data.spend.minutes} ys=${data.spend.usd_series} label="usd" /></div></div>
        <p>${fmt(data.calls)} calls · ${fmt(data.spend.tokens_total)} tokens · $${fmt(data.spend.usd)} ·
           per kept example: ${fmt(data.per_example.calls)} calls, $${fmt(data.per_example.usd)}</p></section>` : ""}
      ${data.removed ? html`<section data-testid="removed"><h3>Removed at export (${fmt(data.removed.total)})</h3>
        <${Bars} label="removed" rows=${data.removed.reasons} />
        <table class="rows"><thead><tr><th>example</th><th>reason</th><th>part</th><th>method</th><th>evidence</th>
          <th>item</th><th>overlap / similarity</th></tr></thead><tbody>${data.removed.entries.map((e) => html`<tr>
          <td>${fmt(e.row || e.id)}</td><td>${fmt(e.reason)}</td><td>${fmt(e.part)}</td><td>${fmt(e.method)}</td>
          <td>${fmt(e.evidence)}</td><td>${fmt(e.item)}</td><td class="num">${fmt(e.score)}</td></tr>`)}</tbody></table></section>` : ""}
      <section><h3>Options</h3><${Table} value=${data.options} /></section>
      ${data.sample.length ? html`<section><h3>A sample of rows</h3>${data.sample.map((d) => html`<${Sample} doc=${d} />`)}</section>` : ""}
    </div>`;
  }

  render(html`<${Report} />`, document.getElementById("app"));
})();
