// What the explorer's pages share: escaping, the page shell (one stylesheet, no CDN, no build
// step), the strategies' colours and readable kernel names.

export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** One colour per strategy, picked to stay apart for the common kinds of colour blindness (Dark2). */
const COLORS: Record<string, string> = {
  fp: '#666666', kernel_entry: '#d95f02', section: '#1b9e77', encoded_fp: '#7570b3', orc: '#e7298a',
};

export function strategyColor(s: string): string {
  return COLORS[s] ?? '#a6761d';
}

/**
 * A kernel as people name it: its release when known, and the build id's first 12 characters (the
 * full id in the title). A build id that is already a readable name (the emulator's, a demo's) is
 * shown as it is.
 */
export function kernelLabel(buildId: string, release?: string): string {
  const hashy = /^[0-9a-f]{24,}$/i.test(buildId);
  const short = hashy ? buildId.slice(0, 12) : buildId;
  return release ? `${release} · ${short}` : hashy ? `build ${short}` : short;
}

const STYLE = `
:root{--fg:#1d1d1f;--mut:#666;--bad:#b00020;--ok:#1b7a1b;--line:#ddd;--bg2:#f6f6f8}
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0 auto;padding:1em 1.2em 3em;max-width:1500px}
h1{font-size:1.45em;margin:.3em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}h3{font-size:1em;margin:.2em 0}h4{margin:.8em 0 .3em;font-size:.95em}
a{color:#0b57d0}a:focus-visible,input:focus-visible,select:focus-visible,button:focus-visible,li:focus-visible,summary:focus-visible{outline:3px solid #f29900;outline-offset:1px}
nav.top{display:flex;gap:1.2em;flex-wrap:wrap;align-items:baseline;border-bottom:1px solid var(--line);padding-bottom:.5em}nav.top b{font-size:1.15em}
.bad{color:var(--bad)}.ok{color:var(--ok)}.mut,small{color:var(--mut)}code,.a,.v{font:13px/1.3 ui-monospace,"DejaVu Sans Mono",monospace}
table{border-collapse:collapse;width:100%}td,th{padding:.3em .5em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}th{font-weight:600;background:var(--bg2)}
.scroll{overflow-x:auto;margin-bottom:1.2em}table.sweep td small{display:block}table.sweep td:nth-child(3){max-width:15em}table.sweep td:nth-child(2) code{white-space:nowrap}pre{background:var(--bg2);padding:.6em;overflow:auto;font-size:12.5px}
.crumbs{margin:.2em 0}.meta{color:var(--mut);margin:.2em 0 .6em}.note{background:#fff8e1;border-left:4px solid #f2b600;padding:.4em .7em}
.badge{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:.85em;color:#fff;background:var(--c,#777);margin:0 .2em .2em 0;white-space:nowrap}
fieldset.switch{border:1px solid var(--line);border-radius:6px;display:flex;flex-wrap:wrap;gap:.3em 1.2em;padding:.4em .8em;margin:.6em 0}
fieldset.switch legend{font-weight:600;padding:0 .3em}fieldset.switch label{display:inline-flex;align-items:center;gap:.35em;cursor:pointer;white-space:nowrap}
fieldset.switch .sw{display:inline-block;width:.9em;height:.9em;border-radius:50%;background:var(--c)}
.explorer{display:grid;grid-template-columns:minmax(0,1fr) minmax(300px,420px);gap:1.2em;align-items:start}
.side{position:sticky;top:.5em;max-height:calc(100vh - 1em);overflow:auto}.side.wide{position:static;max-height:none}
.panel{display:none;border-left:5px solid var(--c);padding-left:.8em}.panel h2{margin-top:.2em}
.picture{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;min-width:0}.legend{flex-basis:100%;margin:0;color:var(--mut);font-size:.9em}
.legend span{padding:0 .4em;border-radius:3px}.stack{flex:1 1 560px;min-width:0;max-width:100%}.stack h3 small{font-weight:400}.top,.below{margin:.1em 0;font-size:.85em;color:var(--mut)}
.col{position:relative;border:1px solid #bbb;background:#fff;overflow:hidden}
.w{position:relative;height:22px;display:grid;grid-template-columns:46px 9.2ch 17.5ch minmax(0,1fr);gap:.6em;align-items:center;white-space:nowrap;font-size:13px;border-bottom:1px solid #f0f0f0}
.w .m{overflow:hidden;text-overflow:ellipsis}.w .a{color:var(--mut)}.w.v-zero .v{color:#aaa}.w.v-text .m{color:#0d47a1}.w.v-encoded .m{color:#6a1b9a}
.w .fld{font:12px ui-monospace,monospace;background:#eef;border-radius:3px;padding:0 .25em}.w.gap{background:repeating-linear-gradient(135deg,#fafafa 0 6px,#f0f0f0 6px 12px);color:var(--mut);font-size:12px}
.w.gap .gaptext{grid-column:2/5}.w.hl{background:#ffeb3b !important;outline:2px solid #f29900;z-index:1}
.gut b{display:none;width:6px;height:22px}
.blk{position:absolute;left:50px;right:2px;border:2px solid;border-radius:3px;pointer-events:none;z-index:2}.blk span{position:absolute;right:3px;top:-1px;font-size:10.5px;background:#fff;padding:0 .3em;border-radius:0 0 0 3px;max-width:60%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.k-frame{border-color:#9e9e9e;border-style:dashed;background:#f5f5f5}.k-pt_regs{border-color:#1565c0;background:#e3f2fd}.k-hw_frame{border-color:#c62828;background:#ffebee}.k-link{border-color:#2e7d32;background:#e8f5e9}
.blk.k-frame,.blk.k-pt_regs,.blk.k-hw_frame,.blk.k-link{background:transparent}.blk.k-frame span{display:none}
svg.paths{position:absolute;left:0;top:0;z-index:3;overflow:visible}svg.paths text{font:bold 9px sans-serif;fill:#fff}.path,.stopnote,.cross{display:none}
.stopnote,.cross{font-style:normal;margin-left:.6em;padding:0 .35em;border-radius:3px;font-size:12px}.stopnote{background:var(--bad);color:#fff}.cross{background:#e8f5e9;color:#1b5e20}
.stop{background:#fdecea;border-left:4px solid var(--bad);padding:.4em .6em}.end{background:#e8f5e9;padding:.3em .6em}
ol.frames,ol.truth,ol.chain{padding-left:2.3em;margin:.2em 0}ol.frames li{cursor:pointer;padding:.1em .3em;border-radius:3px}ol.frames li:hover,ol.frames li.hl{background:#ffeb3b}
li.invented{background:#fdecea}li.missing{color:var(--bad)}li.tolerated{color:var(--mut)}
.chart{display:flex;flex-wrap:wrap;gap:1em}.chart figure{margin:0;flex:0 1 300px;max-width:100%}.chart svg{width:100%;height:auto;border:1px solid var(--line);background:#fff}
form.filters{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:end;margin:.4em 0}form.filters label{display:flex;flex-direction:column;font-size:.9em}
select,input,button{font:inherit;padding:.25em .4em}button{cursor:pointer}
.out-exact{color:#999}.out-window{background:#fff8e1}.out-stopped{background:#fdecea}.out-not_decoded{background:#ede7f6}.out-wrong{background:#b00020;color:#fff}
@media (max-width:900px){.explorer{grid-template-columns:1fr}.side{position:static;max-height:none}.w{grid-template-columns:46px 17.5ch minmax(0,1fr)}.w .a{display:none}.w.gap .gaptext{grid-column:2/4}
body{padding:.6em}.hide-sm{display:none}.blk span{display:none}}
`;

export function page(title: string, body: string, opts: { css?: string; script?: boolean; refresh?: number } = {}): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)} · stacksanity</title>
${opts.refresh ? `<meta http-equiv="refresh" content="${opts.refresh}">` : ''}<style>${STYLE}${opts.css ?? ''}</style></head><body>
<nav class="top" aria-label="site"><b>stacksanity</b><a href="/">overview</a><a href="/sweeps">blind spots (sweep)</a><a href="/experiment">entry designs (experiment)</a><a href="/docs">API docs</a><a href="/metrics">metrics</a></nav>
${body}${opts.script ? '<script src="/explorer.js" defer></script>' : ''}</body></html>`;
}
