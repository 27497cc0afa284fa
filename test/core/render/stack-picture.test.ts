// The walk's trail (UnwindOptions.trail) and the stack picture built on it, checked on the shipped
// example's samples against the frame-pointer rules themselves: a walk reads a frame's return
// address at bp+8 and the caller's bp at bp, and ends at the task stack's top by reading the cs of
// the pt_regs there (is_last_task_frame); a frame-pointer frame is the two words of its header.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkSample } from '../../../services/core/check/checker.ts';
import { parseTextDump } from '../../../services/core/dump/text.ts';
import { stackPicture } from '../../../services/core/render/stack-picture.ts';
import { PT_REGS_OFFSET, PT_REGS_SIZE } from '../../../services/core/stack/layout.ts';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import { formatHex64 } from '../../../services/core/u64.ts';
import { unwind } from '../../../services/core/unwind/index.ts';

const ROOT = join(import.meta.dirname, '../../..');
const samples = parseTextDump(readFileSync(join(ROOT, 'examples/demo.dump'), 'utf8')).samples;
const profile = KernelProfile.fromKallsyms(readFileSync(join(ROOT, 'examples/demo.kallsyms'), 'utf8'), { buildId: 'demo-encoded-fp', layouts: ['encoded_fp'] });

test('without trail a walk records nothing; with it, every call frame\'s return address was read, and the end at the task top', () => {
  const s = samples[0]!;
  assert.equal(unwind(s, profile, 'fp').reads, undefined);
  const u = unwind(s, profile, 'encoded_fp', { trail: true });
  const reads = u.reads!;
  assert.ok(reads.length > 0);
  for (const f of u.frames.filter((x) => x.kind === 'call')) {
    assert.ok(reads.some((r) => r.role === 'ret' && r.addr === f.slot), `ret read at ${formatHex64(f.slot!)}`);
  }
  // The first word read is the return address above the sampled bp's frame.
  assert.deepEqual(reads[0], { addr: s.regs!.bp! + 8n, role: 'ret' });
  if (u.outcome === 'user') {
    const task = s.stacks.find((x) => x.type === 'task')!;
    assert.deepEqual(reads[reads.length - 1], { addr: task.end - BigInt(PT_REGS_SIZE) + BigInt(PT_REGS_OFFSET.cs), role: 'regs' });
  }
});

test('the picture: every captured word drawn once, frames are their two header words, the truth set against each walk', () => {
  for (const s of samples) {
    const check = checkSample(s, profile, ['fp', 'encoded_fp'], { trail: true });
    const pic = stackPicture(s, profile, check);
    for (const st of pic.stacks) {
      const addrs = st.rows.flatMap((r) => (r.row === 'word' ? [r.addr] : []));
      assert.equal(new Set(addrs).size, addrs.length, 'no word twice');
      // Highest address first.
      for (let i = 1; i < addrs.length; i++) assert.ok(addrs[i]! < addrs[i - 1]!);
    }
    for (const p of pic.paths) {
      const u = check.results.find((r) => r.strategy === p.strategy)!.unwind;
      assert.equal(p.steps.length, u.reads!.length);
      p.frames.forEach((f, i) => {
        const fr = u.frames[i]!;
        if (fr.kind === 'call') assert.deepEqual(f.words, [formatHex64(fr.slot! - 8n), formatHex64(fr.slot!)]);
        if (fr.kind === 'regs') assert.equal(f.words.length, PT_REGS_SIZE / 8);
      });
    }
    if (s.truth) {
      assert.equal(pic.truth!.length, s.truth.frames.length);
      pic.truth!.forEach((t, i) => {
        for (const r of check.results) {
          const at = t.found[r.strategy]!;
          if (at >= 0) assert.equal(r.unwind.frames[at]!.ip, s.truth!.frames[i]!.ip);
          else assert.ok(!r.unwind.frames.some((f) => f.ip === s.truth!.frames[i]!.ip));
        }
      });
    }
  }
});
