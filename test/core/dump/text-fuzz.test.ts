// Mutation fuzzing of the text parser: whatever the input, parseTextDump returns (never throws,
// never hangs), every rejection carries a closed reason and a sample index, and every sample it
// accepts is valid and round-trips through the writer. Deterministic (fixed seed) so a failure
// names the iteration that reproduces it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';
import { validateSample } from '../../../services/core/dump/validate.ts';
import { REJECT_REASONS } from '../../../services/core/dump/errors.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { xorshift } from '../../support/rng.ts';


function ownSample(i: number): Sample {
  const begin = 0xffffc90000000000n + BigInt(i) * 0x10000n;
  const bytes = Uint8Array.from({ length: 75 + i * 8 }, (_, k) => (k * 37 + i) & 0xff);
  return {
    comm: i % 2 ? 'V8 WorkerThread' : 'swapper/0', pid: 10 + i, tid: 20 + i, cpu: i, time: `${i}.000001`, period: 1000n, trigger: 'nmi',
    host: 'h', kernel: 'b1d', regs: { ip: 0xffffffff81000000n + BigInt(i), sp: begin + 0x3f00n, bp: begin + 0x3f40n, cs: 0x10n, flags: 0x246n },
    stacks: [
      { type: 'task', begin, end: begin + 0x4000n, windows: [{ start: begin + 0x3f00n, bytes }] },
      { type: 'irq', begin: begin + 0x8000n, end: begin + 0xc000n, windows: [{ start: begin + 0xbff0n, bytes: new Uint8Array(16).fill(0xcc) }] },
    ],
    callchain: [
      { addr: 0xffffffff81000000n, sym: 'native_safe_halt+0x6', dso: '[kernel.kallsyms]', flags: [] },
      { addr: 0n, sym: '[unknown]', dso: '[unknown]', flags: ['unknown_symbol', 'zero'] },
      { addr: 0x7f00n, sym: ' odd (sym)', flags: [] },
    ],
    truth: { frames: [{ ip: 0xffffffff81000000n, kind: 'start' }, { ip: 0xffffffff81000100n, kind: 'regs', entry: 'page fault', tolerated: 'entry_code' }] },
  };
}

const SEEDS: string[] = [
  formatTextDump([ownSample(0), ownSample(1), ownSample(2)]),
  [
    '# ========',
    '# cmdline : /usr/bin/perf record -F 99 -a -g -- sleep 10',
    'perf   977/977   [000] 7628263.042515: cycles: ',
    '\tffffffff8104f45a native_write_msr_safe ([kernel.kallsyms])',
    '\t    7f183b22aec7 __GI___ioctl (/lib/x86_64-linux-gnu/libc-2.19.so)',
    '\t               0 [unknown] ([unknown])',
    '',
    'V8 WorkerThread 24636/25607 [000] 94564.109216: 100 cycles:',
    '\t    7f1e2162ad6f StealTask::do_it(GCTaskManager*, unsigned int) (/x/libjvm.so)',
    '\t    7f1e2215d058  (/lib/x.so)',
    ' ABI:2    AX:0xffffd168fee0a980    IP:0xffffffff8a06f2f4 FLAGS:0x4e    CS:0x10  ABI:2 CX:0x1',
    'java 19983 cycles:',
    'ffffffff8103d0ca native_write_msr_safe ([kernel.kallsyms])',
    '',
    '           false 39654 19115.489713:          1 cycles:u:  ffffffff9b201293 [unknown] ([unknown])',
    '           false 39654 19115.489719:          1 cycles:      7fa68b1f2d84 _dl_start+0x4 (/usr/lib/ld-2.31.so)',
    '',
  ].join('\n'),
];

const ALPHABET = ['\n', '\n\n', ' ', '\t', '.', '#', '0', 'f', 'g', ':', '(', ')', '"', '\\', '/', '[', ']', '=', '-', 'é', '\r', 'ABI:', '.mem ', '.window '];
const GARBAGE = [
  '\t.mem ffffc90000003f00 0000000000000000',
  '\t.window ffffc90000003f00',
  '\t.stack nmi fffffe0000000000 fffffe0000001000',
  '\t.regs ip=ffffffff81000000 sp=ffffc90000003f00',
  '\t.truth ffffffff81000000 call entry="x y"',
  '\t.bytes ffffc90000003f00 0102',
  '\t.callchain empty',
  '\t.sym 0 "a',
  '\t.comm "unterminated',
  ' ABI:2 IP:0xzz',
  ' ABI:2 constructor:0x1 __proto__:0x2 toString:0x3',
  '\t.regs __proto__=1',
  'x 1 [000] 1.0: nmi:',
  '\tffffffffffffffffff toolong (x)',
  '\t' + '('.repeat(50) + ')'.repeat(49),
  '#',
  '',
];

function mutate(text: string, rnd: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  let t = text;
  const rounds = 1 + Math.floor(rnd() * 4);
  for (let r = 0; r < rounds; r++) {
    const op = Math.floor(rnd() * 7);
    const lines = t.split('\n');
    const li = Math.floor(rnd() * lines.length);
    switch (op) {
      case 0: { // flip one character
        const p = Math.floor(rnd() * Math.max(1, t.length));
        t = t.slice(0, p) + pick(ALPHABET) + t.slice(p + 1);
        break;
      }
      case 1: // delete a line
        lines.splice(li, 1);
        t = lines.join('\n');
        break;
      case 2: // duplicate a line
        lines.splice(li, 0, lines[li] ?? '');
        t = lines.join('\n');
        break;
      case 3: // truncate anywhere
        t = t.slice(0, Math.floor(rnd() * (t.length + 1)));
        break;
      case 4: // insert a garbage line
        lines.splice(li, 0, pick(GARBAGE));
        t = lines.join('\n');
        break;
      case 5: { // swap two lines
        const lj = Math.floor(rnd() * lines.length);
        const a = lines[li]!;
        lines[li] = lines[lj]!;
        lines[lj] = a;
        t = lines.join('\n');
        break;
      }
      default: { // random bytes, any code unit
        const p = Math.floor(rnd() * Math.max(1, t.length));
        let junk = '';
        const n = 1 + Math.floor(rnd() * 8);
        for (let k = 0; k < n; k++) junk += String.fromCharCode(Math.floor(rnd() * 0x10000));
        t = t.slice(0, p) + junk + t.slice(p);
      }
    }
  }
  return t;
}

const REASONS: ReadonlySet<string> = new Set(REJECT_REASONS);
const plain = (ss: Sample[]): Omit<Sample, 'source'>[] => ss.map(({ source: _s, ...rest }) => rest);

/**
 * Hang guards, not speed targets (those live in the benchmarks): these inputs parse in
 * milliseconds, while a parser quadratic in a 200,000-character line would take tens of seconds
 * or more. The bound leaves room for a slow, shared machine.
 */
const HANG_MS = 10_000;

function checkParse(input: string, label: string): void {
  const t0 = performance.now();
  const r = parseTextDump(input, { file: 'fuzz.txt' });
  const ms = performance.now() - t0;
  assert.ok(ms < HANG_MS, `${label}: parse took ${ms.toFixed(0)} ms`);
  let last = -1;
  for (const j of r.rejected) {
    assert.ok(REASONS.has(j.reason), `${label}: reason ${j.reason}`);
    assert.ok(!j.message.includes('internal parser error'), `${label}: ${j.message}`);
    assert.ok(j.sampleIndex > last, `${label}: rejection indices increase`);
    last = j.sampleIndex;
    assert.equal(j.where.sampleIndex, j.sampleIndex);
  }
  for (const s of r.samples) validateSample(s);
  // Whatever was accepted is a sample the writer can write and the parser read back unchanged.
  const back = parseTextDump(formatTextDump(r.samples));
  assert.deepEqual(back.rejected, [], label);
  assert.deepStrictEqual(plain(back.samples), plain(r.samples), label);
}

describe('text parser fuzz', () => {
  it('the seed dumps parse cleanly', () => {
    for (const s of SEEDS) assert.deepEqual(parseTextDump(s).rejected, []);
  });

  it('3000 random mutations: no throw, bounded time, valid results', () => {
    const rnd = xorshift(0x5eed1234);
    for (let i = 0; i < 3000; i++) {
      const input = mutate(SEEDS[i % SEEDS.length]!, rnd);
      checkParse(input, `iteration ${i}`);
    }
  });

  it('pathological lines stay linear', () => {
    const big = 200_000;
    const cases: [string, string][] = [
      ['a header-like line of many event tokens', 'a: '.repeat(big / 3) + '\n'],
      ['many candidate comm tokens', 'x '.repeat(big / 2) + 'nmi:\n'],
      ['nested parentheses in a frame', 'x 1 nmi:\n\tffffffff81000000 ' + '('.repeat(big) + ')'.repeat(big) + '\n'],
      ['an unterminated JSON string', 'x nmi:\n\t.comm "' + '\\"'.repeat(big / 2) + '\n'],
      ['one huge .mem line', 'x nmi:\n\t.stack task ffffc90000000000 ffffc90000004000\n\t.window ffffc90000000000\n\t.mem ffffc90000000000' + ' 0000000000000000'.repeat(big / 17) + '\n'],
      ['a long line of spaces and colons', ' :'.repeat(big) + '\n'],
      ['ABI with many registers', 'x 1 nmi:\n ABI:2' + ' AX:0x1'.repeat(big / 7) + '\n'],
      ['many windows without a declared end', 'x nmi:\n\t.stack task ffffc90000000000 ffffc90000004000\n' + '\t.window ffffc90000000000\n'.repeat(20000)],
    ];
    for (const [label, input] of cases) {
      const t0 = performance.now();
      parseTextDump(input);
      const ms = performance.now() - t0;
      assert.ok(ms < HANG_MS, `${label}: ${ms.toFixed(0)} ms`);
    }
  });
});
