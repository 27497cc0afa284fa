// Kernel-style rendering (arch/x86/kernel/dumpstack.c show_trace_log_lvl): one <NAME> segment per
// stack in walk order, reliable frames plain, other text words on the stack with "? ", and the
// entry line naming the interrupted function.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSample } from '../../../services/core/check/checker.ts';
import { renderKernelTrace } from '../../../services/core/render/kernel-text.ts';
import { unwindToJson } from '../../../services/core/render/json.ts';
import { ENCODED, K, NMI_SAMPLE_AT, nmiInIrq } from '../unwind/fixtures.ts';
import { KERNEL_CS } from '../../../services/core/stack/layout.ts';

test('an NMI inside an IRQ inside a syscall renders as <NMI>, <IRQ>, <TASK> with both entry lines', () => {
  const b = nmiInIrq(ENCODED).sample({ at: NMI_SAMPLE_AT });
  const r = checkSample(b.sample, ENCODED.profile, ['encoded_fp']).results[0]!;
  assert.equal(r.verdict, 'exact');
  const text = renderKernelTrace(b.sample, ENCODED.profile, r.unwind);
  const lines = text.trimEnd().split('\n');
  assert.match(lines[0]!, /^RIP: 0010:perf_event_nmi_handler\+0x2c\/0x60$/);
  assert.ok(lines.includes('Call Trace:'));
  const markers = lines.filter((l) => /^ <\/?[A-Z#]+>$/.test(l));
  assert.deepEqual(markers, [' <NMI>', ' </NMI>', ' <IRQ>', ' </IRQ>', ' <TASK>', ' </TASK>']);
  // The NMI hit handle_irq_event+0x44 on the IRQ stack; the IRQ hit vfs_read+0x93 on the task stack.
  assert.ok(lines.includes(' NMI, RIP=handle_irq_event+0x44/0x80'), text);
  assert.ok(lines.includes(' interrupt, RIP=vfs_read+0x93/0x1a0'), text);
  // Reliable lines, in order, are exactly the unwound frames after the start frame.
  const reliable = lines.filter((l) => l.startsWith(' ') && !l.startsWith(' ?') && !/^ <\/?[A-Z#]+>$/.test(l));
  const fns = reliable.map((l) => l.replace(/^ (?:[A-Za-z ]+, RIP=)?/, '').replace(/\+.*$/, ''));
  const expected = b.expected.slice(1).map((f) => f.fn);
  assert.deepEqual(fns, expected);
  // Every "? " line names kernel text.
  for (const l of lines.filter((x) => x.startsWith(' ? '))) assert.match(l, /^ \? [a-z_0-9]+\+0x[0-9a-f]+\/0x[0-9a-f]+$/);
});

test('JSON keeps 64-bit addresses as 16-digit hex strings and carries the decoded pt_regs', () => {
  const b = nmiInIrq(ENCODED).sample({ at: NMI_SAMPLE_AT });
  const r = checkSample(b.sample, ENCODED.profile, ['encoded_fp']).results[0]!;
  const j = unwindToJson(r.unwind, ENCODED.profile) as { frames: { ip: string; kind: string; regs?: Record<string, string>; regs_at?: string; entry?: string }[] };
  const regsFrames = j.frames.filter((f) => f.kind === 'regs');
  assert.deepEqual(regsFrames.map((f) => f.entry), ['nmi', 'irq']);
  for (const f of j.frames) assert.match(f.ip, /^[0-9a-f]{16}$/);
  // The decoded pt_regs hold what the image builder wrote there: the interrupted ips (the NMI hit
  // handle_irq_event+0x44, the IRQ vfs_read+0x93) and the kernel cs the CPU pushed.
  const hex = (v: bigint): string => v.toString(16).padStart(16, '0');
  const interrupted = [K.at('handle_irq_event', 0x44), K.at('vfs_read', 0x93)];
  assert.deepEqual(regsFrames.map((f) => f.ip), interrupted.map(hex));
  assert.deepEqual(regsFrames.map((f) => f.regs!.ip), interrupted.map(hex));
  for (const f of regsFrames) assert.equal(f.regs!.cs, hex(KERNEL_CS));
  // and sit where the builder put pt_regs.
  assert.deepEqual(regsFrames.map((f) => f.regs_at), b.expected.filter((e) => e.kind === 'regs').map((e) => hex(e.regsAt!)));
});
