// A mutator for text dumps, shared by the scan and batch tests: replaces, drops, repeats, swaps and
// inserts lines and tokens near what the fast paths read (hex digits, addresses, window ends,
// stack types, selectors, duplicate keywords), and sometimes cuts the text. Driven by a seeded
// xorshift, so a failure reproduces by its iteration number.
const HEXCH = '0123456789abcdefABCDEF';
/** A token replaced by something near it: another hex value, a shifted address, a keyword, garbage. */
function variant(tok: string, rnd: () => number): string {
  const r = Math.floor(rnd() * 12);
  const isHex = /^[0-9a-fA-F]{1,16}$/.test(tok);
  if (isHex && r < 5) {
    const v = BigInt('0x' + tok);
    const d = [8n, 16n, 0x40n, 0x1000n, 0x4000n, 0x10000n][Math.floor(rnd() * 6)]!;
    const n = BigInt.asUintN(64, rnd() < 0.5 ? v + d : v - d);
    return n.toString(16).padStart(rnd() < 0.5 ? tok.length : 1, '0');
  }
  switch (r) {
    case 5: return tok.slice(0, Math.max(0, tok.length - 1 - Math.floor(rnd() * 3)));
    case 6: return tok + HEXCH[Math.floor(rnd() * HEXCH.length)]!;
    case 7: return ['task', 'irq', 'nmi', 'entry', 'db', 'bogus', 'start', 'call', 'regs', 'empty', 'entry=x', 'tolerated=leaf', 'tolerated=nope', 'cs=10000', 'ss=ffff', 'sp=0', 'ip=8000000000000000', '"q"'][Math.floor(rnd() * 18)]!;
    case 8: return tok.replace(/[0-9a-f]/, 'g');
    case 9: return '';
    case 10: return `${tok} ${tok}`;
    default: return tok.toUpperCase();
  }
}

export function mutate(text: string, rnd: () => number): string {
  const lines = text.split('\n');
  const rounds = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < rounds; k++) {
    const li = Math.floor(rnd() * lines.length);
    const op = Math.floor(rnd() * 8);
    const line = lines[li] ?? '';
    if (op <= 3) {
      // A token of a line, most often a value.
      const toks = line.split(/(\s+)/);
      const idx = toks.map((t, i) => (t.trim() ? i : -1)).filter((i) => i >= 0);
      if (idx.length === 0) continue;
      const at = idx[Math.floor(rnd() * idx.length)]!;
      toks[at] = variant(toks[at]!.includes('=') && rnd() < 0.7 ? toks[at]!.split('=')[0] + '=' + variant(toks[at]!.split('=')[1] ?? '', rnd) : toks[at]!, rnd);
      lines[li] = toks.join('');
    } else if (op === 4) lines.splice(li, 1);
    else if (op === 5) lines.splice(li, 0, line);
    else if (op === 6) {
      const lj = Math.floor(rnd() * lines.length);
      [lines[li], lines[lj]] = [lines[lj]!, line];
    } else {
      const extra = ['', '# note', '\t.host again', '\t.kernel k2', '\t.comm x', '\t.bytes 0 00', '\t.window ffffc90000003f00', '\tffffffff81000000 f ([kernel.kallsyms])', '\t.regs ip=1 ip=2', ' ABI:2 IP:0x1', 'x 1 [000] 1.0: nmi:'];
      lines.splice(li, 0, extra[Math.floor(rnd() * extra.length)]!);
    }
  }
  let t = lines.join('\n');
  if (rnd() < 0.05) t = t.slice(0, Math.floor(rnd() * t.length));
  return t;
}
