// The explorer's overview (`/`) and blind-spot table (`/sweeps`), server-rendered from what the JSON
// API serves: GET /v1/overview/series, /v1/findings, /v1/traces, /v1/sweeps.
import type { StoredFinding } from '../pipeline/findings.ts';
import type { TraceMeta } from '../pipeline/trace-store.ts';
import type { BlindSpotTable, Outcome } from '../emulator/sweep.ts';
import { esc, kernelLabel, page, strategyColor } from './explorer-html.ts';

/** One hour of the series: per strategy, unwinds and how many of them had a bad verdict. */
export interface SeriesPoint {
  hour: string;
  samples: number;
  strategies: Record<string, { unwinds: number; bad: number }>;
}

export interface TraceFilters {
  host?: string;
  kernel?: string;
  strategy?: string;
  reason?: string;
}

export interface OverviewData {
  series: SeriesPoint[] | undefined;
  findings: StoredFinding[] | undefined;
  traces: (TraceMeta & { received_at: string })[] | undefined;
  next: string | null;
  filters: TraceFilters;
  choices: { hosts: string[]; kernels: string[]; strategies: string[]; reasons: string[] };
  baseline: ReadonlySet<string>;
}

export function renderOverview(d: OverviewData): string {
  const down = '<p class="bad">Redis is unavailable; this comes back when it does.</p>';
  const body = `<h1>Overview</h1>
<p class="mut">Which unwinds fail, how often, and why. A sample fails when an entry-aware strategy loses or invents frames, stops early, claims a wrong trace reliable, or two of them disagree. The fp baseline's losses at entries are expected and counted apart.</p>
<h2 id="ratio">Failure ratio per strategy <small>(hourly, last ${d.series?.length ?? 0} h; <a href="/v1/overview/series">JSON</a>)</small></h2>
${d.series ? ratioCharts(d.series, d.baseline) : down}
<h2 id="findings">Findings <small>(<a href="/v1/findings">JSON</a>)</small></h2>
${d.findings ? findingsTable(d.findings) : down}
<h2 id="traces">Recent failing traces <small>(<a href="/v1/traces?status=failing">JSON</a>)</small></h2>
${filterForm(d)}
${d.traces ? tracesTable(d.traces, d.baseline, d.next, d.filters) : down}`;
  return page('overview', body, { script: true });
}

function ratioCharts(series: SeriesPoint[], baseline: ReadonlySet<string>): string {
  const names = [...new Set(series.flatMap((p) => Object.keys(p.strategies)))].sort();
  if (names.length === 0) return '<p>No samples checked in this window yet.</p>';
  const chart = (s: string): string => {
    const W = 480;
    const H = 120;
    const pad = 28;
    const n = series.length;
    const x = (i: number): number => pad + (i * (W - pad - 6)) / Math.max(1, n - 1);
    const pts = series.map((p, i) => {
      const v = p.strategies[s];
      return v && v.unwinds > 0 ? { i, r: v.bad / v.unwinds, v } : undefined;
    });
    const y = (r: number): number => H - 18 - r * (H - 30);
    const segs: string[] = [];
    let cur: string[] = [];
    for (const q of pts) {
      if (!q) { if (cur.length) segs.push(cur.join(' ')); cur = []; continue; }
      cur.push(`${x(q.i).toFixed(1)},${y(q.r).toFixed(1)}`);
    }
    if (cur.length) segs.push(cur.join(' '));
    const tot = series.reduce((a, p) => ({ u: a.u + (p.strategies[s]?.unwinds ?? 0), b: a.b + (p.strategies[s]?.bad ?? 0) }), { u: 0, b: 0 });
    const ratio = tot.u ? (100 * tot.b / tot.u).toFixed(1) : '–';
    const c = strategyColor(s);
    const dots = pts.filter((q) => q).map((q) => `<circle cx="${x(q!.i).toFixed(1)}" cy="${y(q!.r).toFixed(1)}" r="2.5" fill="${c}"><title>${esc(series[q!.i]!.hour)}: ${q!.v.bad} of ${q!.v.unwinds} unwinds bad (${(100 * q!.r).toFixed(1)} %)</title></circle>`).join('');
    return `<figure><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(s)} failure ratio per hour: ${ratio} % overall">
<line x1="${pad}" y1="${y(0)}" x2="${W - 4}" y2="${y(0)}" stroke="#ccc"/><line x1="${pad}" y1="${y(1)}" x2="${W - 4}" y2="${y(1)}" stroke="#eee"/><line x1="${pad}" y1="${y(0.5)}" x2="${W - 4}" y2="${y(0.5)}" stroke="#eee"/>
<text x="2" y="${y(1) + 4}" font-size="10" fill="#666">100%</text><text x="2" y="${y(0.5) + 4}" font-size="10" fill="#666">50%</text><text x="2" y="${y(0) + 4}" font-size="10" fill="#666">0%</text>
<text x="${pad}" y="${H - 3}" font-size="10" fill="#666">${esc(series[0]!.hour.slice(5, 13).replace('T', ' '))}h</text><text x="${W - 4}" y="${H - 3}" font-size="10" fill="#666" text-anchor="end">now</text>
${segs.map((p) => `<polyline points="${p}" fill="none" stroke="${c}" stroke-width="2"/>`).join('')}${dots}</svg>
<figcaption><span class="badge" style="--c:${c}">${esc(s)}</span> ${ratio} % of ${tot.u} unwinds bad${baseline.has(s) ? ' <small>(baseline: losing the interrupted function at entries is expected)</small>' : ''}</figcaption></figure>`;
  };
  const main = names.filter((s) => !baseline.has(s));
  const base = names.filter((s) => baseline.has(s));
  return `<div class="chart">${main.map(chart).join('')}</div>${base.length ? `<h3>Baseline, shown apart</h3><div class="chart">${base.map(chart).join('')}</div>` : ''}`;
}

function findingsTable(fs: StoredFinding[]): string {
  if (fs.length === 0) return '<p>No findings: no entry-aware strategy has failed yet.</p>';
  const now = Date.now();
  const trend = (f: StoredFinding): string => {
    const first = Date.parse(f.first_seen);
    const last = Date.parse(f.last_seen);
    const quiet = (now - last) / 3_600_000;
    // Under a day of history a rate per day would be an extrapolation: say what was seen.
    if (last - first < 86_400_000) return `${f.count} since ${esc(f.first_seen.slice(5, 16).replace('T', ' '))}${quiet < 1 ? ' <small>(active)</small>' : ''}`;
    const days = (last - first) / 86_400_000;
    return `${(f.count / days).toFixed(f.count / days >= 10 ? 0 : 1)}/day${quiet > 24 ? ` <small>(quiet ${Math.round(quiet / 24)} d)</small>` : quiet < 1 ? ' <small>(active)</small>' : ''}`;
  };
  return `<p><label>Admin token (to mark findings known; sent only with that request) <input type="password" id="admin-token" autocomplete="off" size="28"></label> <label><input type="checkbox" id="remember-token"> remember in this tab</label></p>
<div class="scroll"><table class="findings"><thead><tr><th>state</th><th>finding</th><th>count</th><th>trend</th><th>kernels</th><th>hosts</th><th>examples</th><th class="hide-sm">action</th></tr></thead><tbody>${fs.map((f) => `<tr id="finding-${esc(f.id)}">
<td><span class="${f.state === 'new' ? 'bad' : 'ok'}">${esc(f.state)}</span>${f.note ? `<br><small>${esc(f.note)}</small>` : ''}${f.acknowledged_by ? `<br><small>by ${esc(f.acknowledged_by)}</small>` : ''}</td>
<td><a href="/v1/findings/${esc(f.id)}">${esc(f.title)}</a><br><small><span class="badge" style="--c:${strategyColor(f.strategy)}">${esc(f.strategy)}</span>${esc(f.reason || f.verdict)}</small></td>
<td>${esc(f.count)}</td><td>${trend(f)}<br><small title="first seen ${esc(f.first_seen)}">last ${esc(f.last_seen.slice(0, 16).replace('T', ' '))}</small></td>
<td>${f.kernels.slice(0, 3).map((k) => `<span title="${esc(k)}">${esc(kernelLabel(k))}</span>`).join('<br>')}${f.kernels.length > 3 ? `<br><small>+${f.kernels.length - 3}</small>` : ''}</td>
<td>${esc(f.hosts.length)}${f.hosts.length >= 20 ? '+' : ''}<br><small>${esc(f.hosts.slice(0, 2).join(', '))}</small></td>
<td>${f.examples.slice(0, 3).map((e, i) => `<a href="/traces/${esc(e.id)}">trace ${i + 1}</a>`).join(' ')}</td>
<td class="hide-sm"><form class="markknown" data-id="${esc(f.id)}" data-state="${f.state === 'new' ? 'known' : 'new'}">${f.state === 'new' ? `<input name="note" placeholder="note (why it is known)" aria-label="note for ${esc(f.title)}" size="16"> <button>mark known</button>` : '<button>mark new again</button>'} <output aria-live="polite"></output></form></td></tr>`).join('')}</tbody></table></div>`;
}

function filterForm(d: OverviewData): string {
  const sel = (name: keyof TraceFilters, label: string, values: string[], show: (v: string) => string = (v) => v): string =>
    `<label>${label}<select name="${name}"><option value="">any</option>${values.map((v) => `<option value="${esc(v)}"${d.filters[name] === v ? ' selected' : ''}>${esc(show(v))}</option>`).join('')}</select></label>`;
  return `<form class="filters" method="get" action="/#traces" aria-label="filter traces">${sel('host', 'host', d.choices.hosts)}${sel('kernel', 'kernel', d.choices.kernels, (k) => kernelLabel(k))}${sel('strategy', 'failing strategy', d.choices.strategies)}${sel('reason', 'reason', d.choices.reasons)}<button>filter</button>${Object.values(d.filters).some((v) => v) ? ' <a href="/#traces">clear</a>' : ''}</form>`;
}

function tracesTable(items: (TraceMeta & { received_at: string })[], baseline: ReadonlySet<string>, next: string | null, f: TraceFilters): string {
  if (items.length === 0) return '<p>No failing traces match. Upload samples (see <a href="/docs">/docs</a>) or wait for the feeder.</p>';
  const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v) as [string, string][]);
  return `<div class="scroll"><table class="traces"><thead><tr><th>trace</th><th>host</th><th>kernel</th><th>failing strategies</th><th>reasons</th><th>fp baseline</th></tr></thead><tbody>${items.map((t) => {
    const failing = t.strategies.filter((s) => !baseline.has(s));
    const base = t.strategies.filter((s) => baseline.has(s));
    return `<tr><td><a href="/traces/${esc(t.id)}" title="received ${esc(t.received_at)}">${esc(t.received_at.slice(5, 19).replace('T', ' '))}</a></td><td>${esc(t.host)}</td><td title="${esc(t.kernel)}">${esc(kernelLabel(t.kernel))}</td>
<td>${failing.map((s) => `<span class="badge" style="--c:${strategyColor(s)}">${esc(s)}</span>`).join('') || '<small>none (disagreement only)</small>'}</td><td>${esc(t.reasons.join(', '))}</td><td><small>${base.length ? 'lost frames (expected)' : 'ok'}</small></td></tr>`;
  }).join('')}</tbody></table></div>${next ? `<p><a href="/?${esc(new URLSearchParams([...q, ['cursor', next]]).toString())}#traces">older →</a></p>` : ''}`;
}

// ---- the blind-spot table ------------------------------------------------------------------

export interface SweepDoc {
  scenarios: { name: string; summary: string }[];
  tables: BlindSpotTable[];
}

/** One instruction run: consecutive instructions of one function with the same outcome for every strategy. */
interface PivotRun {
  scenario: string;
  fn: string;
  from: number;
  to: number;
  offFrom?: number;
  offTo?: number;
  ops: string[];
  inStub: boolean;
  cells: Record<string, { outcome: Outcome; verdict: string; reason?: string; lost: string[] } | undefined>;
}

/** The per-strategy runs of the CLI's table, turned into one row per instruction run with every strategy's outcome. */
export function pivotSweep(t: BlindSpotTable): PivotRun[] {
  const strategies = Object.keys(t.totals);
  const byInsn = new Map<string, { scenario: string; fn: string; insn: number; op: string; inStub: boolean; off?: number; cells: PivotRun['cells'] }>();
  for (const r of t.rows) {
    for (let i = r.from; i <= r.to; i++) {
      const key = `${r.scenario}\0${r.fn}\0${String(i).padStart(6, '0')}`;
      const e = byInsn.get(key) ?? byInsn.set(key, { scenario: r.scenario, fn: r.fn, insn: i, op: r.ops[i - r.from] ?? '', inStub: r.inStub, cells: {} }).get(key)!;
      if (i === r.from) e.off = r.offFrom;
      else if (i === r.to) e.off = r.offTo;
      e.cells[r.strategy] = { outcome: r.outcome, verdict: r.verdict, lost: r.lost, ...(r.reason !== undefined ? { reason: r.reason } : {}) };
    }
  }
  // Keep the order of first appearance of each scenario and function (the sweep's own order).
  const order = new Map<string, number>();
  t.rows.forEach((r) => { const k = `${r.scenario}\0${r.fn}`; if (!order.has(k)) order.set(k, order.size); });
  const entries = [...byInsn.values()].sort((a, b) => (order.get(`${a.scenario}\0${a.fn}`)! - order.get(`${b.scenario}\0${b.fn}`)!) || a.insn - b.insn);
  const sig = (c: PivotRun['cells']): string => strategies.map((s) => { const x = c[s]; return x ? `${x.outcome}/${x.verdict}/${x.reason ?? ''}/${x.lost.join(',')}` : 'exact'; }).join('|');
  const runs: PivotRun[] = [];
  for (const e of entries) {
    const prev = runs[runs.length - 1];
    if (prev && prev.scenario === e.scenario && prev.fn === e.fn && prev.to === e.insn - 1 && sig(prev.cells) === sig(e.cells)) {
      prev.to = e.insn;
      if (e.off !== undefined) prev.offTo = e.off;
      prev.ops.push(e.op);
      continue;
    }
    const run: PivotRun = { scenario: e.scenario, fn: e.fn, from: e.insn, to: e.insn, ops: [e.op], inStub: e.inStub, cells: e.cells };
    if (e.off !== undefined) { run.offFrom = e.off; run.offTo = e.off; }
    runs.push(run);
  }
  return runs;
}

export function renderSweeps(doc: SweepDoc | undefined, state: 'ready' | 'computing' | 'failed', error?: string): string {
  if (!doc) {
    const msg = state === 'failed' ? `<p class="bad">The sweep failed: ${esc(error ?? 'unknown error')}</p>` : '<p class="note">The sweep is being computed (a few seconds, once per API process); this page reloads itself.</p>';
    return page('blind spots', `<h1>Blind spots: the single-step sweep</h1>${msg}`, state === 'computing' ? { refresh: 3 } : {});
  }
  const out: string[] = [];
  out.push(`<h1>Blind spots: the single-step sweep</h1>
<p class="mut">The emulator runs each scenario instruction by instruction — every instruction of every entry stub included — and every strategy unwinds the sample taken at each boundary. Random NMI samples (the <a href="/">overview</a>) say how often a strategy fails; this says exactly where. Same data as <code>stacksanity sweep --json</code> (<a href="/v1/sweeps">JSON</a>).</p>
<p>Outcomes: <span class="out-window">window</span> only frames the kernel documents as lost at that instant · <span class="out-stopped">stopped</span> all frames, then an error · <span class="out-not_decoded">not_decoded</span> the strategy cannot read this kernel's entries · <span class="out-wrong">wrong</span> a recoverable frame lost, or one invented · exact elsewhere.</p>
<p>Scenarios: ${doc.scenarios.map((s) => `<b>${esc(s.name)}</b> <small>${esc(s.summary)}</small>`).join(' · ')}</p>
<p>Layouts: ${doc.tables.map((t, i) => `<a href="#layout-${i}">${esc(t.layout)}${t.profileLayouts.join('+') !== t.layout ? ` (profile ${esc(t.profileLayouts.join('+'))})` : ''}</a>`).join(' · ')}</p>`);
  doc.tables.forEach((t, ti) => {
    const strategies = Object.keys(t.totals);
    out.push(`<h2 id="layout-${ti}">Entry layout ${esc(t.layout)} <small>profile ${esc(t.profileLayouts.join('+'))} · kernel ${esc(kernelLabel(t.buildId))} · ${t.steps} steps</small></h2>
<div class="scroll"><table class="totals"><thead><tr><th>strategy</th><th>exact</th><th>window</th><th>stopped</th><th>not_decoded</th><th>wrong</th></tr></thead><tbody>${strategies.map((s) => {
      const x = t.totals[s]!;
      return `<tr><td><span class="badge" style="--c:${strategyColor(s)}">${esc(s)}</span></td><td>${x.exact}</td><td>${x.window}</td><td>${x.stopped}</td><td>${x.not_decoded}</td><td${x.wrong ? ' class="out-wrong"' : ''}>${x.wrong}</td></tr>`;
    }).join('')}</tbody></table></div>`);
    const runs = pivotSweep(t);
    out.push(`<div class="scroll"><table class="sweep"><thead><tr><th>scenario</th><th>where</th><th class="hide-sm">instructions</th>${strategies.map((s) => `<th>${esc(s)}</th>`).join('')}</tr></thead><tbody>${runs.map((r) => {
      const range = r.offFrom === undefined ? `insn ${r.from}${r.to > r.from ? `–${r.to}` : ''}` : r.offFrom === r.offTo ? `+0x${r.offFrom.toString(16)}` : `+0x${r.offFrom.toString(16)}..+0x${(r.offTo ?? r.offFrom).toString(16)}`;
      const ops = [...new Set(r.ops)].join('; ');
      return `<tr><td>${esc(r.scenario)}</td><td><code>${esc(r.fn)}${esc(range)}</code>${r.inStub ? ' <small>(entry code)</small>' : ''}</td><td class="hide-sm"><small>${r.to - r.from + 1}: ${esc(ops.length > 70 ? ops.slice(0, 67) + '…' : ops)}</small></td>${strategies.map((s) => {
        const c = r.cells[s];
        if (!c) return '<td class="out-exact">exact</td>';
        return `<td class="out-${esc(c.outcome)}">${esc(c.outcome)}<br><small>${esc(c.reason ?? c.verdict)}${c.lost.length ? ` · lost ${esc(c.lost.join(','))}` : ''}</small></td>`;
      }).join('')}</tr>`;
    }).join('')}</tbody></table></div>`);
  });
  return page('blind spots', out.join('\n'));
}
