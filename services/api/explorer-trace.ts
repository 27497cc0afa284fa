// The trace page of the explorer (issue 14): the stack picture drawn from the data of
// GET /v1/traces/{id}/picture (core/render/stack-picture.ts) — each captured stack as a column of
// words, the structures on it outlined, each strategy's walk as a coloured path over it — beside
// each strategy's frames, stop reason and kernel-style text, and the true chain. Plain HTML with
// inline SVG; explorer.js only switches strategies and links frames to their words.
import type { PathStep, PictureRow, PictureStack, PicturePath, StackPicture } from '../core/render/stack-picture.ts';
import { esc, kernelLabel, page, strategyColor } from './explorer-html.ts';

/** Row height in px: the server places the SVG paths from row indices, so CSS must agree (.w). */
export const ROW_H = 22;
const GUTTER = 46;

type Detail = Record<string, unknown>;
type Result = Record<string, unknown> & { strategy: string; verdict: string; reason?: string; kernel_text?: string; baseline?: boolean; unwind?: { frames?: unknown[]; message?: string; outcome?: string } };

export function renderTracePage(t: Detail, pic: StackPicture | null, selected: string | undefined, release?: string): string {
  const results = (t.results as Result[] | undefined) ?? [];
  const sample = (t.sample ?? {}) as Record<string, unknown>;
  const strategies = results.map((r) => r.strategy);
  // The default is the first entry-aware strategy that failed, else the first entry-aware one.
  const sel = selected !== undefined && strategies.includes(selected) ? selected
    : (results.find((r) => !r.baseline && !good(r))?.strategy ?? results.find((r) => !r.baseline)?.strategy ?? strategies[0] ?? '');
  const css = strategies.map((s) => {
    const c = strategyColor(s);
    return `main[data-strategy="${s}"] .for-${s}{display:block}main[data-strategy="${s}"] .path-${s}{display:inline}`
      + `main[data-strategy="${s}"] .w.r-${s}{background:${c}1f}main[data-strategy="${s}"] .w.r-${s} .gut b{display:inline-block;background:${c}}`;
  }).join('');
  const title = `${sample.comm ?? '?'} ${sample.tid ?? sample.pid ?? ''} on ${t.host ?? '?'}`;
  const head = `<p class="crumbs"><a href="/">← overview</a> · <a href="/v1/traces/${esc(t.id)}">detail (JSON)</a>${pic ? ` · <a href="/v1/traces/${esc(t.id)}/picture">picture (JSON)</a>` : ''}</p>
<h1>${esc(title)}</h1>
<p class="meta">kernel <span title="${esc(t.kernel)}">${esc(kernelLabel(String(t.kernel ?? ''), release))}</span> · cpu ${esc(sample.cpu ?? '?')} · trigger ${esc(sample.trigger ?? '?')} · received ${esc(t.received_at ?? '?')} · <span class="${t.status === 'failing' ? 'bad' : 'ok'}">${esc(t.status ?? '?')}</span>${(t.disagreements as string[] | undefined)?.length ? ` · strategies disagree: ${esc((t.disagreements as string[]).join(' '))}` : ''}</p>
${notes(t)}`;
  // A sample without stack memory ran no strategy (they need registers and stacks): no switcher.
  const chainOnly = !pic && Array.isArray(sample.callchain) && (sample.stacks as unknown[] | undefined)?.length === 0;
  const switcher = results.length && !chainOnly ? `<fieldset class="switch" aria-label="strategy"><legend>Strategy (its walk is drawn over the stack)</legend>${results.map((r) =>
    `<label style="--c:${strategyColor(r.strategy)}"><input type="radio" name="strategy" value="${esc(r.strategy)}"${r.strategy === sel ? ' checked' : ''}><span class="sw"></span>${esc(r.strategy)}${r.baseline ? ' <small>(baseline)</small>' : ''} <span class="${good(r) && !r.false_reliable ? 'ok' : 'bad'}">${esc(r.verdict)}${r.reason ? ` · ${esc(r.reason)}` : ''}</span></label>`).join('')}
<noscript><p>${results.map((r) => `<a href="?strategy=${esc(r.strategy)}">${esc(r.strategy)}</a>`).join(' · ')}</p></noscript></fieldset>` : '';
  const side = results.map((r) => strategyPanel(r, pic?.paths.find((p) => p.strategy === r.strategy), pic)).join('');
  const body = pic
    ? `<div class="explorer"><section class="picture" aria-label="stack picture">${legend()}${pic.stacks.map((s) => stackColumn(s, pic.paths)).join('')}</section><aside class="side">${side}</aside></div>`
    : `${noPicture(t)}${chainOnly ? '' : `<div class="side wide">${side}</div>`}`;
  return page(title, `${head}${switcher}<main data-strategy="${esc(sel)}" id="main">${body}</main>`, { css, script: true });
}

function good(r: Result): boolean {
  return r.verdict === 'exact' || r.verdict === 'tolerated' || r.verdict === 'consistent' || r.verdict === 'not_applicable';
}

function notes(t: Detail): string {
  const out: string[] = [];
  if (typeof t.message === 'string') {
    out.push(`<p class="bad">${esc(t.message)}</p><p>recorded verdicts: failing strategies <code>${esc(((t.strategies as string[] | undefined) ?? []).join(', ') || 'none')}</code> · reasons <code>${esc(((t.reasons as string[] | undefined) ?? []).join(', ') || 'none')}</code></p>`);
  }
  const recheck = t.recheck as { profile_rev_then: number | null; profile_rev_now: number | null; checker_then?: string | null; checker_now?: string; verdicts_changed: boolean; then?: Record<string, unknown>; now?: Record<string, unknown> } | undefined;
  if (recheck) {
    out.push(`<p class="note">Re-derived with the kernel profile as it is now (revision ${esc(recheck.profile_rev_now ?? 'unknown')}); the sample was checked with revision ${esc(recheck.profile_rev_then ?? 'unknown')}.${recheck.checker_now !== undefined && recheck.checker_then !== recheck.checker_now
      ? ` This checker (build ${esc(recheck.checker_now)}) is not the one that checked it (${esc(recheck.checker_then ?? 'not recorded')}).` : ''}${recheck.verdicts_changed
      ? ` <span class="bad">The verdicts differ from the stored ones: then ${esc(recheck.then?.status)} (${esc(((recheck.then?.reasons as string[] | undefined) ?? []).join(', ') || 'no reasons')}), now ${esc(recheck.now?.status)} (${esc(((recheck.now?.reasons as string[] | undefined) ?? []).join(', ') || 'no reasons')}).</span>`
      : ' The verdicts are the stored ones.'}</p>`);
  }
  return out.join('\n');
}

function legend(): string {
  return `<p class="legend"><span class="k-frame">frame header</span> <span class="k-pt_regs">pt_regs</span> <span class="k-hw_frame">hardware frame</span> <span class="k-link">link word</span> · numbered dots: the words the selected strategy read, in order; ✕ where it stopped</p>`;
}

/** One stack: its rows top-down, the blocks as outlines and each strategy's steps as an SVG path in the gutter. */
function stackColumn(s: PictureStack, paths: PicturePath[]): string {
  const index = new Map<string, number>();
  s.rows.forEach((r, i) => { if (r.row === 'word') index.set(r.addr, i); });
  const height = s.rows.length * ROW_H;
  // Which strategies read each word (class r-<s>), and where each one stopped.
  const readBy = new Map<string, Set<string>>();
  for (const p of paths) for (const st of p.steps) if (st.stack === s.type) (readBy.get(st.addr) ?? readBy.set(st.addr, new Set()).get(st.addr)!).add(p.strategy);
  const blockOf = new Map<string, string[]>();
  for (const b of s.blocks) {
    const top = index.get(b.to);
    const bottom = index.get(b.from);
    if (top === undefined || bottom === undefined) continue;
    for (let i = top; i <= bottom; i++) {
      const r = s.rows[i]!;
      if (r.row === 'word') (blockOf.get(r.addr) ?? blockOf.set(r.addr, []).get(r.addr)!).push(b.kind);
    }
  }
  // Outlines as positioned boxes behind the rows (their label is the box's title and caption).
  const boxes = s.blocks.map((b) => {
    const top = index.get(b.to);
    const bottom = index.get(b.from);
    if (top === undefined || bottom === undefined) return '';
    return `<div class="blk k-${b.kind}" style="top:${top * ROW_H}px;height:${(bottom - top + 1) * ROW_H}px" title="${esc(b.label)}"><span>${esc(b.label)}</span></div>`;
  }).join('');
  const svg = paths.map((p) => pathSvg(p, s, index)).join('');
  // Per word: the strategies that stopped on it, and where one leaves this stack (to which stack).
  const marks = new Map<string, string[]>();
  const mark = (addr: string, html: string): void => { (marks.get(addr) ?? marks.set(addr, []).get(addr)!).push(html); };
  for (const p of paths) {
    const last = p.steps.length - 1;
    p.steps.forEach((st, n) => {
      if (st.stack !== s.type) return;
      if (n === last && (p.outcome === 'error' || p.outcome === 'depth_limit' || p.reason !== undefined)) mark(st.addr, `<em class="stopnote path-${esc(p.strategy)}">✕ ${esc(p.reason ?? p.outcome)}</em>`);
      const next = p.steps[n + 1];
      if (next?.stack !== undefined && next.stack !== s.type) mark(st.addr, `<em class="cross path-${esc(p.strategy)}">→ ${esc(next.stack.toUpperCase())} stack</em>`);
    });
  }
  const rows = s.rows.map((r) => rowHtml(r, readBy, blockOf, marks)).join('');
  const below = s.below ? `<p class="below">below: ${esc(gapText(BigInt(s.below.bytes)))} to the ${esc(s.below.stack.toUpperCase())} stack</p>` : '';
  return `<div class="stack" id="stack-${esc(s.type)}"><h3>${esc(s.name)} stack <small>${esc(s.begin)} – ${esc(s.end)}</small></h3><p class="top">top (end) ${esc(s.end)} ↑ higher addresses</p>
<div class="col" style="height:${height}px">${boxes}<svg class="paths" width="${GUTTER}" height="${height}" aria-hidden="true">${svg}</svg>${rows}</div>
<p class="top">begin ${esc(s.begin)}</p>${below}</div>`;
}

function gapText(bytes: bigint): string {
  if (bytes === 0n) return 'adjacent (no guard gap)';
  if (bytes < 1n << 40n) return `${bytes / 1024n} KiB gap${bytes <= 16384n ? ' (guard page)' : ''}`;
  return 'far away in the address space';
}

function pathSvg(p: PicturePath, s: PictureStack, index: Map<string, number>): string {
  const pts: { x: number; y: number; n: number; step: PathStep }[] = [];
  p.steps.forEach((st, n) => {
    if (st.stack !== s.type) return;
    const i = index.get(st.addr);
    if (i === undefined) return;
    pts.push({ x: 14 + (n % 2) * 18, y: i * ROW_H + ROW_H / 2, n, step: st });
  });
  if (pts.length === 0) return '';
  const c = strategyColor(p.strategy);
  const last = p.steps.length - 1;
  const stopped = p.outcome === 'error' || p.outcome === 'depth_limit' || p.reason !== undefined;
  const line = pts.length > 1 ? `<polyline points="${pts.map((q) => `${q.x},${q.y}`).join(' ')}" fill="none" stroke="${c}" stroke-width="2" stroke-opacity=".7"/>` : '';
  const dots = pts.map((q) => q.n === last && stopped
    ? `<g class="stopmark"><circle cx="${q.x}" cy="${q.y}" r="8" fill="#fff" stroke="#b00" stroke-width="2"/><path d="M${q.x - 4},${q.y - 4}L${q.x + 4},${q.y + 4}M${q.x + 4},${q.y - 4}L${q.x - 4},${q.y + 4}" stroke="#b00" stroke-width="2"/><title>step ${q.n + 1}: stopped here (${esc(p.reason ?? p.outcome)})</title></g>`
    : `<g><circle cx="${q.x}" cy="${q.y}" r="8" fill="${c}"/><text x="${q.x}" y="${q.y + 3.5}" text-anchor="middle">${q.n + 1}</text><title>step ${q.n + 1}: ${esc(q.step.role)} word</title></g>`).join('');
  return `<g class="path path-${esc(p.strategy)}">${line}${dots}</g>`;
}

function rowHtml(r: PictureRow, readBy: Map<string, Set<string>>, blockOf: Map<string, string[]>, marks: Map<string, string[]>): string {
  if (r.row === 'gap') {
    return `<div class="w gap"><span class="gut"></span><span class="gaptext">${r.why === 'zero' ? `${r.words} zero words` : `${r.words} words not captured`} (${esc(r.from)} – ${esc(r.to)})</span></div>`;
  }
  const by = readBy.get(r.addr);
  const cls = ['w', `v-${r.kind}`, ...(by ? [...by].map((x) => `r-${x}`) : []), ...(blockOf.get(r.addr) ?? []).map((k) => `in-${k}`)];
  const m = marks.get(r.addr) ?? [];
  const field = r.field ? `<span class="fld">${esc(r.field)}</span> ` : '';
  return `<div class="${cls.join(' ')}" id="w-${esc(r.addr)}" data-addr="${esc(r.addr)}"><span class="gut"><b></b></span><span class="a" title="${esc(r.addr)}">…${esc(r.addr.slice(7))}</span><span class="v">${esc(r.value)}</span><span class="m">${field}${esc(r.meaning ?? '')}${m.join('')}</span></div>`;
}

function strategyPanel(r: Result, p: PicturePath | undefined, pic: StackPicture | null): string {
  const s = r.strategy;
  const frames = p?.frames ?? [];
  const stopped = p ? (p.outcome === 'error' || p.outcome === 'depth_limit' || p.reason !== undefined) : r.reason !== undefined;
  const stop = stopped
    ? `<p class="stop" data-reason="${esc(p?.reason ?? r.reason ?? '')}"><b>stopped: ${esc(p?.reason ?? r.reason ?? p?.outcome ?? '')}</b>${p?.message ?? r.unwind?.message ? ` — ${esc(p?.message ?? r.unwind?.message)}` : ''}${p && p.steps.length ? ` (after ${p.steps.length} words read; last at <a href="#w-${esc(p.steps[p.steps.length - 1]!.addr)}">${esc(p.steps[p.steps.length - 1]!.addr)}</a>)` : ''}</p>`
    : `<p class="end ok">ended: ${esc(p?.outcome ?? r.unwind?.outcome ?? '?')}${p?.reliable ? ' (claims a reliable trace)' : ''}</p>`;
  const onPicture = p?.steps.filter((x) => x.stack !== undefined) ?? [];
  const jump = onPicture.length ? `<p class="mut">Its path: ${p!.steps.length} words read, across ${esc(p!.stacks.map((x) => x.toUpperCase()).join(' → '))} — <a href="#w-${esc(onPicture[0]!.addr)}">go to the first</a>.</p>` : '';
  const list = frames.length
    ? `<ol class="frames" start="0">${frames.map((f) => `<li class="frame${f.invented ? ' invented' : ''}" tabindex="0" id="f-${esc(s)}-${f.index}" data-kind="${esc(f.kind)}" data-words="${esc(f.words.join(' '))}">${f.kind === 'regs' ? `<small>${esc(f.entry ?? 'entry')}, RIP=</small>` : f.kind === 'start' ? '<small>RIP: </small>' : ''}${esc(f.symbol)} <small>${esc(f.stack)}</small>${f.invented ? ' <b class="bad">invented</b>' : ''}</li>`).join('')}</ol>`
    : '';
  const truth = pic?.truth ? `<h4>True chain <small>(ground truth in the sample)</small></h4><ol class="truth" start="0">${pic.truth.map((t) => {
    const i = t.found[s] ?? -1;
    const miss = i < 0;
    return `<li class="${miss ? (t.tolerated ? 'tolerated' : 'missing') : 'found'}">${esc(t.symbol)} <small>${esc(t.kind)}${t.entry ? ` ${esc(t.entry)}` : ''}</small> ${miss ? (t.tolerated ? `<small>not found (tolerated: ${esc(t.tolerated)})</small>` : '<b class="bad">missing</b>') : `<a href="#f-${esc(s)}-${i}" class="ok">✓ #${i}</a>`}</li>`;
  }).join('')}</ol>` : '';
  const missing = (r.missing as string[] | undefined)?.length ? `<p>missing: <code>${esc((r.missing as string[]).join(', '))}</code></p>` : '';
  const extra = (r.extra as string[] | undefined)?.length ? `<p>extra: <code>${esc((r.extra as string[]).join(', '))}</code></p>` : '';
  return `<div class="panel for-${esc(s)}" style="--c:${strategyColor(s)}"><h2>${esc(s)}${r.baseline ? ' <small>(baseline: its losses at entries are expected)</small>' : ''}: <span class="${good(r) && !r.false_reliable ? 'ok' : 'bad'}">${esc(r.verdict)}${r.false_reliable ? ' · FALSE RELIABLE' : ''}</span></h2>
${stop}${jump}${missing}${extra}<h4>Frames <small>(hover or focus one: its words light up)</small></h4>${list}${truth}
<details><summary>kernel-style text</summary><pre>${esc(r.kernel_text ?? '')}</pre></details></div>`;
}

function noPicture(t: Detail): string {
  const sample = (t.sample ?? {}) as Record<string, unknown>;
  const chain = (sample.callchain as { addr: string; sym?: string; dso?: string; flags?: string[] }[] | undefined) ?? [];
  const cc = t.callchain_check as { verdict: string; reason?: string; kernel_frames: number; user_frames: number; bottom: string; findings: { index: number; reason: string; message: string }[] } | undefined;
  const why = chain.length
    ? 'This sample carries no stack memory (a perf callchain or a kernel log): there is no stack to draw, only the chain the host\'s own unwinder produced.'
    : 'No stack picture: the sample could not be re-derived (see above).';
  const bad = new Map((cc?.findings ?? []).map((f) => [f.index, f]));
  const verdict = cc ? `<p class="chainverdict">host unwinder's chain: <span class="${cc.verdict === 'consistent' || cc.verdict === 'exact' ? 'ok' : 'bad'}">${esc(cc.verdict)}${cc.reason ? ` · ${esc(cc.reason)}` : ''}</span> · ${cc.kernel_frames} kernel frames, ${cc.user_frames} user frames · bottom: ${esc(cc.bottom)}</p>` : '';
  const list = chain.length ? `<ol class="chain" start="0">${chain.map((e, i) => {
    const f = bad.get(i);
    return `<li class="${f ? 'missing' : ''}"><code>${esc(e.addr)}</code> ${esc(e.sym ?? '')} <small>${esc(e.dso ?? '')}${e.flags?.length ? ` · ${esc(e.flags.join(', '))}` : ''}</small>${f ? ` <b class="bad">${esc(f.reason)}</b> <small>${esc(f.message)}</small>` : ''}</li>`;
  }).join('')}</ol>` : '';
  return `<section class="nopic"><p class="note">${esc(why)}</p>${verdict}${list}</section>`;
}
