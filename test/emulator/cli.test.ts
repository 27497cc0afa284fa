// The emulate and sweep commands, and the upload client against a tiny local HTTP server that
// plays the service (503 first, to exercise the retry with backoff).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { runEmulate, postWithRetry, upload } from '../../services/cli/emulate.ts';
import { EmulatedFleet } from '../../services/emulator/index.ts';
import { runSweep } from '../../services/cli/sweep.ts';
import { parseTextDump } from '../../services/core/dump/text.ts';
import { KernelProfile, parseProfileOptions } from '../../services/core/symbols/profile.ts';

function io() {
  const o = { out: '', err: '' };
  return { o, io: { out: (s: string) => { o.out += s; }, err: (s: string) => { o.err += s; } } };
}

function body(req: IncomingMessage): Promise<string> {
  return new Promise((res) => {
    let b = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (b += c));
    req.on('end', () => res(b));
  });
}

test('emulate --out writes a dump that parses, with each kernel\'s kallsyms and profile beside it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'emu-'));
  const { o, io: cio } = io();
  const code = await runEmulate(['--seed', '9', '--samples', '250', '--hosts', '4', '--layout', 'all', '--faults', 'corrupt_bp,stack_overflow', '--out', join(dir, 'd.dump')], cio);
  assert.equal(code, 0, o.err);
  const parsed = parseTextDump(readFileSync(join(dir, 'd.dump'), 'utf8'));
  assert.equal(parsed.rejected.length, 0);
  assert.equal(parsed.samples.length, 250);
  const files = readdirSync(join(dir, 'kernels'));
  assert.equal(files.filter((f) => f.endsWith('.kallsyms')).length, 4);
  for (const f of files.filter((x) => x.endsWith('.profile.json'))) {
    const p = parseProfileOptions(JSON.parse(readFileSync(join(dir, 'kernels', f), 'utf8')));
    KernelProfile.fromKallsyms(readFileSync(join(dir, 'kernels', f.replace('.profile.json', '.kallsyms')), 'utf8'), p);
  }
  const bad = await runEmulate(['--layout', 'nope'], io().io);
  assert.equal(bad, 2);
});

test('emulate --upload posts symbols, puts the profile, posts text dumps with the bearer token, retrying 503s', async () => {
  const seen: { method: string; url: string; auth: string; type: string; body: string }[] = [];
  let fails = 2;
  const server = createServer(async (req, res) => {
    const b = await body(req);
    if (req.url === '/v1/samples' && fails > 0) {
      fails--;
      res.writeHead(503, { 'retry-after': '0' });
      res.end('redis down');
      return;
    }
    if (!req.url!.startsWith('/v1/')) {
      res.writeHead(404);
      res.end('no such route');
      return;
    }
    seen.push({ method: req.method!, url: req.url!, auth: req.headers.authorization ?? '', type: req.headers['content-type'] ?? '', body: b });
    res.writeHead(202, { 'content-type': 'application/json' });
    res.end('{"accepted":true}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const { o, io: cio } = io();
    const code = await runEmulate(['--seed', '2', '--samples', '120', '--layout', 'section', '--upload', url, '--token', 'T0K', '--batch', '50', '--rate', '0'], cio);
    assert.equal(code, 0, o.err);
    assert.match(o.out, /uploaded 1 kernel\(s\) and 120 samples/);
    assert.ok(seen.every((s) => s.method === (s.url.endsWith('/profile') ? 'PUT' : 'POST') && s.auth === 'Bearer T0K'));
    const sym = seen.filter((s) => /^\/v1\/kernels\/[0-9a-f]{40}\/symbols$/.test(s.url));
    const prof = seen.filter((s) => /^\/v1\/kernels\/[0-9a-f]{40}\/profile$/.test(s.url));
    assert.equal(sym.length, 1);
    assert.equal(sym[0]!.type, 'text/plain');
    assert.match(sym[0]!.body, / T __irqentry_text_start\n/);
    assert.equal(prof.length, 1);
    assert.deepEqual(JSON.parse(prof[0]!.body), { layouts: ['section'] }, 'the profile options alone: the build id is in the path');
    const dumps = seen.filter((s) => s.url === '/v1/samples');
    assert.equal(dumps.length, 3, 'three batches, each delivered once after the 503s');
    let n = 0;
    for (const d of dumps) {
      assert.equal(d.type, 'text/plain');
      const p = parseTextDump(d.body);
      assert.equal(p.rejected.length, 0);
      n += p.samples.length;
    }
    assert.equal(n, 120);
    // A 4xx is not retried: the message says what the service answered.
    await assert.rejects(
      postWithRetry(`${url}/nowhere`, 'x', 'text/plain', { url, token: 't', rate: 0, batch: 1, attempts: 3, backoffMs: 1 }),
      (e: Error) => /failed: HTTP 404 no such route/.test(e.message) && !/attempts/.test(e.message),
    );
  } finally {
    server.close();
  }
});

test('postWithRetry gives up after its attempts on network errors, with the last error', async () => {
  const sleeps: number[] = [];
  await assert.rejects(
    postWithRetry('http://127.0.0.1:9/x', 'x', 'text/plain', { url: '', token: 't', rate: 0, batch: 1, attempts: 4, backoffMs: 10, sleep: async (ms) => { sleeps.push(ms); } }),
    /failed after 4 attempts: network error/,
  );
  assert.deepEqual(sleeps, [10, 20, 40], 'exponential backoff between attempts');
});

test('upload paces batches to --rate', async () => {
  const server = createServer(async (req, res) => {
    await body(req);
    res.writeHead(202);
    res.end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const fleet = new EmulatedFleet({ seed: 1, layout: 'section', hosts: 1 });
    const waits: number[] = [];
    const batches = [fleet.batch(100), fleet.batch(100), fleet.batch(100)];
    const r = await upload(fleet.kernels(), batches, { url, token: 't', rate: 50, batch: 100, sleep: async (ms) => { waits.push(ms); } });
    assert.equal(r.samples, 300);
    assert.equal(r.requests, 5);
    // 100 samples at 50/s are due 2 s after the start: each batch waits most of that.
    assert.equal(waits.length, 3);
    for (const w of waits) assert.ok(w > 1000 && w <= 6000, `waited ${w} ms`);
  } finally {
    server.close();
  }
});

test('sweep prints a per-strategy table and writes it as JSON', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sweep-'));
  const { o, io: cio } = io();
  assert.equal(runSweep(['--layout', 'section', '--scenario', 'irq_in_syscall', '--json', join(dir, 't.json')], cio), 0, o.err);
  assert.match(o.out, /entry layout section/);
  assert.match(o.out, /section +exact +\d+ +window +\d+ +stopped +\d+ +not_decoded +0 +wrong +0/);
  const j = JSON.parse(readFileSync(join(dir, 't.json'), 'utf8'));
  assert.equal(j.tables.length, 1);
  assert.ok(j.tables[0].rows.length > 0);
  assert.equal(runSweep(['--layout', 'x'], io().io), 2);
});
