// The /experiment page and GET /v1/experiment serve the ExperimentResults file of `stacksanity
// experiment` (issue 18): absent, it says how to make it; present, the page draws every part of it
// — per design the kernels, per path the totals and the design strategy's blind spots with their
// random-sampling figures, the random summary, the instants side by side, the emulator beside the
// real sweep, the differences — with everything that came from the file escaped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiServer } from '../../services/api/server.ts';
import type { ExperimentResults } from '../../services/experiment/results.ts';
import { cleanup, startTestApi, testConfig, uniquePrefix } from './helpers.ts';

const prefix = uniquePrefix('experiment');
const dir = mkdtempSync(join(tmpdir(), 'ss-experiment-'));
const file = join(dir, 'results.json');
let api: ApiServer;

const zero = { exact: 0, window: 0, stopped: 0, not_decoded: 0, wrong: 0 };
const EVIL = '<script>alert("x")</script>';

const RESULTS: ExperimentResults = {
  version: 1,
  generatedAt: '2026-12-08T03:00:00.000Z',
  command: 'stacksanity experiment --reduced --out docs/experiment',
  reduced: true,
  source: 'linux-source-6.1 6.1.192-1',
  machine: '2 × test CPU, QEMU 7.2 TCG',
  designs: [
    {
      design: 'section',
      strategy: 'section',
      kernels: [{ variant: 'section-patched', unwinder: 'patched', buildId: 'ab'.repeat(20), image: '/cache/section-patched/bzImage' }],
      paths: [
        {
          path: 'timer from user', entry: 'asm_sysvec_apic_timer_interrupt', from: 'user', steps: 321, returned: true,
          entryCost: { in: 93, out: 17 },
          totals: { section: { ...zero, exact: 300, window: 9, wrong: 12 }, fp: { ...zero, exact: 280, wrong: 41 } },
          blindSpots: [
            {
              strategy: 'section', where: 'sync_regs+0x4..+0x2b', fn: 'sync_regs', steps: 12, outcome: 'wrong', verdict: 'truncated',
              reason: 'stopped_in_entry_code', lost: ['interrupted'], findingId: '0123456789abcdef',
              findingTitle: `section truncated (stopped_in_entry_code) stopped in sync_regs ${EVIL}`,
              firstRandomSample: null, expectedRandomSamples: 2675.4,
            },
            {
              strategy: 'section', where: 'asm_sysvec_apic_timer_interrupt+0x0..+0x8', fn: 'asm_sysvec_apic_timer_interrupt', steps: 9,
              outcome: 'window', verdict: 'tolerated', lost: ['entry_code'], firstRandomSample: 4, expectedRandomSamples: 35.7,
            },
            { strategy: 'fp', where: 'fp_only_row+0x1', fn: 'fp_only_row', steps: 41, outcome: 'wrong', verdict: 'wrong_frames', lost: ['interrupted'] },
          ],
        },
        {
          path: 'nmi from kernel', entry: 'asm_exc_nmi', from: 'kernel', skipped: 'the sampler cannot read <the NMI stack> yet', steps: 0,
          returned: false, totals: {}, blindSpots: [],
        },
      ],
      random: {
        samples: 500,
        verdicts: { section: { exact: 480, tolerated: 17, truncated: 3 }, fp: { exact: 430, wrong_frames: 70 } },
        findings: [{ id: 'fedcba9876543210', title: 'fp wrong_frames (wrong_frame) lost copy_user_generic', strategy: 'fp', count: 70, firstSample: 2 }],
      },
      instants: [
        {
          variant: 'section-stock', what: 'sysrq t from the 8250 interrupt while dd runs in clear_user',
          kernelTrace: ['asm_common_interrupt+0x22/0x40', '? clear_user+0x1a/0x40', '? read_zero+0x5c/0xc0'],
          kernelRipBlock: false,
          kernelWarnings: ['WARNING: kernel stack frame pointer at 00000000deadbeef in dd:77 has bad value 0000000000000000'],
          projectTrace: ['common_interrupt', 'asm_common_interrupt', 'clear_user', 'read_zero'],
          verdict: 'The project recovers clear_user, which the stock unwinder only guesses.',
        },
      ],
    },
    { design: 'encoded', strategy: 'encoded_fp', kernels: [], paths: [], instants: [{ variant: 'encoded', what: 'sysrq t', kernelTrace: [], kernelRipBlock: true, kernelWarnings: [], projectTrace: [], verdict: '', skipped: 'QEMU is not installed' }] },
  ],
  emulator: [
    {
      layout: 'section', scenario: 'user_timer', steps: 157,
      totals: { section: { ...zero, exact: 89, window: 68 }, fp: { ...zero, exact: 89, window: 68 } },
      blindSpots: [{ strategy: 'section', where: 'sysvec_apic_timer_interrupt+0x0..+0x1', fn: 'sysvec_apic_timer_interrupt', steps: 2, outcome: 'window', verdict: 'tolerated', lost: ['prologue'] }],
    },
    { layout: 'section', scenario: 'kthread_machine_check', steps: 133, totals: { section: { ...zero, exact: 67, window: 66 } }, blindSpots: [] },
  ],
  differences: [
    { design: 'section', path: 'timer from user', what: 'the real sweep steps into sync_regs; the emulator models it as one instruction', why: EVIL, resolution: 'model choice' },
  ],
};

before(async () => {
  api = await startTestApi(testConfig(prefix, { STACKSANITY_EXPERIMENT_RESULTS: file }));
});

after(async () => {
  await api?.close();
  await cleanup(prefix);
  rmSync(dir, { recursive: true, force: true });
});

test('without a results file the page says how to make one and the JSON is a 404', async () => {
  const p = await api.app.inject({ url: '/experiment' });
  assert.equal(p.statusCode, 200);
  assert.match(p.headers['content-type'] as string, /text\/html/);
  assert.match(p.body, /No experiment results yet/);
  assert.match(p.body, /<code>npm run experiment<\/code>/);
  const j = await api.app.inject({ url: '/v1/experiment' });
  assert.equal(j.statusCode, 404);
  const b = JSON.parse(j.body) as { error: string; message: string };
  assert.equal(b.error, 'not_found');
  assert.match(b.message, /npm run experiment/);
});

test('the page draws the results file, escaped; the JSON is the file', async () => {
  writeFileSync(file, JSON.stringify(RESULTS));
  const j = await api.app.inject({ url: '/v1/experiment' });
  assert.equal(j.statusCode, 200);
  assert.deepEqual(JSON.parse(j.body), RESULTS);

  const r = await api.app.inject({ url: '/experiment' });
  assert.equal(r.statusCode, 200);
  const html = r.body;
  // Navigation: the page is linked from the explorer's bar.
  assert.match(html, /<nav class="top"[^>]*>.*<a href="\/experiment">/);
  // Run facts, and the command that regenerates it.
  assert.ok(html.includes('linux-source-6.1 6.1.192-1'));
  assert.ok(html.includes('<code>stacksanity experiment --reduced --out docs/experiment</code>'));
  assert.match(html, /reduced run/);
  // Per design: the kernels.
  assert.ok(html.includes('id="design-section"') && html.includes('id="design-encoded"'));
  assert.ok(html.includes('section-patched') && html.includes(`build ${'ab'.repeat(6)}`));
  // Per path: the totals per strategy, one cell per outcome; the design's own row marked.
  assert.match(html, /<tr class="own"><td><span class="badge"[^>]*>section<\/span>[^<]*<small>\(the design's\)<\/small><\/td><td class="num">300<\/td><td class="num">9<\/td><td class="num">0<\/td><td class="num">0<\/td><td class="num out-wrong">12<\/td><\/tr>/);
  assert.ok(html.includes('321 steps') && html.includes('93 instructions in, 17 out'));
  // The design strategy's blind spots with first random sample vs expected; other strategies' rows are not listed.
  assert.match(html, /<code>sync_regs\+0x4\.\.\+0x2b<\/code><\/td><td class="num">12<\/td><td class="out-wrong">wrong<\/td>/);
  assert.match(html, /0123456789abcdef[\s\S]*?<span class="bad">not seen<\/span><\/td><td>≈ 2675<\/td>/);
  assert.match(html, /<code>asm_sysvec_apic_timer_interrupt\+0x0\.\.\+0x8<\/code>[\s\S]*?none \(documented window\)[\s\S]*?<td>#4<\/td><td>≈ 36<\/td>/);
  assert.ok(!html.includes('fp_only_row'), 'only the design strategy\'s blind spots');
  // A skipped path says why.
  assert.ok(html.includes('Not swept: the sampler cannot read &lt;the NMI stack&gt; yet'));
  // The random-sampling summary.
  assert.ok(html.includes('500 random stops'));
  assert.match(html, /<th>exact<\/th><th>tolerated<\/th><th>truncated<\/th><th>wrong_frames<\/th>/);
  assert.ok(html.includes('fp wrong_frames (wrong_frame) lost copy_user_generic'));
  // The instant: kernel trace and project trace side by side, guesses marked, the warning, no RIP block.
  assert.match(html, /<ol class="ktrace"><li>asm_common_interrupt\+0x22\/0x40<\/li><li class="guess">\? clear_user\+0x1a\/0x40<\/li>/);
  assert.match(html, /<ol class="ptrace"><li>common_interrupt<\/li><li>asm_common_interrupt<\/li><li>clear_user<\/li><li>read_zero<\/li><\/ol>/);
  assert.ok(html.includes('has bad value 0000000000000000'));
  assert.match(html, /no <code>RIP:<\/code> block/);
  assert.ok(html.includes('Not captured: QEMU is not installed'));
  // Entry cost per path and design.
  assert.match(html, /id="entry-cost"[\s\S]*<td>timer from user<\/td><td class="num">93 \/ 17<\/td>/);
  // The emulator beside the real sweep: the scenario, the real path it maps to, both sides' outcomes.
  assert.match(html, /<td>user_timer<\/td><td>timer from user<\/td><td class="num">157<br><small>real 321<\/small><\/td>/);
  assert.match(html, /<td>kthread_machine_check<\/td><td><small>none \(not sweepable on the real guest\)<\/small><\/td>/);
  assert.match(html, /sysvec_apic_timer_interrupt\+0x0\.\.\+0x1/);
  // The differences.
  assert.ok(html.includes('the emulator models it as one instruction'));
  // Everything from the file is escaped.
  assert.ok(!html.includes(EVIL), 'no raw markup from the file');
  assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
  assert.equal((html.match(/<script/g) ?? []).length, 0, 'the page runs no script');
});

test('a results file that is not one is an error on both, not a blank page', async () => {
  // A different size, so the cached parse of the previous file is not reused within one mtime tick.
  writeFileSync(file, JSON.stringify({ version: 2, designs: [], pad: 'x'.repeat(JSON.stringify(RESULTS).length) }));
  const p = await api.app.inject({ url: '/experiment' });
  assert.equal(p.statusCode, 500);
  assert.match(p.body, /cannot be read: not an ExperimentResults file of version 1 \(version 2\)/);
  const j = await api.app.inject({ url: '/v1/experiment' });
  assert.equal(j.statusCode, 500);
  assert.equal((JSON.parse(j.body) as { error: string }).error, 'internal');
});
