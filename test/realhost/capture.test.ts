// The capture agent on recorded inputs (CI may not permit perf), uploading to a tiny HTTP server
// on a loopback port that plays the service: 503 first, then 202 with a job id.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture, CaptureError, buildIdFromNotes, preflight } from '../../services/realhost/capture.ts';
import { parseTextDump } from '../../services/core/dump/text.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const corpus = path.resolve(root, '../shared/corpus');
const dd = path.join(corpus, 'perf-script/flamegraph-perf-dd-stacks-01.txt');
const vector = path.join(corpus, 'perf-data/perfparser-vector_static_gcc.perf.data');
const log314 = path.join(corpus, 'kernel-logs/syzkaller-report-314.txt');
const skip = existsSync(corpus) ? false : `${corpus} not found: ../shared/corpus is absent`;

interface Req { method: string; url: string; headers: IncomingMessage['headers']; body: string }
let server: Server;
let base = '';
const requests: Req[] = [];
let fail503 = 0;
const dir = mkdtempSync(path.join(tmpdir(), 'capture-test-'));
const kallsyms = path.join(dir, 'kallsyms');
writeFileSync(kallsyms, 'ffffffff81000000 T _stext\nffffffff81000100 T vfs_read\nffffffff81f00000 T _etext\n');

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      if (fail503 > 0) {
        fail503--;
        res.writeHead(503, { 'retry-after': '0', 'content-type': 'application/json' }).end('{"error":"unavailable"}');
        return;
      }
      if (req.url!.startsWith('/v1/kernels/')) res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
      else res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ job: `job-${requests.length}`, accepted: 1 }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('capture agent', { skip }, () => {
  it('uploads the symbols once per build id, then batches with a bearer token, retrying 503s', async () => {
    requests.length = 0;
    fail503 = 2;
    const state = path.join(dir, 'state1');
    const logs: string[] = [];
    const opts = { url: base, token: 'tok', perfScript: dd, kallsyms, buildId: 'abc123', host: 'h1', batchSize: 4, stateDir: state, backoffMs: 1, log: (s: string) => logs.push(s) };
    const r = await capture(opts);
    // dd has 11 samples (grep -c cpu-clock:): batches of 4 → 3.
    assert.equal(r.samples, 11);
    assert.equal(r.batches, 3);
    assert.equal(r.symbolsUploaded, true);
    const sym = requests.filter((q) => q.url === '/v1/kernels/abc123/symbols');
    assert.equal(sym.length, 3, 'two 503s, then the 201');
    assert.match(sym[2]!.body, /T vfs_read/);
    const batches = requests.filter((q) => q.url === '/v1/samples');
    assert.equal(batches.length, 3);
    for (const b of batches) {
      assert.equal(b.method, 'POST');
      assert.equal(b.headers.authorization, 'Bearer tok');
      assert.equal(b.headers['content-type'], 'text/plain');
      assert.ok(b.headers['idempotency-key']);
      const parsed = parseTextDump(b.body);
      assert.deepEqual(parsed.rejected, []);
      assert.ok(parsed.samples.every((s) => s.host === 'h1' && s.kernel === 'abc123'));
    }
    assert.deepEqual(r.jobs.length, 3);
    assert.ok(logs.some((l) => /HTTP 503, retrying/.test(l)));
    // Second run, same build id: no symbols upload.
    requests.length = 0;
    const again = await capture(opts);
    assert.equal(again.symbolsUploaded, false);
    assert.equal(requests.filter((q) => q.url.startsWith('/v1/kernels/')).length, 0);
  });

  it('gives up after its retries with a clear error', async () => {
    fail503 = 100;
    await assert.rejects(capture({ url: base, token: 't', perfScript: dd, buildId: 'zz', kallsyms, stateDir: path.join(dir, 's2'), retries: 2, backoffMs: 1, log: () => {} }), /symbols upload: giving up after 3 attempts \(HTTP 503\)/);
    fail503 = 0;
  });

  it('retries network errors too (a port nobody listens on)', async () => {
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const logs: string[] = [];
    await assert.rejects(capture({ url: `http://127.0.0.1:${port}`, token: 't', perfScript: dd, retries: 1, backoffMs: 1, log: (s) => logs.push(s) }), /giving up after 2 attempts \(network error/);
    assert.ok(logs.some((l) => /network error/.test(l)));
  });

  it('refuses kallsyms with zeroed addresses, naming the sysctl', async () => {
    const zero = path.join(dir, 'zero');
    writeFileSync(zero, '0000000000000000 T _stext\n0000000000000000 T vfs_read\n');
    await assert.rejects(capture({ url: base, token: 't', perfScript: dd, buildId: 'b0', kallsyms: zero, stateDir: path.join(dir, 's3'), log: () => {} }), /kernel\.kptr_restrict/);
  });

  it('dry run keeps every sample when the dump spans several batches', async () => {
    // A comm of hex digits (gcc's cc1) reads as a callchain line unless a blank line ends the
    // sample before it: batches must be separated like samples.
    const script = path.join(dir, 'cc1.txt');
    writeFileSync(script, 'cc1 10/10 [000] 1.000001: 1 cpu-clock:\n\tffffffff81000100 vfs_read+0x0 ([kernel.kallsyms])\n\ncc1 10/10 [001] 1.000002: 1 cpu-clock:\n\tffffffff81000100 vfs_read+0x0 ([kernel.kallsyms])\n');
    const out = path.join(dir, 'batches.dump');
    const r = await capture({ dryRun: true, out, perfScript: script, batchSize: 1, buildId: 'b', log: () => {} });
    assert.equal(r.batches, 2);
    const back = parseTextDump(readFileSync(out, 'utf8'));
    assert.deepEqual(back.rejected, []);
    assert.deepEqual(back.samples.map((x) => x.cpu), [0, 1]);
  });

  it('dry run writes the dumps of a perf.data and of a kernel log to a file', async () => {
    const out = path.join(dir, 'out.dump');
    const r = await capture({ dryRun: true, out, perfData: vector, host: 'h2', notesPath: path.join(dir, 'no-notes'), log: () => {} });
    assert.equal(r.samples, 45); // perfparser's dump has 45 samples
    // A perf.data names the kernel it was recorded on (its [kernel.kallsyms] build-id entry).
    assert.equal(r.buildId, '2366ff9353522874bfb9e58d3452bb73aaf47841');
    assert.equal(parseTextDump(readFileSync(out, 'utf8')).samples.length, 45);
    const r2 = await capture({ dryRun: true, out, kernelLog: log314, buildId: 'k', log: () => {} });
    assert.equal(r2.samples, 2); // two Call Trace: lines
    const back = parseTextDump(readFileSync(out, 'utf8')).samples;
    // The report's "? dev_ioctl" line comes after the five reliable frames; the log prints no
    // addresses, and both facts survive the text dump as flags.
    assert.deepEqual(back[1]!.callchain!.map((e) => e.sym), ['dump_stack+0x8f/0xc4', 'panic+0xda/0x22f', 'df_debug+0x30/0x30', 'do_double_fault+0x9b/0xaf', 'double_fault+0x22/0x30', 'dev_ioctl+0x2d7/0x5e3']);
    assert.deepEqual(back[1]!.callchain!.map((e) => e.flags), [...Array(5).fill(['no_address']), ['unreliable', 'no_address']]);
  });
});

describe('capture preflight', () => {
  it('says how to install perf when it is missing', () => {
    assert.throws(() => preflight({ perf: '/nonexistent/perf' }), (e: unknown) => e instanceof CaptureError && /perf not found.*linux-perf/.test(e.message));
  });
  it('names the sysctl when perf_event_paranoid forbids system-wide sampling', { skip: process.getuid?.() === 0 ? 'running as root: paranoid does not apply' : false }, () => {
    const p = path.join(dir, 'paranoid');
    writeFileSync(p, '2\n');
    assert.throws(() => preflight({ perf: process.execPath, paranoidPath: p }), /perf_event_paranoid is 2.*sysctl -w kernel\.perf_event_paranoid=0/);
  });
  it('reads the GNU build id from ELF notes', () => {
    // namesz 4 ("GNU\0"), descsz 20, type 3 (NT_GNU_BUILD_ID), after one unrelated note.
    const other = Buffer.concat([Buffer.from([6, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0]), Buffer.from('Linux\0\0\0'), Buffer.from([1, 2, 3, 4])]);
    const id = Buffer.from('00112233445566778899aabbccddeeff01234567', 'hex');
    const gnu = Buffer.concat([Buffer.from([4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0]), Buffer.from('GNU\0'), id]);
    assert.equal(buildIdFromNotes(Buffer.concat([other, gnu])), '00112233445566778899aabbccddeeff01234567');
  });
});
