// Finding signatures: the id is FNV-1a 64 of the identity fields (published test vectors and a
// BigInt reimplementation as oracles), stable across builds and offsets, distinct across reasons.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fnv1a64, findingsOf, FindingsTally } from '../../../services/core/check/findings.ts';
import { EmulatedFleet } from '../../../services/emulator/index.ts';
import { KernelProfile, type EntryLayout } from '../../../services/core/symbols/profile.ts';
import { checkSample } from '../../../services/core/check/checker.ts';
import type { StrategyName } from '../../../services/core/unwind/types.ts';

function fnvBig(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}

test('fnv1a64 matches the published FNV-1a 64 vectors and a BigInt implementation', () => {
  // Vectors from the FNV reference test suite (ASCII: code units = bytes).
  assert.equal(fnv1a64(''), 'cbf29ce484222325');
  assert.equal(fnv1a64('a'), 'af63dc4c8601ec8c');
  assert.equal(fnv1a64('foobar'), '85944171f73967e8');
  let x = 7;
  for (let n = 0; n < 500; n++) {
    let s = '';
    for (let k = 0; k < n % 40; k++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      s += String.fromCharCode(x % 3 === 0 ? (x >>> 8) & 0xffff : 32 + ((x >>> 8) % 95));
    }
    assert.equal(fnv1a64(s), fnvBig(s), JSON.stringify(s));
  }
});

test('a fault family gives few findings with stable ids; offsets and build ids are not part of them', () => {
  // broken_irq_link overwrites the IRQ stack's link word: every kernel_entry walk that crosses it
  // stops on the IRQ stack (emulator's own description of the fault), so findings name the irq entry.
  const fleet = new EmulatedFleet({ seed: 5, layout: 'kernel_entry', hosts: 4, faults: ['broken_irq_link'], faultRate: 1 });
  const k = fleet.kernels()[0]!;
  const p = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: k.buildId });
  const other = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: 'another-build' });
  const tally = new FindingsTally();
  let faulted = 0;
  for (let i = 0; i < 400; i++) {
    const e = fleet.nextInfo();
    if (e.fault?.name !== 'broken_irq_link') continue;
    faulted++;
    const c = checkSample(e.sample, p, ['kernel_entry'] as StrategyName[]);
    const sigs = findingsOf(e.sample, c, p);
    assert.equal(sigs.length, 1, 'one failing strategy, one finding');
    // The same sample on a profile with another build id: the same identity.
    assert.equal(findingsOf(e.sample, checkSample(e.sample, other, ['kernel_entry']), other)[0]!.id, sigs[0]!.id);
    assert.match(sigs[0]!.id, /^[0-9a-f]{16}$/);
    assert.ok(['bad_stack_link', 'stack_recursion'].includes(sigs[0]!.reason), sigs[0]!.title);
    tally.add(i, e.sample, sigs);
  }
  const list = tally.list();
  assert.ok(faulted > 50);
  assert.equal(list.reduce((n, f) => n + f.count, 0), faulted);
  assert.ok(list.length < faulted / 5, `grouped: ${list.length} findings for ${faulted} samples`);
  for (const f of list) assert.ok(f.title.includes(f.fn) && f.title.includes(f.reason), f.title);
});
