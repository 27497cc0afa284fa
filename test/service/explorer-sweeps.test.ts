// The blind-spot page and its JSON serve the document `stacksanity sweep --json` writes (computed by
// the API in a worker thread, once), and the page shows every layout's totals and, for each
// non-exact instruction run, every strategy's outcome.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiServer } from '../../services/api/server.ts';
import { runSweep } from '../../services/cli/sweep.ts';
import { pivotSweep, type SweepDoc } from '../../services/api/explorer-overview.ts';
import { cleanup, startTestApi, testConfig, uniquePrefix, waitFor } from './helpers.ts';

const prefix = uniquePrefix('sweeps');
let api: ApiServer;

before(async () => {
  api = await startTestApi(testConfig(prefix));
});

after(async () => {
  await api?.close();
  await cleanup(prefix);
});

test('/v1/sweeps is the CLI\'s sweep --json document, /sweeps draws it', async () => {
  const first = await api.app.inject({ url: '/v1/sweeps' });
  assert.equal(first.statusCode, 503, 'the first request starts the computation');
  assert.ok(first.headers['retry-after']);
  const page0 = await api.app.inject({ url: '/sweeps' });
  assert.match(page0.body, /being computed/);
  const doc = await waitFor('the sweep', async () => {
    const r = await api.app.inject({ url: '/v1/sweeps' });
    return r.statusCode === 200 ? (JSON.parse(r.body) as SweepDoc) : undefined;
  }, 120_000, 500);

  const dir = mkdtempSync(join(tmpdir(), 'ss-sweep-'));
  try {
    const file = join(dir, 'sweep.json');
    assert.equal(runSweep(['--layout', 'all', '--json', file], { out: () => undefined, err: () => undefined }), 0);
    assert.deepEqual(doc, JSON.parse(readFileSync(file, 'utf8')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const html = (await api.app.inject({ url: '/sweeps' })).body;
  for (const t of doc.tables) {
    assert.ok(html.includes(`Entry layout ${t.layout}`), t.layout);
    // Every instruction a strategy got wrong is in some run of the page, with that outcome for it.
    const runs = pivotSweep(t);
    for (const r of t.rows) {
      for (let i = r.from; i <= r.to; i++) {
        const run = runs.find((x) => x.scenario === r.scenario && x.fn === r.fn && x.from <= i && i <= x.to);
        assert.ok(run, `${t.layout} ${r.scenario} ${r.fn} insn ${i}`);
        assert.equal(run.cells[r.strategy]?.outcome, r.outcome);
      }
    }
    // Runs only cover instructions some strategy did not get exact.
    const steps = runs.reduce((n, x) => n + x.to - x.from + 1, 0);
    assert.ok(steps <= t.steps);
  }
});
