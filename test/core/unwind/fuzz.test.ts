// Thousands of corrupted samples through the whole engine: nothing throws, nothing hangs, and the
// kernel's invariants hold for whatever each strategy reports. Seeded, so a failure reproduces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSample } from '../../../services/core/check/checker.ts';
import { parseTextDump, formatTextDump } from '../../../services/core/dump/text.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { STRATEGIES } from '../../../services/core/unwind/types.ts';
import { cloneSample } from '../../support/stack-image.ts';
import { ENCODED, KENTRY, SECTION, pageFault, nmiInIrq, kthread, NMI_SAMPLE_AT, type Flavour } from './fixtures.ts';
import { xorshift as rng } from '../../support/rng.ts';


function seeds(f: Flavour): Sample[] {
  return [pageFault(f).b.sample, nmiInIrq(f).sample({ at: NMI_SAMPLE_AT }).sample, kthread(f).b.sample];
}

const MAX_FRAMES = 64;

/**
 * The oracle for §9 rule 9 (__kernel_text_address: core kernel text is [_stext, _etext)), read
 * straight from the kallsyms text the fixture built — not through the profile the unwinders use.
 */
function textRange(kallsyms: string): { lo: bigint; hi: bigint } {
  const addr = (name: string): bigint => {
    const line = kallsyms.split('\n').find((l) => l.split(' ')[2] === name);
    assert.ok(line, `kallsyms has ${name}`);
    return BigInt('0x' + line.split(' ')[0]);
  };
  return { lo: addr('_stext'), hi: addr('_etext') };
}

function assertSane(s: Sample, f: Flavour, what: string): void {
  const c = checkSample(s, f.profile, STRATEGIES, { maxFrames: MAX_FRAMES });
  for (const r of c.results) {
    const u = r.unwind;
    assert.ok(u.frames.length <= MAX_FRAMES, `${what}: ${r.strategy} reported ${u.frames.length} frames`);
    const text = textRange(f.kernel.kallsyms);
    for (const fr of u.frames.slice(1)) {
      // §9 rule 9: every reported return address and regs->ip is kernel text.
      assert.ok(fr.ip >= text.lo && fr.ip < text.hi, `${what}: ${r.strategy} reported non-text ${fr.ip.toString(16)}`);
    }
    if (u.reliable) assert.ok(u.outcome === 'user' || u.outcome === 'kthread' || u.outcome === 'task_top', `${what}: reliable but ended ${u.outcome}`);
    if (u.outcome === 'error') assert.ok(u.reason !== undefined && u.message !== undefined, `${what}: an error without a reason`);
  }
}

test('random byte corruption of stack windows and registers never breaks the unwinders', () => {
  const next = rng(0x5eed);
  let runs = 0;
  for (const f of [ENCODED, SECTION, KENTRY]) {
    for (const base of seeds(f)) {
      for (let i = 0; i < 400; i++) {
        const s = cloneSample(base);
        const n = 1 + Math.floor(next() * 6);
        for (let k = 0; k < n; k++) {
          const st = s.stacks[Math.floor(next() * s.stacks.length)]!;
          const w = st.windows[0];
          if (!w || w.bytes.length === 0) continue;
          const at = Math.floor(next() * w.bytes.length) & ~7;
          const mode = next();
          if (mode < 0.4) w.bytes[at + Math.floor(next() * 8)] = Math.floor(next() * 256);
          else if (mode < 0.7) {
            // Overwrite a word with another word of the same stack: plausible-looking pointers make loops.
            const from = Math.floor(next() * w.bytes.length) & ~7;
            w.bytes.copyWithin(at, from, Math.min(from + 8, w.bytes.length));
          } else if (mode < 0.85) s.regs!.bp = st.begin + BigInt(Math.floor(next() * Number(st.end - st.begin)));
          else w.bytes.fill(0, at, Math.min(at + 64, w.bytes.length));
        }
        assertSane(s, f, `${f.layout} seed ${runs}`);
        runs++;
      }
    }
  }
  assert.equal(runs, 3 * 3 * 400);
});

test('mutated and truncated dump text: every sample that parses is checked without an exception', () => {
  const next = rng(0xd00d);
  const text = formatTextDump(seeds(ENCODED));
  const lines = text.split('\n');
  let parsed = 0;
  for (let i = 0; i < 1500; i++) {
    let t: string;
    const mode = next();
    if (mode < 0.3) t = text.slice(0, Math.floor(next() * text.length));
    else if (mode < 0.6) {
      const ls = lines.slice();
      const j = Math.floor(next() * ls.length);
      const line = ls[j]!;
      const c = Math.floor(next() * Math.max(1, line.length));
      ls[j] = line.slice(0, c) + '0123456789abcdefz .:'[Math.floor(next() * 20)] + line.slice(c + 1);
      t = ls.join('\n');
    } else if (mode < 0.8) {
      const ls = lines.slice();
      ls.splice(Math.floor(next() * ls.length), 1 + Math.floor(next() * 3));
      t = ls.join('\n');
    } else {
      const ls = lines.slice();
      const j = Math.floor(next() * ls.length);
      ls.splice(j, 0, ls[Math.floor(next() * ls.length)]!);
      t = ls.join('\n');
    }
    const r = parseTextDump(t, { file: 'fuzz' });
    for (const s of r.samples) {
      assertSane(s, ENCODED, `text mutation ${i}`);
      parsed++;
    }
  }
  assert.ok(parsed > 500, `only ${parsed} mutated samples parsed: the fuzz exercises too little`);
});
