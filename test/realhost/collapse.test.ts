// Folded-stack export: byte-for-byte conformance with brendangregg/FlameGraph's own goldens
// (../shared/corpus/perf-script/flamegraph-golden, produced by stackcollapse-perf.pl --pid,
// --kernel and --all), plus the options without goldens, checked on inputs whose expected output
// is worked out by hand from the Perl script's rules (reference/peers-and-formats.md §2.6).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { collapsePerfScript, type CollapseOptions } from '../../services/realhost/collapse.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const corpus = path.resolve(root, '../shared/corpus/perf-script');
const golden = path.join(corpus, 'flamegraph-golden');
const skip = existsSync(golden) ? false : `${golden} not found: ../shared/corpus is absent`;

function input(name: string): string | undefined {
  const f = path.join(corpus, `flamegraph-${name}.txt`);
  if (existsSync(f)) return readFileSync(f).toString('latin1');
  if (existsSync(f + '.gz')) return gunzipSync(readFileSync(f + '.gz')).toString('latin1');
  return undefined;
}

const OPTS: Record<string, CollapseOptions> = { pid: { pid: true }, kernel: { kernel: true }, all: { all: true } };

describe('collapse: FlameGraph goldens, byte for byte', { skip }, () => {
  const goldens = skip ? [] : readdirSync(golden).filter((g) => g.endsWith('.txt')).sort();
  it('has the 36 golden files (12 inputs × pid, kernel, all)', () => {
    assert.equal(goldens.length, 36);
  });
  for (const g of goldens) {
    const m = /^(.*)-collapsed-(pid|kernel|all)\.txt$/.exec(g);
    const name = m?.[1] ?? g;
    const text = skip ? undefined : input(name);
    // perf-funcab-cmd-01's goldens are in FlameGraph's results/ but its input is not in the corpus.
    const why = text === undefined ? `no input flamegraph-${name}.txt(.gz) in the corpus for this golden` : false;
    it(g, { skip: why }, () => {
      const want = readFileSync(path.join(golden, g)).toString('latin1');
      const got = collapsePerfScript(text!, OPTS[m![2]!]).text;
      if (got !== want) {
        const a = got.split('\n');
        const b = want.split('\n');
        let i = 0;
        while (a[i] === b[i]) i++;
        assert.fail(`first difference at line ${i + 1}:\n  got  ${a[i]}\n  want ${b[i]}`);
      }
    });
  }
});

// The Perl script's regexes, with Perl's byte-string classes spelled out. The scanner must agree
// with them on every line of every corpus file (the fallback path uses them too, so this pins the
// fast path).
const HEADER_RE = /^([^\t\n\v\f\r ][^\n]+?)[\t\n\v\f\r ]+(\d+)\/*(\d+)*[\t\n\v\f\r ]+/;
const EVENT_RE = /:[\t\n\v\f\r ]*(\d+)*[\t\n\v\f\r ]+([^\t\n\v\f\r ]+):[\t\n\v\f\r ]*$/;
const STACK_RE = /^[\t\n\v\f\r ]*(\w+)[\t\n\v\f\r ]*([^\n]+) \(([^\n]*)\)/;

describe('collapse: the line scanner equals the Perl regexes', { skip }, () => {
  it('on every line of every perf-script corpus file, each line collapsed alone', () => {
    let lines = 0;
    for (const f of readdirSync(corpus).filter((x) => /\.txt(\.gz)?$/.test(x))) {
      const buf = readFileSync(path.join(corpus, f));
      const text = (f.endsWith('.gz') ? gunzipSync(buf) : buf).toString('latin1');
      for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        lines++;
        const h = HEADER_RE.exec(line);
        const e = EVENT_RE.exec(line);
        const s = h ? null : STACK_RE.exec(line);
        // A header line followed by a fake frame and a blank: the folded line shows what the
        // scanner read (comm, pid/tid, period); a frame line after a fixed header shows the frame.
        if (h) {
          const got = collapsePerfScript(`${line}\n\tf x (m)\n\n`, { tid: true }).text;
          let pid = h[2]!;
          let tid = h[3];
          if (!tid || tid === '0') {
            tid = pid;
            pid = '?';
          }
          const period = e && e[1] && e[1] !== '0' ? Number(e[1]) : 1;
          assert.equal(got, `${`${h[1]}-${pid}/${tid}`.replaceAll(' ', '_')};x ${period}\n`, `${f}: ${line}`);
        } else {
          const got = collapsePerfScript(`cc 1 e:\n${line}\n\n`).text;
          if (!s) assert.equal(got, 'cc 1\n', `${f}: unrecognized: ${line}`);
          else {
            // Tidy rules aside, the symbol text must be what (.+) captured: check the plain ones.
            const func = s[2]!;
            if (/^[A-Za-z0-9_.:$@<>*&, ]+$/.test(func) && !func.includes('<') && !func.includes('>')) assert.equal(got, `cc;${func} 1\n`, `${f}: ${line}`);
          }
        }
      }
    }
    assert.ok(lines > 40_000, `checked ${lines} lines`);
  });
});

describe('collapse: rules worked out from stackcollapse-perf.pl', () => {
  const one = (frames: string, opts: CollapseOptions = {}, header = 'java 24636/25607 [000] 94564.109216: 100 cycles:'): string =>
    collapsePerfScript(`${header}\n${frames}\n\n`, opts).text;

  it('--tid prints comm-PID/TID, --pid comm-PID; a lone number is the TID (PID ?)', () => {
    assert.equal(one('\t1 a (m)', { tid: true }), 'java-24636/25607;a 100\n');
    assert.equal(one('\t1 a (m)', { pid: true }), 'java-24636;a 100\n');
    assert.equal(one('\t1 a (m)', { tid: true }, 'V8 WorkerThread 25607 4794564.109216: cycles:'), 'V8_WorkerThread-?/25607;a 1\n');
  });
  it('--jit marks /tmp/perf-PID.map frames _[j]; --kernel marks [..] and vmlinux dsos _[k]', () => {
    const frames = '\t7f1 Lfoo/Bar;.baz (/tmp/perf-19982.map)\n\tffffffff81 do_sys (/lib/modules/4.3/build/vmlinux)\n\tffffffff82 [unknown] ([unknown])';
    // Java process: "L" goes (the name has a /), ";" becomes ":". Frames are leaf first.
    assert.equal(one(frames, { jit: true }), 'java;[unknown];do_sys;foo/Bar:.baz_[j] 100\n');
    assert.equal(one(frames, { kernel: true }), 'java;[unknown];do_sys_[k];foo/Bar:.baz 100\n');
    assert.equal(one(frames, { all: true }), 'java;[unknown];do_sys_[k];foo/Bar:.baz_[j] 100\n');
  });
  it('--addrs names unresolved frames [dso <pc>]', () => {
    assert.equal(one('\t7f00 [unknown] (/lib/libc-2.19.so)\n\t7f01 [unknown] ([unknown])', { addrs: true }), 'java;[unknown <7f01>];[libc-2.19.so <7f00>] 100\n');
  });
  it('inline chains (->) become several frames, the inner ones _[i]; offsets and argument lists go', () => {
    assert.equal(one('\t10 a->b(int)->c+0x1f (/x)', {}, 'pp 1 e:'), 'pp;a;b_[i];c_[i] 1\n');
    // The offset goes only at the very end (s/\+0x[\da-f]+$//), before the split.
    assert.equal(one('\t10 a+0x1f->b (/x)', {}, 'pp 1 e:'), 'pp;a+0x1f;b_[i] 1\n');
    assert.equal(one('\t10 net/http.(*Client).Do+0x1 (/x)', {}, 'pp 1 e:'), 'pp;net/http.(*Client).Do 1\n');
    assert.equal(one('\t10 f(anonymous namespace)::g(int) (/x)', {}, 'pp 1 e:'), 'pp;f(anonymous namespace)::g 1\n');
  });
  it('the first event is kept, others dropped; a sample without a blank line at EOF is not emitted', () => {
    const text = 'aa 1 1.0: 5 cycles:\n\t1 f (m)\n\nbb 2 2.0: 7 instructions:\n\t1 g (m)\n\naa 1 3.0: 5 cycles:\n\t1 f (m)\n\naa 1 4.0: 5 cycles:\n\t1 h (m)\n';
    const r = collapsePerfScript(text);
    assert.equal(r.text, 'aa;f 10\n');
    assert.equal(r.filteredEvent, 'instructions');
  });
  it('unrecognized lines are counted and change nothing', () => {
    const r = collapsePerfScript('aa 1 e:\n\t1 f (m)\n\t@ not a frame\n\n');
    assert.equal(r.text, 'aa;f 1\n');
    assert.equal(r.unrecognized, 1);
  });
  it('bytes stay bytes: latin1 in, latin1 out (UTF-8 names survive unchanged)', () => {
    const utf8 = Buffer.from('pp 1 e:\n\t1 naïve (m)\n\n', 'utf8').toString('latin1');
    assert.equal(Buffer.from(collapsePerfScript(utf8).text, 'latin1').toString('utf8'), 'pp;naïve 1\n');
  });
});

describe('collapse: fuzz', { skip }, () => {
  // The runner's timeout is the hang guard (catastrophic backtracking takes minutes here); speed
  // itself is bench:collapse's business, not a test's.
  it('truncated and byte-flipped corpus files collapse without throwing, and without hanging', { timeout: 180_000 }, () => {
    let seed = 99;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (const f of readdirSync(corpus).filter((x) => x.endsWith('.txt'))) {
      const text = readFileSync(path.join(corpus, f)).toString('latin1');
      for (let k = 0; k < 12; k++) {
        const cut = Math.floor(rand() * (text.length + 1));
        collapsePerfScript(text.slice(0, cut), { all: true, addrs: true, tid: true });
        const chars = text.split('');
        for (let j = 0; j < 30 && chars.length > 0; j++) chars[Math.floor(rand() * chars.length)] = String.fromCharCode(Math.floor(rand() * 256));
        collapsePerfScript(chars.join(''), { kernel: true });
      }
    }
    // Pathological lines: the regex fallback must stay linear-ish (no catastrophic backtracking).
    const long = `xx 1 e:\n\t${'a'.repeat(20_000)} ${'( '.repeat(20_000)}\n\t${'1 '.repeat(20_000)}\n${'x '.repeat(20_000)}1 \n\n`;
    collapsePerfScript(long);
  });
});

describe('collapse: text that is not latin1', () => {
  it('chars past 0xff (a UTF-16 string) stay distinct frames, though the scanner reads them as one byte', () => {
    // Ā (U+0100) and ā (U+0101) both read as 0xff in the frame table's bytes; the keys must still
    // differ. Two samples, one frame each, by the Perl rules: comm;func count.
    const got = collapsePerfScript('cc 1 x:\n\t1 f\u0100 (m)\n\ncc 1 x:\n\t1 f\u0101 (m)\n\ncc 1 x:\n\t1 f\u0100 (m)\n\n').text;
    assert.equal(got, 'cc;f\u0100 2\ncc;f\u0101 1\n');
  });
});
