// The trace explorer in a real browser (Debian's chromium driven by playwright-core): the overview
// and a trace of each kind, a strategy and a frame clicked, and what lights up checked against
// facts that do not come from the page's code — the words a frame-pointer frame sits in (its
// saved bp right under its return address), the word the emulator overwrote, where pt_regs sit
// on a stack written by hand, the kernel's stop reasons. Screenshots go to a temporary directory, or to docs/screenshots/ under `npm run screenshots`.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { ApiServer } from '../../services/api/server.ts';
import { startApi } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { formatHex64 } from '../../services/core/u64.ts';
import { PT_REGS_OFFSET } from '../../services/core/stack/layout.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { KernelStore } from '../../services/pipeline/kernels.ts';
import { traceStore } from '../../services/pipeline/queue.ts';
import { FindingsStore } from '../../services/pipeline/findings.ts';
import { storeFixtures, type Fixtures } from '../support/explorer-fixtures.ts';
import { ROOT, TOKEN, TOKEN_HOST, cleanup, testConfig, uniquePrefix } from './helpers.ts';
import { P_USER } from '../support/orc-kernel.ts';

const CHROMIUM = process.env.STACKSANITY_CHROMIUM ?? '/usr/bin/chromium';
// The suite takes every screenshot each run; only `npm run screenshots` writes them into docs/
// (a plain test run leaves the work tree clean).
const SHOTS = process.env.STACKSANITY_SCREENSHOTS ? resolve(ROOT, process.env.STACKSANITY_SCREENSHOTS) : mkdtempSync(join(tmpdir(), 'stacksanity-shots-'));
const ADMIN = 'admin-token-explorer-0123456789';

async function loadPlaywright(): Promise<typeof import('playwright-core') | string> {
  if (!existsSync(CHROMIUM)) return `no browser at ${CHROMIUM}: apt could not install chromium (\`apt-get install chromium\`; .ci/run does it), so the browser tests are skipped`;
  try {
    return await import('playwright-core');
  } catch (e) {
    return `playwright-core is not installed (npm ci installs it): ${(e as Error).message}`;
  }
}

const pw = await loadPlaywright();
const skip = typeof pw === 'string' ? pw : false;

describe('trace explorer in chromium', { skip }, () => {
  const prefix = uniquePrefix('explorer');
  const cfg = testConfig(prefix, { STACKSANITY_RATE_LIMIT: '1000' });
  let api: ApiServer;
  let browser: Browser;
  let fx: Fixtures;
  let base: string;

  before(async () => {
    const tokens = new TokenSet();
    tokens.add(TOKEN_HOST, TOKEN);
    const admin = new TokenSet();
    admin.add('admin', ADMIN);
    api = await startApi(cfg, tokens, { adminTokens: admin });
    base = api.url;
    const keys = new Keys(prefix);
    fx = await storeFixtures(api.app, traceStore(cfg, api.redis, keys), new KernelStore(api.redis, keys), 't');
    browser = await (pw as typeof import('playwright-core')).chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await api?.close();
    await cleanup(prefix);
    if (!process.env.STACKSANITY_SCREENSHOTS) rmSync(SHOTS, { recursive: true, force: true });
  });

  async function open(path: string, width = 1280): Promise<Page> {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const r = await page.goto(base + path);
    assert.equal(r?.status(), 200, path);
    (page as Page & { errors: string[] }).errors = errors;
    return page;
  }

  async function shot(page: Page, name: string, fullPage = false): Promise<void> {
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
  }

  /** Addresses of the words highlighted right now. */
  async function highlighted(page: Page): Promise<string[]> {
    return page.$$eval('.w.hl', (ws) => ws.map((w) => (w as unknown as { dataset: Record<string, string> }).dataset.addr!).sort());
  }

  /** Clicks (pins) a frame, then moves the pointer away so that only the pinned frame stays lit. */
  async function pinFrame(page: Page, li: ReturnType<Page['locator']>): Promise<string[]> {
    await li.click();
    await page.mouse.move(1, 1);
    return ((await li.getAttribute('data-words')) ?? '').split(' ');
  }

  async function select(page: Page, strategy: string): Promise<void> {
    await page.click(`fieldset.switch input[value="${strategy}"]`);
    assert.equal(await page.getAttribute('#main', 'data-strategy'), strategy);
    assert.ok(await page.isVisible(`.panel.for-${strategy}`), `${strategy}'s panel is shown`);
    for (const other of await page.$$eval('fieldset.switch input', (is) => is.map((i) => (i as unknown as { value: string }).value))) {
      if (other !== strategy) assert.equal(await page.isVisible(`.panel.for-${other}`), false, `${other}'s panel is hidden`);
    }
  }

  test('NMI in a page fault in an IRQ: three stacks, the walk crosses them, a frame lights up its two words', async () => {
    const page = await open(`/traces/${fx.nmiPfIrq.id}`);
    // The stacks the sample captured, each drawn.
    for (const st of fx.nmiPfIrq.sample.stacks) assert.ok(await page.isVisible(`#stack-${st.type}`), `${st.type} stack drawn`);
    assert.deepEqual(fx.nmiPfIrq.sample.stacks.map((s) => s.type).sort(), ['irq', 'nmi', 'task']);
    await select(page, 'encoded_fp');
    // The hardware frame at the NMI stack's top is outlined: its 5 words are the top 5 of the stack.
    const nmi = fx.nmiPfIrq.sample.stacks.find((s) => s.type === 'nmi')!;
    const hwTop = formatHex64(nmi.end - 8n);
    assert.ok(await page.isVisible(`#stack-nmi .blk.k-hw_frame`));
    assert.match((await page.textContent(`#w-${hwTop}`))!, /hw\.ss/);
    // The walk crosses from the NMI stack and from the IRQ stack (marks on the words where it leaves).
    const crossText = await page.$$eval('.w em.cross.path-encoded_fp', (es) => es.filter((e) => (e as unknown as { offsetParent: unknown }).offsetParent !== null).map((e) => e.textContent));
    assert.ok(crossText.some((t) => /IRQ stack/.test(t!)), `crosses to the IRQ stack: ${crossText.join(' ')}`);
    assert.ok(crossText.some((t) => /TASK stack/.test(t!)), `crosses to the task stack: ${crossText.join(' ')}`);
    // A call frame of a frame-pointer walk is two words: the saved bp, and the return address above it.
    const li = page.locator('.panel.for-encoded_fp li.frame[data-kind=call]').first();
    const words = await pinFrame(page, li);
    assert.equal(words.length, 2);
    assert.equal(BigInt(`0x${words[1]}`) - BigInt(`0x${words[0]}`), 8n);
    assert.deepEqual(await highlighted(page), [...words].sort());
    // The word's own value is that frame's return address (its symbol is the frame's).
    const frameText = (await li.textContent())!.split(' ')[0]!;
    assert.ok((await page.textContent(`#w-${words[1]}`))!.includes(frameText.split('/')[0]!), 'the return address word names the frame');
    // The true chain is there, and with this clean emulated kernel encoded_fp misses nothing.
    assert.equal(await page.locator('.panel.for-encoded_fp ol.truth li.missing').count(), 0);
    await shot(page, 'trace-nmi-in-pf-in-irq');
    // Back: hovering a word lights its frame in the list.
    await page.mouse.move(0, 0);
    await page.hover(`#w-${words[1]}`);
    assert.ok(await li.evaluate((e) => e.classList.contains('hl')));
    assert.deepEqual((page as Page & { errors: string[] }).errors, []);
    await page.close();
  });

  test('corrupt saved bp: the frame-pointer walks stop on reading the overwritten word, with the kernel\'s reason', async () => {
    const page = await open(`/traces/${fx.corruptBp.id}`);
    const at = formatHex64(fx.corruptBp.fault!.at);
    await select(page, 'fp');
    const stop = page.locator('.panel.for-fp .stop');
    assert.ok(await stop.isVisible());
    const reason = await stop.getAttribute('data-reason');
    // The bp the walk followed is garbage: bad_frame_pointer (off every stack) or frame_not_ascending / out of bounds.
    assert.ok(['bad_frame_pointer', 'frame_not_ascending', 'frame_out_of_bounds', 'non_text_return_address'].includes(reason!), `fp stopped: ${reason}`);
    // The stop mark sits on the overwritten word: the last word the walk read.
    assert.match((await stop.textContent())!, new RegExp(at));
    const mark = page.locator(`#w-${at} em.stopnote.path-fp`);
    assert.ok(await mark.isVisible(), 'the stop is marked on the overwritten word');
    assert.match((await mark.textContent())!, new RegExp(reason!));
    assert.match((await page.textContent(`#w-${at} .v`))!, new RegExp(formatHex64(fx.corruptBp.fault!.value)));
    await page.evaluate(`document.getElementById('w-${at}').scrollIntoView({ block: 'center' })`);
    await shot(page, 'trace-corrupt-bp');
    await page.close();
  });

  test('kernel_entry sample: the kernel_entry strategy finds the IRQ\'s pt_regs; the fp baseline loses the interrupted frame', async () => {
    const page = await open(`/traces/${fx.kernelEntry.id}`);
    await select(page, 'kernel_entry');
    const regsFrame = page.locator('.panel.for-kernel_entry li.frame[data-kind=regs]').first();
    assert.ok(await regsFrame.count(), 'a frame through the IRQ entry');
    const words = await pinFrame(page, regsFrame);
    // pt_regs are 21 words, contiguous.
    assert.equal(words.length, 21);
    for (let i = 1; i < 21; i++) assert.equal(BigInt(`0x${words[i]}`) - BigInt(`0x${words[i - 1]}`), 8n);
    assert.deepEqual(await highlighted(page), [...words].sort());
    assert.match((await page.textContent(`#w-${words[PT_REGS_OFFSET.ip / 8]}`))!, /pt_regs\.ip/);
    assert.equal(await page.locator('.panel.for-kernel_entry ol.truth li.missing').count(), 0);
    await shot(page, 'trace-kernel-entry');
    // The fp baseline reads past the entry as if it were a call: it loses the interrupted function.
    await select(page, 'fp');
    assert.ok(await page.locator('.panel.for-fp ol.truth li.missing').count() > 0, 'fp misses the interrupted frame');
    await page.close();
  });

  test('ORC sample: the walk reads the return addresses and the page fault\'s pt_regs, and ends at user pt_regs', async () => {
    const page = await open(`/traces/${fx.orc.id}?strategy=orc`);
    assert.equal(await page.getAttribute('#main', 'data-strategy'), 'orc');
    assert.match((await page.textContent('.panel.for-orc .end'))!, /user/);
    const regs = page.locator('.panel.for-orc li.frame[data-kind=regs]');
    assert.equal(await regs.count(), 1, 'one entry crossed: the page fault');
    const words = await pinFrame(page, regs);
    assert.equal(words.length, 21);
    // The stack was written by hand (orc-kernel.ts): the kernel pt_regs sit 16-aligned under mid_fn's frame.
    const pKernel = ((P_USER - 40n) & ~0xfn) - 168n;
    assert.equal(words[0], formatHex64(pKernel));
    assert.deepEqual(await highlighted(page), [...words].sort());
    // The user pt_regs at the task stack's top are outlined.
    assert.match((await page.textContent(`#w-${formatHex64(P_USER + BigInt(PT_REGS_OFFSET.cs))}`))!, /pt_regs\.cs/);
    await shot(page, 'trace-orc');
    await page.close();
  });

  test('perf callchain: no stack memory, so the chain and its verdict without a picture', async () => {
    const page = await open(`/traces/${fx.callchain.id}`);
    assert.equal(await page.locator('.col').count(), 0, 'no stack picture');
    assert.match((await page.textContent('.nopic .note'))!, /no stack memory/);
    const items = await page.$$eval('ol.chain li', (ls) => ls.map((l) => l.textContent));
    assert.equal(items.length, fx.callchain.sample.callchain!.length);
    assert.match(items[0]!, /exc_page_fault\+0x4/);
    assert.match((await page.textContent('.chainverdict'))!, /5 kernel frames, 1 user frames/);
    // Nothing re-derived differs from what was stored: no strategy ran on it, then or now.
    assert.equal(await page.locator('.note', { hasText: 'Re-derived' }).count(), 0);
    await shot(page, 'trace-perf-callchain');
    await page.close();
  });

  test('overview: charts, findings with mark-known, traces filtered by strategy; fp shown apart', async () => {
    const page = await open('/');
    assert.ok(await page.isVisible('#ratio + .chart svg'), 'a failure-ratio chart');
    assert.match((await page.textContent('body'))!, /Baseline, shown apart/);
    // The charts' data: four full-state samples were checked (the callchain is not one), and of
    // encoded_fp's unwinds only the corrupt-bp sample's went bad.
    const series = await (await fetch(`${base}/v1/overview/series?hours=3`)).json() as { hours: { strategies: Record<string, { unwinds: number; bad: number }> }[] };
    const sum = (st: string, k: 'unwinds' | 'bad'): number => series.hours.reduce((n, h) => n + (h.strategies[st]?.[k] ?? 0), 0);
    assert.equal(sum('fp', 'unwinds'), 4);
    assert.equal(sum('encoded_fp', 'bad'), 1);
    assert.equal(sum('orc', 'unwinds'), 1);
    await shot(page, 'overview');
    // Filters: encoded_fp failed on the corrupt-bp sample only (the others pass with it or do not run it).
    await page.selectOption('select[name=strategy]', 'encoded_fp');
    await Promise.all([page.waitForNavigation(), page.click('form.filters button')]);
    assert.match(page.url(), /strategy=encoded_fp/);
    const links = await page.$$eval('table.traces a', (as) => as.map((a) => a.getAttribute('href')));
    assert.ok(links.includes(`/traces/${fx.corruptBp.id}`), 'the corrupt-bp trace is listed');
    assert.ok(!links.includes(`/traces/${fx.orc.id}`), 'the orc trace is not');
    // Mark a finding known with the admin token.
    const first = page.locator('form.markknown[data-state=known]').first();
    if (await first.count()) {
      const id = await first.getAttribute('data-id');
      await page.fill('#admin-token', ADMIN);
      await first.locator('input[name=note]').fill('seen in the browser test');
      await first.locator('button').click();
      await page.waitForFunction("/saved/.test(document.querySelector('form.markknown output')?.textContent ?? '')");
      const f = await new FindingsStore(api.redis, new Keys(prefix)).get(id!);
      assert.equal(f?.state, 'known');
      assert.equal(f?.note, 'seen in the browser test');
    } else {
      assert.fail('the fixtures made no finding to mark known');
    }
    await page.close();
  });

  test('blind spots: the sweep table, one row per instruction run with every strategy\'s outcome', async () => {
    // The API computes the sweep once, in a worker thread: wait for it through the JSON route.
    let doc: { tables: { layout: string; totals: Record<string, Record<string, number>> }[] } | undefined;
    for (let i = 0; i < 240 && !doc; i++) {
      const r = await fetch(`${base}/v1/sweeps`);
      if (r.status === 200) doc = await r.json() as typeof doc;
      else await new Promise((res) => setTimeout(res, 500));
    }
    assert.ok(doc, 'the sweep was computed');
    const page = await open('/sweeps');
    assert.equal(await page.locator('h2[id^=layout-]').count(), doc.tables.length);
    // The totals as the JSON has them, per layout and strategy.
    const t0 = doc.tables[0]!;
    const cells = await page.locator('table.totals').first().locator('tbody tr').first().locator('td').allTextContents();
    assert.deepEqual(cells, ['fp', ...['exact', 'window', 'stopped', 'not_decoded', 'wrong'].map((o) => String(t0.totals.fp![o]))]);
    await shot(page, 'sweeps');
    await page.close();
  });

  test('on a phone: the trace page stacks its panels and still shows the picture', async () => {
    const page = await open(`/traces/${fx.nmiPfIrq.id}`, 390);
    const w = await page.evaluate<number>('document.documentElement.scrollWidth');
    assert.ok(w <= 400, `no horizontal scrolling of the page (${w}px)`);
    await shot(page, 'trace-phone');
    await page.close();
  });
});
