// The web page: server-rendered HTML, no build step. The findings and recent failing traces with links, and one
// trace with each strategy's kernel-style text (or, when its kernel's profile is gone, the
// recorded verdicts and why the frames are missing).
import type { TraceMeta } from '../pipeline/trace-store.ts';
import type { StoredFinding } from '../pipeline/findings.ts';

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;max-width:72em}table{border-collapse:collapse}
td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}pre{background:#f6f6f6;padding:.6em;overflow:auto}
.bad{color:#a00}.ok{color:#070}code{font-size:13px}`;

export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** The most frequent findings: the overview a newcomer and an on-call reader start from. */
function renderFindings(findings: StoredFinding[] | undefined): string {
  if (findings === undefined) return '';
  if (findings.length === 0) return '<h2>Findings</h2><p>No findings: no entry-aware strategy has failed yet.</p>';
  return `<h2>Findings</h2>
<p>Failing unwinds grouped by signature, most frequent first (<a href="/v1/findings">all, as JSON</a>). New ones page; an admin marks a triaged one known with <code>PUT /v1/findings/{id}</code>.</p>
<table><tr><th>state</th><th>count</th><th>finding</th><th>last seen</th><th>hosts</th><th>example</th></tr>${findings.map((f) =>
    `<tr><td class="${f.state === 'new' ? 'bad' : 'ok'}">${esc(f.state)}</td><td>${esc(f.count)}</td><td><a href="/v1/findings/${esc(f.id)}">${esc(f.title)}</a>${f.note ? `<br><small>${esc(f.note)}</small>` : ''}</td><td>${esc(f.last_seen)}</td><td>${esc(f.hosts.length)}${f.hosts.length >= 20 ? '+' : ''}</td><td>${f.examples[0] ? `<a href="/traces/${esc(f.examples[0].id)}">trace</a>` : ''}</td></tr>`).join('')}</table>`;
}

export function renderIndex(items: TraceMeta[] | undefined, combined: boolean, findings?: StoredFinding[]): string {
  const rows = items === undefined
    ? '<p class="bad">Redis is unavailable; the list comes back when it does.</p>'
    : items.length === 0
      ? '<p>No failing traces yet. Upload samples (see <a href="/docs">/docs</a>) or wait for the feeder.</p>'
      : `<table><tr><th>received</th><th>host</th><th>kernel</th><th>failing strategies</th><th>reasons</th></tr>${items.map((t) =>
        `<tr><td><a href="/traces/${esc(t.id)}">${esc(new Date(Math.floor(t.score / 1000)).toISOString())}</a></td><td>${esc(t.host)}</td><td>${esc(t.kernel)}</td><td>${esc(t.strategies.join(', '))}</td><td>${esc(t.reasons.join(', '))}</td></tr>`).join('')}</table>`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>stacksanity</title><meta http-equiv="refresh" content="10"><style>${STYLE}</style></head><body>
<h1>stacksanity</h1>
<p><a href="/v1/summary">summary</a> · <a href="/v1/findings">findings (JSON)</a> · <a href="/v1/traces">traces (JSON)</a> · <a href="/metrics">metrics</a>${combined ? ' (API and workers)' : ''} · <a href="/docs">API docs</a></p>
${renderFindings(findings)}
<h2>Recent failing traces</h2>
<p>A sample fails when an entry-aware strategy loses or invents frames, stops early, claims a wrong trace reliable, or two of them disagree. The fp baseline's losses at entries are expected and are not failures.</p>
${rows}
</body></html>`;
}

export function renderTrace(t: Record<string, unknown>): string {
  const results = (t.results as Record<string, unknown>[] | undefined) ?? [];
  const sections = results.map((r) => {
    const good = r.verdict === 'exact' || r.verdict === 'tolerated' || r.verdict === 'consistent';
    return `<h3>${esc(r.strategy)}${r.baseline ? ' (baseline)' : ''}: <span class="${good && !r.false_reliable ? 'ok' : 'bad'}">${esc(r.verdict)}${r.reason ? ` (${esc(r.reason)})` : ''}${r.false_reliable ? ' FALSE RELIABLE' : ''}</span></h3>
${(r.missing as string[] | undefined)?.length ? `<p>missing: <code>${esc((r.missing as string[]).join(', '))}</code></p>` : ''}${(r.extra as string[] | undefined)?.length ? `<p>extra: <code>${esc((r.extra as string[]).join(', '))}</code></p>` : ''}
<pre>${esc(r.kernel_text)}</pre>`;
  }).join('\n');
  const sample = (t.sample ?? {}) as Record<string, unknown>;
  // The detail is re-derived on read (trace-view.ts): say when that is not what the check saw.
  const recheck = t.recheck as { profile_rev_then: number | null; profile_rev_now: number | null; checker_then?: string | null; checker_now?: string; verdicts_changed: boolean; then?: Record<string, unknown>; now?: Record<string, unknown> } | undefined;
  const notes = [
    ...(typeof t.message === 'string' ? [`<p class="bad">${esc(t.message)}</p><p>recorded verdicts: failing strategies <code>${esc(((t.strategies as string[] | undefined) ?? []).join(', ') || 'none')}</code> · reasons <code>${esc(((t.reasons as string[] | undefined) ?? []).join(', ') || 'none')}</code></p>`] : []),
    ...(recheck ? [`<p class="bad">Re-derived with the kernel profile as it is now (revision ${esc(recheck.profile_rev_now ?? 'unknown')}); the sample was checked with revision ${esc(recheck.profile_rev_then ?? 'unknown')}.${recheck.checker_now !== undefined && recheck.checker_then !== recheck.checker_now
      ? ` This checker (build ${esc(recheck.checker_now)}) is not the one that checked it (${esc(recheck.checker_then ?? 'not recorded')}).`
      : ''}${recheck.verdicts_changed
      ? ` The verdicts differ from the stored ones: then ${esc(recheck.then?.status)} (${esc(((recheck.then?.reasons as string[] | undefined) ?? []).join(', ') || 'no reasons')}), now ${esc(recheck.now?.status)} (${esc(((recheck.now?.reasons as string[] | undefined) ?? []).join(', ') || 'no reasons')}).`
      : ' The verdicts are the stored ones; frames and symbols below are from the current profile.'}</p>`] : []),
  ].join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>trace ${esc(t.id)}</title><style>${STYLE}</style></head><body>
<p><a href="/">← recent failing traces</a> · <a href="/v1/traces/${esc(t.id)}">JSON</a></p>
<h1>${esc(sample.comm ?? '?')} ${esc(sample.tid ?? sample.pid ?? '')} on ${esc(t.host)}</h1>
<p>kernel <code>${esc(t.kernel)}</code> · cpu ${esc(sample.cpu ?? '?')} · trigger ${esc(sample.trigger)} · received ${esc(t.received_at)} · ${esc(t.status)}${(t.disagreements as string[] | undefined)?.length ? ` · disagree: ${esc((t.disagreements as string[]).join(' '))}` : ''}</p>
<p>registers: <code>${esc(Object.entries((sample.regs ?? {}) as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(' '))}</code></p>
${notes}
${sections}
</body></html>`;
}
