// The explorer's /experiment page: issue 18's run (three entry designs built from one source, swept
// and sampled, held against the emulator) drawn from the ExperimentResults file that
// `stacksanity experiment` writes beside its markdown report. GET /v1/experiment serves the same
// file, so the page, the report and the JSON cannot disagree.
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scenarioToPath } from '../experiment/emulator-side.ts';
import type {
  BlindSpot, DesignResult, EmulatorPath, ExperimentResults, InstantResult, PathResult, RandomResult, SweepOutcome,
} from '../experiment/results.ts';
import { esc, kernelLabel, page, strategyColor } from './explorer-html.ts';

const OUTCOMES: readonly SweepOutcome[] = ['exact', 'window', 'stopped', 'not_decoded', 'wrong'];

export type ExperimentFile =
  | { state: 'ready'; results: ExperimentResults }
  | { state: 'absent'; path: string }
  | { state: 'invalid'; path: string; error: string };

let cache: { path: string; mtimeMs: number; size: number; file: ExperimentFile } | undefined;

/** Reads the results file, again only when it changed on disk (a new run shows without a restart). */
export function readExperiment(path: string): ExperimentFile {
  let st;
  try {
    st = statSync(path);
  } catch {
    return { state: 'absent', path };
  }
  if (cache && cache.path === path && cache.mtimeMs === st.mtimeMs && cache.size === st.size) return cache.file;
  let file: ExperimentFile;
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as ExperimentResults;
    if (r === null || typeof r !== 'object' || r.version !== 1 || !Array.isArray(r.designs)) {
      throw new Error(`not an ExperimentResults file of version 1 (version ${String((r as { version?: unknown } | null)?.version)})`);
    }
    file = { state: 'ready', results: r };
  } catch (e) {
    file = { state: 'invalid', path, error: (e as Error).message };
  }
  cache = { path, mtimeMs: st.mtimeMs, size: st.size, file };
  return file;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The file as the checkout names it (docs/experiment/results.json): the page need not show the server's directories. */
function shown(path: string): string {
  const r = relative(ROOT, path);
  return r.startsWith('..') || isAbsolute(r) ? path : r;
}

const badge = (s: string): string => `<span class="badge" style="--c:${strategyColor(s)}">${esc(s)}</span>`;
const anchor = (...parts: string[]): string => parts.join('-').toLowerCase().replace(/[^a-z0-9_-]+/g, '-');

const CSS = `
.kt{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1em}.kt ol{font:13px/1.35 ui-monospace,"DejaVu Sans Mono",monospace;padding-left:2.3em}
.kt li.guess{color:var(--mut)}.own{background:#f1f8e9}td.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin:.4em 0 1em}summary{cursor:pointer;font-weight:600}
`;

export function renderExperiment(f: ExperimentFile): string {
  if (f.state !== 'ready') {
    const why = f.state === 'absent'
      ? `<p class="note">No experiment results yet: <code>${esc(shown(f.path))}</code> does not exist. Generate them with <code>npm run experiment</code> (builds the three entry-design kernels if needed, samples and sweeps them, and writes the report and this file; <code>STACKSANITY_EXPERIMENT_RESULTS</code> points the explorer at another file).</p>`
      : `<p class="bad">The results file <code>${esc(shown(f.path))}</code> cannot be read: ${esc(f.error)}. Regenerate it with <code>npm run experiment</code>.</p>`;
    return page('experiment', `<h1>The 2016 experiment: three entry designs</h1>${why}`);
  }
  const r = f.results;
  const out: string[] = [];
  out.push(`<h1>The 2016 experiment: three entry designs</h1>
<p class="mut">Three ways for x86-64 entry code to let a frame-pointer unwinder find pt_regs — the encoded frame pointer Linux adopted, a fake <code>kernel_entry</code> frame, and recognising the entry section — built from one kernel source, single-stepped through their entry paths and sampled at random, each judged against the stepper's own truth; beside them the emulator's sweep of the same three layouts. Same data as the markdown report (<a href="/v1/experiment">JSON</a>).</p>
<p class="meta">${esc(r.source)} · ${esc(r.machine)} · generated ${esc(r.generatedAt)}${r.reduced ? ' · <b>reduced run</b> (one entry path per design, few random samples)' : ''}<br>regenerate: <code>${esc(r.command)}</code></p>
<p>Designs: ${r.designs.map((d) => `<a href="#${anchor('design', d.design)}">${esc(d.design)}</a>`).join(' · ')} · <a href="#entry-cost">entry cost</a> · <a href="#emulator">emulator comparison</a> · <a href="#differences">differences</a></p>
<p>Outcomes per step: <span class="out-window">window</span> only frames the kernel documents as lost at that instant · <span class="out-stopped">stopped</span> all frames, then an error · <span class="out-not_decoded">not_decoded</span> the strategy cannot read this kernel's entries · <span class="out-wrong">wrong</span> a recoverable frame lost, or one invented · exact otherwise.</p>`);
  for (const d of r.designs) out.push(designSection(d));
  out.push(entryCostSection(r));
  out.push(emulatorSection(r));
  out.push(differencesSection(r));
  return page('experiment', out.join('\n'), { css: CSS });
}

function designSection(d: DesignResult): string {
  const id = anchor('design', d.design);
  return `<h2 id="${id}">Design ${esc(d.design)} <small>read by ${badge(d.strategy)}</small></h2>
${kernelsTable(d)}
${d.paths.length ? `<p>Paths: ${d.paths.map((p) => `<a href="#${anchor(id, p.path)}">${esc(p.path)}</a>`).join(' · ')}</p>` : '<p class="mut">No entry path was swept for this design.</p>'}
${d.paths.map((p) => pathSection(d, p, anchor(id, p.path))).join('\n')}
<h3 id="${anchor(id, 'random')}">Random sampling</h3>
${d.random ? randomSection(d.random) : '<p class="mut">No random samples in this run.</p>'}
<h3 id="${anchor(id, 'instants')}">The kernel's own trace against the project's unwind</h3>
${d.instants.length ? d.instants.map(instantSection).join('\n') : '<p class="mut">No instant was captured for this design.</p>'}`;
}

function kernelsTable(d: DesignResult): string {
  if (d.kernels.length === 0) return '<p class="mut">No kernel recorded.</p>';
  return `<div class="scroll"><table class="kernels"><thead><tr><th>variant</th><th>unwinder</th><th>build</th><th>image</th></tr></thead><tbody>${d.kernels.map((k) =>
    `<tr><td>${esc(k.variant)}</td><td>${esc(k.unwinder)}</td><td title="${esc(k.buildId)}">${esc(kernelLabel(k.buildId))}</td><td><code>${esc(k.image)}</code></td></tr>`).join('')}</tbody></table></div>`;
}

function totalsTable(totals: Record<string, Record<SweepOutcome, number>>, own: string): string {
  const names = Object.keys(totals);
  if (names.length === 0) return '<p class="mut">No steps judged.</p>';
  return `<div class="scroll"><table class="totals"><thead><tr><th>strategy</th>${OUTCOMES.map((o) => `<th>${o}</th>`).join('')}</tr></thead><tbody>${names.map((s) => {
    const t = totals[s]!;
    return `<tr${s === own ? ' class="own"' : ''}><td>${badge(s)}${s === own ? ' <small>(the design\'s)</small>' : ''}</td>${OUTCOMES.map((o) => `<td class="num${o === 'wrong' && t[o] ? ' out-wrong' : ''}">${esc(t[o] ?? 0)}</td>`).join('')}</tr>`;
  }).join('')}</tbody></table></div>`;
}

function pathSection(d: DesignResult, p: PathResult, id: string): string {
  const head = `<h3 id="${id}">${esc(p.path)} <small>stub <code>${esc(p.entry)}</code> · from ${esc(p.from)}</small></h3>`;
  if (p.skipped) return `${head}<p class="note">Not swept: ${esc(p.skipped)}</p>`;
  const facts = [`${esc(p.steps)} steps`, p.returned ? 'returned to the interrupted instruction' : '<span class="bad">did not return within the step limit</span>'];
  if (p.entryCost) facts.push(`entry code: ${esc(p.entryCost.in)} instructions in, ${esc(p.entryCost.out)} out`);
  const rows = p.blindSpots.filter((b) => b.strategy === d.strategy);
  return `${head}<p class="meta">${facts.join(' · ')}</p>
${totalsTable(p.totals, d.strategy)}
<h4>Blind spots of ${badge(d.strategy)}</h4>
${rows.length ? blindSpotTable(rows, true) : `<p class="ok">None: ${esc(d.strategy)} is exact at every step of this path.</p>`}`;
}

function blindSpotTable(rows: readonly BlindSpot[], random: boolean): string {
  return `<div class="scroll"><table class="blindspots"><thead><tr><th>where</th><th>steps</th><th>outcome</th><th>verdict</th><th>lost</th><th>finding</th>${random ? '<th>first random sample</th><th>expected</th>' : ''}</tr></thead><tbody>${rows.map((b) => {
    const seen = b.firstRandomSample === undefined ? '–' : b.firstRandomSample === null ? '<span class="bad">not seen</span>' : `#${esc(b.firstRandomSample)}`;
    const exp = b.expectedRandomSamples === undefined ? '–' : `≈ ${esc(Number.isFinite(b.expectedRandomSamples) ? Math.round(b.expectedRandomSamples) : '∞')}`;
    return `<tr><td><code>${esc(b.where)}</code></td><td class="num">${esc(b.steps)}</td><td class="out-${esc(b.outcome)}">${esc(b.outcome)}</td><td>${esc(b.verdict)}${b.reason ? `<br><small>${esc(b.reason)}</small>` : ''}</td><td>${esc(b.lost.join(', ') || '–')}</td><td>${b.findingId ? `${esc(b.findingTitle ?? '')}<br><small><code>${esc(b.findingId)}</code></small>` : '<small>none (documented window)</small>'}</td>${random ? `<td>${seen}</td><td>${exp}</td>` : ''}</tr>`;
  }).join('')}</tbody></table></div>`;
}

function randomSection(x: RandomResult): string {
  const verdicts = [...new Set(Object.values(x.verdicts).flatMap((v) => Object.keys(v)))];
  return `<p class="meta">${esc(x.samples)} random stops</p>
<div class="scroll"><table class="verdicts"><thead><tr><th>strategy</th>${verdicts.map((v) => `<th>${esc(v)}</th>`).join('')}</tr></thead><tbody>${Object.entries(x.verdicts).map(([s, v]) =>
    `<tr><td>${badge(s)}</td>${verdicts.map((n) => `<td class="num">${esc(v[n] ?? 0)}</td>`).join('')}</tr>`).join('')}</tbody></table></div>
${x.findings.length ? `<div class="scroll"><table class="rfindings"><thead><tr><th>finding</th><th>strategy</th><th>samples</th><th>first sample</th></tr></thead><tbody>${x.findings.map((f) =>
    `<tr><td>${esc(f.title)}<br><small><code>${esc(f.id)}</code></small></td><td>${badge(f.strategy)}</td><td class="num">${esc(f.count)}</td><td class="num">#${esc(f.firstSample)}</td></tr>`).join('')}</tbody></table></div>` : '<p class="ok">No finding raised by the random samples.</p>'}`;
}

function instantSection(i: InstantResult): string {
  const head = `<h4>${esc(i.variant)}: ${esc(i.what)}</h4>`;
  if (i.skipped) return `${head}<p class="note">Not captured: ${esc(i.skipped)}</p>`;
  const kernel = i.kernelTrace.map((l) => l.startsWith('? ') ? `<li class="guess">${esc(l)}</li>` : `<li>${esc(l)}</li>`).join('');
  return `${head}<div class="kt"><div><h4>kernel's trace <small>${i.kernelRipBlock ? 'with the interrupted context\'s <code>RIP:</code> block' : '<span class="bad">no <code>RIP:</code> block</span>'}</small></h4>
${i.kernelWarnings.length ? i.kernelWarnings.map((w) => `<p class="stop"><code>${esc(w)}</code></p>`).join('') : ''}<ol class="ktrace">${kernel}</ol></div>
<div><h4>project's unwind</h4><ol class="ptrace">${i.projectTrace.map((l) => `<li>${esc(l)}</li>`).join('')}</ol></div></div>
<p>${esc(i.verdict)}</p>`;
}

function entryCostSection(r: ExperimentResults): string {
  const byPath = new Map<string, Map<string, { in: number; out: number }>>();
  for (const d of r.designs) {
    for (const p of d.paths) if (p.entryCost) (byPath.get(p.path) ?? byPath.set(p.path, new Map()).get(p.path)!).set(d.design, p.entryCost);
  }
  const designs = r.designs.map((d) => d.design);
  const body = byPath.size === 0 ? '<p class="mut">No path recorded its entry cost.</p>' : `<div class="scroll"><table class="cost"><thead><tr><th>path</th>${designs.map((d) => `<th>${esc(d)} in / out</th>`).join('')}</tr></thead><tbody>${[...byPath].map(([path, m]) =>
    `<tr><td>${esc(path)}</td>${designs.map((d) => { const c = m.get(d); return `<td class="num">${c ? `${esc(c.in)} / ${esc(c.out)}` : '–'}</td>`; }).join('')}</tr>`).join('')}</tbody></table></div>`;
  return `<h2 id="entry-cost">Cost per entry <small>instructions run in entry code, in (stub start to the C handler) and out (handler return to the iret)</small></h2>${body}`;
}

function outcomeCell(t: Record<SweepOutcome, number> | undefined): string {
  if (!t) return '–';
  return OUTCOMES.map((o) => `<span class="out-${o}" title="${o}">${esc(t[o] ?? 0)}</span>`).join(' / ');
}

function emulatorSection(r: ExperimentResults): string {
  const out: string[] = [`<h2 id="emulator">The emulator's sweep of the same designs</h2>
<p class="mut">The emulator single-steps its scenarios on a clean kernel of each layout; its truth comes from its own machine state. Each cell: ${OUTCOMES.map((o) => `<span class="out-${o}">${o}</span>`).join(' / ')} steps; below it, the real kernel's path the scenario corresponds to.</p>`];
  if (r.emulator.length === 0) return out.concat('<p class="mut">The emulator was not run.</p>').join('\n');
  const layouts = [...new Set(r.emulator.map((e) => e.layout))];
  for (const l of layouts) {
    const paths = r.emulator.filter((e) => e.layout === l);
    const design = r.designs.find((d) => d.design === l);
    const strategies = [...new Set(paths.flatMap((p) => Object.keys(p.totals)))];
    const own = design?.strategy;
    out.push(`<h3 id="${anchor('emulator', l)}">Layout ${esc(l)}${own ? ` <small>read by ${badge(own)}</small>` : ''}</h3>
<div class="scroll"><table class="emucmp"><thead><tr><th>scenario</th><th>real path</th><th>steps</th>${strategies.map((s) => `<th>${badge(s)}</th>`).join('')}</tr></thead><tbody>${paths.map((p) => {
      const realName = scenarioToPath(p.scenario);
      const real = realName ? design?.paths.find((x) => x.path === realName && !x.skipped) : undefined;
      return `<tr><td>${esc(p.scenario)}</td><td>${realName ? esc(realName) : '<small>none (not sweepable on the real guest)</small>'}</td><td class="num">${esc(p.steps)}${real ? `<br><small>real ${esc(real.steps)}</small>` : ''}</td>${strategies.map((s) =>
        `<td>${outcomeCell(p.totals[s])}${realName ? `<br><small>real ${real ? outcomeCell(real.totals[s]) : 'not swept'}</small>` : ''}</td>`).join('')}</tr>`;
    }).join('')}</tbody></table></div>`);
    if (own) out.push(emulatorRows(paths, own));
  }
  return out.join('\n');
}

function emulatorRows(paths: readonly EmulatorPath[], own: string): string {
  const rows = paths.flatMap((p) => p.blindSpots.filter((b) => b.strategy === own).map((b) => ({ p, b })));
  if (rows.length === 0) return `<p class="ok">The emulator finds no blind spot of ${esc(own)} on this layout.</p>`;
  const failing = rows.filter((x) => x.b.outcome !== 'window').length;
  return `<details><summary>${esc(rows.length)} blind-spot rows of ${esc(own)} in the emulator (${esc(failing)} not documented windows)</summary><div class="scroll"><table class="blindspots"><thead><tr><th>scenario</th><th>where</th><th>steps</th><th>outcome</th><th>verdict</th><th>lost</th><th>finding</th></tr></thead><tbody>${rows.map(({ p, b }) =>
    `<tr><td>${esc(p.scenario)}</td><td><code>${esc(b.where)}</code></td><td class="num">${esc(b.steps)}</td><td class="out-${esc(b.outcome)}">${esc(b.outcome)}</td><td>${esc(b.verdict)}${b.reason ? `<br><small>${esc(b.reason)}</small>` : ''}</td><td>${esc(b.lost.join(', ') || '–')}</td><td>${b.findingId ? `${esc(b.findingTitle ?? '')} <small><code>${esc(b.findingId)}</code></small>` : '<small>none</small>'}</td></tr>`).join('')}</tbody></table></div></details>`;
}

function differencesSection(r: ExperimentResults): string {
  const head = '<h2 id="differences">Differences between the real and the emulated sweeps</h2>';
  if (r.differences.length === 0) return `${head}<p class="ok">None: the real kernels' tables agree with the emulator's.</p>`;
  return `${head}<div class="scroll"><table class="differences"><thead><tr><th>design</th><th>path</th><th>what</th><th>why</th><th>resolution</th></tr></thead><tbody>${r.differences.map((x) =>
    `<tr><td>${esc(x.design)}</td><td>${esc(x.path)}</td><td>${esc(x.what)}</td><td>${esc(x.why)}</td><td>${esc(x.resolution)}</td></tr>`).join('')}</tbody></table></div>`;
}
