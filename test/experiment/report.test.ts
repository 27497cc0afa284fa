// The report is rendered from the results alone: these hand-made results have known answers (costs,
// blind spots, random first hits) and the report must state exactly those.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { blindSteps, renderReport } from '../../services/experiment/report.ts';
import type { ExperimentResults, PathResult } from '../../services/experiment/results.ts';

const zero = { exact: 0, window: 0, stopped: 0, not_decoded: 0, wrong: 0 };

function path(over: Partial<PathResult>): PathResult {
  return { path: 'timer from kernel', entry: 'timer', from: 'kernel', steps: 100, returned: true, totals: {}, blindSpots: [], ...over };
}

const results: ExperimentResults = {
  version: 1, generatedAt: '2026-12-08T02:00:00.000Z', command: 'stacksanity experiment --reduced', reduced: true,
  source: 'linux-source-6.1 6.1.192-3', machine: '2 × test CPU, QEMU TCG',
  designs: [
    {
      design: 'encoded', strategy: 'encoded_fp', kernels: [{ variant: 'encoded', unwinder: 'stock', buildId: 'aabbccddeeff0011', image: '/x' }],
      paths: [path({ entryCost: { in: 56, out: 1 }, totals: { encoded_fp: { ...zero, exact: 98, window: 2 }, fp: { ...zero, exact: 40, wrong: 60 } } })],
      instants: [],
    },
    {
      design: 'section', strategy: 'section', kernels: [{ variant: 'section-patched', unwinder: 'patched', buildId: '', image: '/y' }],
      paths: [
        path({
          entryCost: { in: 54, out: 1 }, totals: { section: { ...zero, exact: 95, wrong: 5 } },
          blindSpots: [{ strategy: 'section', where: 'sync_regs+0x0..+0x10', fn: 'sync_regs', steps: 5, outcome: 'wrong', verdict: 'consistent', lost: ['interrupted'], firstRandomSample: null, expectedRandomSamples: 4000 }],
        }),
        path({ path: 'nmi from user', entry: 'nmi', from: 'user', skipped: 'the NMI | stack is not read', steps: 0, returned: false }),
      ],
      random: { samples: 40, verdicts: { section: { consistent: 39, truncated: 1 } }, findings: [{ id: '1', title: 'section truncated in foo', strategy: 'section', count: 1, firstSample: 7 }] },
      instants: [],
    },
    {
      design: 'kernel_entry', strategy: 'kernel_entry', kernels: [{ variant: 'kernel_entry-patched', unwinder: 'patched', buildId: '', image: '/z' }],
      paths: [path({ entryCost: { in: 58, out: 2 }, totals: { kernel_entry: { ...zero, exact: 97, stopped: 3 } }, blindSpots: [{ strategy: 'kernel_entry', where: 'asm_sysvec_apic_timer_interrupt+0x12', fn: 'asm_sysvec_apic_timer_interrupt', steps: 3, outcome: 'stopped', verdict: 'truncated', reason: 'frame_out_of_bounds', lost: [], findingId: '1', findingTitle: 'kernel_entry truncated', firstRandomSample: 7, expectedRandomSamples: 12 }] })],
      random: { samples: 40, verdicts: { kernel_entry: { consistent: 39, truncated: 1 } }, findings: [{ id: '1', title: 'kernel_entry truncated', strategy: 'kernel_entry', count: 1, firstSample: 7 }] },
      instants: [{ variant: 'kernel_entry-stock', what: 'sysrq t', kernelTrace: ['xen_error_entry+0x50/0x50', '? clear_user_rep_good'], kernelRipBlock: false, kernelWarnings: [], projectTrace: ['clear_user_rep_good', 'read_zero'], verdict: 'the stock unwinder skips the interrupted RIP.' }],
    },
  ],
  emulator: [], differences: [],
};

test('blind steps count stopped, not_decoded and wrong, never windows', () => {
  assert.equal(blindSteps(results.designs[0]!.paths[0]!, 'encoded_fp'), 0);
  assert.equal(blindSteps(results.designs[0]!.paths[0]!, 'fp'), 60);
  assert.equal(blindSteps(results.designs[2]!.paths[0]!, 'kernel_entry'), 3);
  assert.equal(blindSteps(results.designs[2]!.paths[0]!, 'section'), 0, 'a strategy that was not run counts nothing');
});

test('the report states the costs, relative to section, and the blind spots with their random hits', () => {
  const md = renderReport(results);
  assert.match(md, /\| encoded \| timer from kernel \| 56 \| 1 \| 57 \| \+2 \|/);
  assert.match(md, /\| section \| timer from kernel \| 54 \| 1 \| 55 \| 0 \|/);
  assert.match(md, /\| kernel_entry \| timer from kernel \| 58 \| 2 \| 60 \| \+5 \|/);
  // A wrong spot the checker is silent about: random stops cannot find it at all.
  assert.match(md, /\| section \| timer from kernel \| sync_regs\+0x0\.\.\+0x10 \| 5 \| wrong \| none \(silent\) \| never: the checker raises no finding here \| 4000 \|/);
  // Found by random stop 8 (index 7), expected after ~12.
  assert.match(md, /kernel_entry truncated \| sample 8 \| 12 \|/);
  assert.match(md, /Not swept: the NMI \| stack is not read/);
  assert.match(md, /blind \(stopped, not decoded or wrong\) at 5 of 100 instructions swept \(timer from kernel 5\); 5 of them lose or invent a frame/);
  assert.match(md, /\*\*encoded\*\* \(`encoded_fp`\): blind \(stopped, not decoded or wrong\) at 0 of 100/);
  assert.match(md, /\*\*Reduced run\*\*/);
  assert.match(md, /\| xen_error_entry\+0x50\/0x50 \| clear_user_rep_good \|/);
  assert.match(md, /RIP block for the interrupted context: \*\*no\*\*/);
});

test('a pipe inside a table cell is escaped, so the row keeps its columns', () => {
  const r = structuredClone(results);
  r.designs[1]!.paths[0]!.blindSpots[0]!.where = 'a|b';
  const md = renderReport(r);
  assert.match(md, /\| a\\\|b \| 5 \| wrong \|/);
});
