// The viewer: filters and search on the left, the matching rows or rejected entries in the middle,
// one example on the right. Everything comes from the JSON API of `synthtrace view`'s own server.
(function () {
  "use strict";
  const { html, render, useState, useEffect } = window.htmPreact;
  const { at, pick, fmt, Trace, Source, Messages, Table, Histogram } = window.ST;
  const PAGE = 50;
  const NUMBER_FACETS_SHOWN = 8;

  async function api(path, params) {
    const q = params ? "?" + new URLSearchParams(params).toString() : "";
    const r = await fetch("/api/" + path + q);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  function useDebounced(value, ms) {
    const [v, setV] = useState(value);
    useEffect(() => { const t = setTimeout(() => setV(value), ms); return () => clearTimeout(t); }, [value]);
    return v;
  }

  function ValueFacet({ path, facet, chosen, onChange }) {
    const values = facet.values;
    if (!values.length && !chosen) return null;
    const toggle = (v) => {
      const set = new Set(chosen || []);
      set.has(v) ? set.delete(v) : set.add(v);
      onChange(set.size ? { in: [...set] } : null);
    };
    return html`<details class="facet" open=${values.length <= 12 || !!chosen} data-testid=${"facet-" + path}>
      <summary>${path}${chosen ? html` <span class="badge">${chosen.length}</span>` : ""}</summary>
      ${values.map(([v, n]) => html`<label class="facet-value">
        <input type="checkbox" checked=${(chosen || []).includes(v)} onChange=${() => toggle(v)}
               data-testid=${"facet-" + path + "=" + v} />
        <span class="value">${fmt(v)}</span><span class="count">${n.toLocaleString("en")}</span></label>`)}
      ${chosen && chosen.filter((c) => !values.some(([v]) => v === c)).map((c) => html`<label class="facet-value">
        <input type="checkbox" checked onChange=${() => toggle(c)} /><span class="value">${fmt(c)}</span>
        <span class="count">0</span></label>`)}
    </details>`;
  }

  function NumberFacet({ path, facet, range, onChange }) {
    const set = (key, text) => {
      const next = { ...(range || {}) };
      if (text === "") delete next[key]; else next[key] = Number(text);
      onChange(Object.keys(next).length ? next : null);
    };
    return html`<details class="facet" open=${!!range} data-testid=${"facet-" + path}>
      <summary>${path}${range ? html` <span class="badge">range</span>` : ""}</summary>
      <${Histogram} hist=${facet} label=${path} onPick=${(lo, hi) => onChange({ min: lo, max: hi })} />
      <div class="range">
        <input type="number" placeholder=${fmt(facet.min)} value=${range && range.min !== undefined ? range.min : ""}
               onChange=${(e) => set("min", e.target.value)} data-testid=${"min-" + path} />
        –
        <input type="number" placeholder=${fmt(facet.max)} value=${range && range.max !== undefined ? range.max : ""}
               onChange=${(e) => set("max", e.target.value)} data-testid=${"max-" + path} />
      </div></details>`;
  }

  function Filters({ facets, spec, setSpec, view }) {
    if (!facets) return null;
    // the texts an example shows (its source, question, trace, answer) are searched, not listed
    const texts = new Set(["source", "question", "trace", "answer"].flatMap((r) =>
      [view.declared && view.declared[r], ...view.candidates[r]]).filter(Boolean));
    const setField = (path, cond) => {
      const fields = { ...(spec.fields || {}) };
      if (cond) fields[path] = cond; else delete fields[path];
      setSpec({ ...spec, fields });
    };
    const entries = Object.entries(facets.fields).filter(([p]) => !texts.has(p));
    // a field worth filtering on: two values or more, or one value that only some documents have
    const splits = (f) => f.values.length > 1 || f.values.reduce((n, [, c]) => n + c, 0) < facets.total;
    const values = entries.filter(([p, f]) => f.type === "value" && (splits(f) || (spec.fields || {})[p]));
    const numbers = entries.filter(([p, f]) => f.type === "number" && (f.max > f.min || (spec.fields || {})[p]));
    return html`<div class="filters">
      ${values.map(([p, f]) => html`<${ValueFacet} key=${p} path=${p} facet=${f} chosen=${((spec.fields || {})[p] || {}).in}
          onChange=${(c) => setField(p, c)} />`)}
      ${numbers.slice(0, NUMBER_FACETS_SHOWN).map(([p, f]) => html`<${NumberFacet} key=${p} path=${p} facet=${f}
          range=${(spec.fields || {})[p]} onChange=${(c) => setField(p, c)} />`)}
      ${numbers.length > NUMBER_FACETS_SHOWN ? html`<details class="facet"><summary>more numbers</summary>
        ${numbers.slice(NUMBER_FACETS_SHOWN).map(([p, f]) => html`<${NumberFacet} key=${p} path=${p} facet=${f}
          range=${(spec.fields || {})[p]} onChange=${(c) => setField(p, c)} />`)}</details>` : ""}
    </div>`;
  }

  function Reasons({ run, spec, setSpec, version }) {
    const [reasons, setReasons] = useState([]);
    useEffect(() => { api(run + "/reasons", { spec: JSON.stringify(spec) }).then(setReasons); }, [run, version]);
    const chosen = ((spec.fields || {}).reason_group || {}).in || [];
    const choose = (r) => {
      const fields = { ...(spec.fields || {}) };
      if (chosen.length === 1 && chosen[0] === r) delete fields.reason_group; else fields.reason_group = { in: [r] };
      setSpec({ ...spec, fields });
    };
    return html`<div class="reasons" data-testid="reasons"><h3>Rejected, by reason</h3>
      ${reasons.map((r) => html`<button class=${"reason" + (chosen.includes(r.reason) ? " chosen" : "")}
          onClick=${() => choose(r.reason)} data-testid="reason">
        <span class="count">${r.count.toLocaleString("en")}</span><span class="value">${r.reason}</span></button>`)}
    </div>`;
  }

  function summaryOf(item) {
    const f = item.fields;
    return f.note_id || f.part || f.id || f["user_interaction.question"] || item.group || "#" + item.n;
  }

  function List({ result, selected, onSelect, offset, setOffset }) {
    if (!result) return html`<p class="loading">Loading…</p>`;
    const cols = [...new Set(result.items.flatMap((i) => Object.keys(i.fields).filter((k) => i.fields[k] !== null)))]
      .filter((c) => !["note_id", "part", "id", "reason_group", "reason"].includes(c)).slice(0, 7);
    return html`<div class="list">
      <div class="pager" data-testid="pager">
        <span data-testid="total">${result.total.toLocaleString("en")}</span> match${result.total === 1 ? "" : "es"}
        ${result.total > PAGE ? html` · ${offset + 1}–${Math.min(offset + PAGE, result.total)}
          <button disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>‹ previous</button>
          <button disabled=${offset + PAGE >= result.total} onClick=${() => setOffset(offset + PAGE)}
                  data-testid="next">next ›</button>` : ""}
      </div>
      <table class="rows"><thead><tr><th>line</th><th>example</th>${cols.map((c) => html`<th>${c}</th>`)}</tr></thead>
      <tbody>${result.items.map((item) => html`<tr class=${item.n === selected ? "selected" : ""}
          onClick=${() => onSelect(item.n)} data-testid="row">
        <td>${item.line}</td><td class="example">${fmt(summaryOf(item))}</td>
        ${cols.map((c) => html`<td>${fmt(item.fields[c])}</td>`)}</tr>`)}</tbody></table>
    </div>`;
  }

  function Call({ run, call }) {
    const [full, setFull] = useState(null);
    const [open, setOpen] = useState(false);
    const toggle = () => {
      if (!open && !full) api(run + "/call/" + encodeURIComponent(call.key)).then(setFull, (e) => setFull({ error: String(e) }));
      setOpen(!open);
    };
    return html`<div class="call"><button class="link" onClick=${toggle} data-testid="call">
        ${fmt(call.model)} · ${fmt(call.prompt_tokens)} + ${fmt(call.completion_tokens)} tokens · $${fmt(call.cost_usd)}
        ${call.cached ? " · from the journal" : ""}${call.attempts > 1 ? ` · ${call.attempts} attempts` : ""}</button>
      ${open && full ? html`<div class="call-body">
        ${full.error ? html`<p class="error">${full.error}</p>` : html`
          <h4>asked</h4>${full.request ? html`<${Messages} value=${full.request.messages} />
            <${Table} value=${full.request.params} />` : html`<p class="muted">not recorded (an older journal)</p>`}
          <h4>answered</h4>${full.result.reasoning ? html`<${Trace} text=${"<think>" + full.result.reasoning + "</think>"} />` : ""}
          <pre class="text">${full.result.text}</pre>`}</div>` : ""}</div>`;
  }

  function Siblings({ doc, onSelect }) {
    if (!doc.siblings || doc.siblings.length < 2) return null;
    return html`<section data-testid="siblings"><h3>Samples of the same source</h3>
      <table class="rows"><tbody>${doc.siblings.map((s) => html`<tr class=${s.n === doc.n ? "selected" : ""}
          onClick=${() => onSelect(s.n, s.kind)}>
        <td class=${s.kind === "row" ? "pass" : "fail"}>${s.kind === "row" ? "kept" : "rejected"}</td>
        <td>${fmt(s.fields.note_id || s.fields.part || s.fields.id || "#" + s.n)}</td>
        <td>${s.kind === "row" ? (s.fields.verified !== undefined ? "verified: " + fmt(s.fields.verified) : "")
                               : fmt(s.fields.reason)}</td>
        <td>${s.fields.attempts !== undefined ? fmt(s.fields.attempts) + " attempt(s)" : ""}</td></tr>`)}</tbody></table>
    </section>`;
  }

  function Example({ run, view, n, onSelect }) {
    const [doc, setDoc] = useState(null);
    useEffect(() => { setDoc(null); if (n !== null) api(run + "/doc/" + n).then(setDoc); }, [run, n]);
    if (n === null) return html`<p class="muted">Choose an example.</p>`;
    if (!doc) return html`<p class="loading">Loading…</p>`;
    const d = doc.data;
    const shown = new Set(["provenance"]);
    const field = (role) => { const p = pick(view, role, d); if (p) shown.add(p.split(".")[0]); return p; };
    const source = field("source"), question = field("question"), trace = field("trace"), answer = field("answer");
    const marks = ((view.declared && view.declared.marks) || []).map(([label, path]) => [label, at(d, path)]);
    const verdicts = [...new Set([...((view.declared && view.declared.verdicts) || []), ...view.candidates.verdicts])]
      .filter((p) => at(d, p) !== undefined && at(d, p) !== null);
    verdicts.forEach((p) => shown.add(p.split(".")[0]));
    const calls = (d.provenance && d.provenance.calls) || d.calls || [];
    shown.add("calls");
    const rest = Object.fromEntries(Object.entries(d).filter(([k]) => !shown.has(k)));
    return html`<div class="example" data-testid="example">
      <h2>${doc.kind === "row" ? "Row" : "Rejected"} · line ${doc.line}
        ${d.note_id || d.part || d.id ? html` · <span>${fmt(d.note_id || d.part || d.id)}</span>` : ""}</h2>
      ${doc.kind === "rejected" ? html`<section class="rejection" data-testid="reason-text"><h3>Reason</h3>
        <pre class="text">${fmt(d.reason)}</pre></section>` : ""}
      <div class="columns">
        ${source ? html`<section class="source" data-testid="source"><h3>Source <span class="muted">${source}</span></h3>
          <${Source} text=${at(d, source)} marks=${marks} /></section>` : ""}
        <div>
          ${question ? html`<section data-testid="question"><h3>Question <span class="muted">${question}</span></h3>
            <${Messages} value=${Array.isArray(at(d, question)) ? at(d, question) : [{ role: "user", content: at(d, question) }]} />
          </section>` : ""}
          ${trace ? html`<section data-testid="trace"><h3>Trace <span class="muted">${trace}</span></h3>
            <${Trace} text=${at(d, trace)} /></section>` : ""}
          ${answer ? html`<section data-testid="answer"><h3>Answer <span class="muted">${answer}</span></h3>
            <pre class="text">${fmt(at(d, answer))}</pre></section>` : ""}
        </div>
      </div>
      ${verdicts.map((p) => html`<section class="verdict" data-testid="verdict"><h3>${p}</h3><${Table} value=${at(d, p)} /></section>`)}
      <${Siblings} doc=${doc} onSelect=${onSelect} />
      ${calls.length ? html`<section data-testid="calls"><h3>Calls (${calls.length})</h3>
        ${calls.map((c) => html`<${Call} run=${run} call=${c} />`)}</section>` : ""}
      <section><h3>Other fields</h3><${Table} value=${rest} /></section>
      ${d.provenance ? html`<details><summary>provenance</summary><${Table} value=${d.provenance} /></details>` : ""}
    </div>`;
  }

  function App() {
    const [runs, setRuns] = useState(null);
    const [run, setRun] = useState(0);
    const [q, setQ] = useState("");
    const [spec, setSpec] = useState({ kind: "row", fields: {} });
    const [offset, setOffset] = useState(0);
    const [result, setResult] = useState(null);
    const [facets, setFacets] = useState(null);
    const [selected, setSelected] = useState(null);
    const [error, setError] = useState(null);
    const [version, setVersion] = useState(0);
    const query = useDebounced(q, 250);
    const full = { ...spec, q: query };

    useEffect(() => { api("runs").then(setRuns, (e) => setError(String(e))); }, []);
    useEffect(() => { setOffset(0); }, [run, JSON.stringify(full)]);
    useEffect(() => {
      if (!runs) return;
      const s = JSON.stringify(full);
      Promise.all([api(run + "/page", { spec: s, offset, size: PAGE }), api(run + "/facets", { spec: s })])
        .then(([page, f]) => { setResult(page); setFacets(f); setVersion((v) => v + 1); setError(null); },
              (e) => setError(String(e)));
    }, [runs, run, offset, JSON.stringify(full)]);

    if (!runs) return html`<p class="loading">${error || "Loading…"}</p>`;
    const info = runs[run];
    const kinds = facets ? facets.kinds : { row: info.rows, rejected: info.rejected };
    const select = (n, kind) => { if (kind && kind !== spec.kind) setSpec({ ...spec, kind }); setSelected(n); };
    return html`<div class="app">
      <aside>
        <h1>synthtrace</h1>
        ${runs.length > 1 ? html`<select onChange=${(e) => { setRun(Number(e.target.value)); setSelected(null); }}
            data-testid="run">${runs.map((r, i) => html`<option value=${i}>${r.name}</option>`)}</select>` : ""}
        <p class="muted">${info.path}<br />${fmt(info.recipe)} · ${fmt(info.model)} · ${fmt(info.status)}</p>
        <input type="search" placeholder="Search all text" value=${q} onInput=${(e) => setQ(e.target.value)}
               data-testid="search" />
        <div class="kinds">
          ${["row", "rejected"].map((k) => html`<button class=${spec.kind === k ? "chosen" : ""} data-testid=${"kind-" + k}
              onClick=${() => { if (k !== spec.kind) setResult(null); setSpec({ kind: k, fields: {} }); setSelected(null); }}>
            ${k === "row" ? "Rows" : "Rejected"} <span class="count" data-testid=${"count-" + k}>${fmt(kinds[k])}</span></button>`)}
        </div>
        ${Object.keys(spec.fields || {}).length ? html`<button class="link" onClick=${() => setSpec({ ...spec, fields: {} })}>
          clear filters</button>` : ""}
        <${Filters} facets=${facets} spec=${spec} setSpec=${setSpec} view=${info.view} />
      </aside>
      <main>
        ${error ? html`<p class="error">${error}</p>` : ""}
        ${spec.kind === "rejected" ? html`<${Reasons} run=${run} spec=${full} setSpec=${setSpec} version=${version} />` : ""}
        <${List} result=${result} selected=${selected} onSelect=${(n) => setSelected(n)} offset=${offset} setOffset=${setOffset} />
      </main>
      <section class="detail"><${Example} run=${run} view=${info.view} n=${selected} onSelect=${select} /></section>
    </div>`;
  }

  render(html`<${App} />`, document.getElementById("app"));
})();
