// `stacksanity host qemu`: the live real host. Boots Debian's kernel under QEMU (from the cache
// scripts/realkernel-setup.sh fills) or the user's own (--kernel, own-kernel.ts), samples it
// through the gdbstub, checks every sample with the strategies the build supports and the section
// cross-check, and writes the full-state samples as a text dump or uploads them.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { formatTextDump } from '../core/dump/text.ts';
import { encodeOrcUpload, orcLayoutForRelease } from '../core/unwind/orc-table.ts';
import type { KernelBuild } from '../realkernel/kernel.ts';
import { elfSections, extractVmlinux, isBzImage, sectionBytes } from '../realkernel/vmlinux.ts';
import { RealHostSession } from '../realkernel/session.ts';
import { crossReferenceOf, runSampling, samplesOf, summarize } from '../realkernel/run.ts';
import type { OwnKernelOptions } from '../realkernel/own-kernel.ts';
import type { Io } from './check.ts';
import { runHostSweep } from './host-sweep.ts';

export const USAGE = 'usage: stacksanity host qemu [--kernel BZIMAGE [--vmlinux FILE] [--append ARGS]] [--samples N | --duration T] [--singlestep] [--seed S] [--out FILE | --upload URL --token T]\n'
  + '  T is seconds (or 30s, 2m). Needs scripts/realkernel-setup.sh to have been run (QEMU, busybox; Debian\'s kernel, the default).\n'
  + '  --kernel boots your own x86-64 bzImage instead (e.g. the one scripts/build-fp-kernel.sh prints); --vmlinux is its ELF vmlinux\n'
  + '  (else the ELF inside the bzImage is read); --append adds kernel arguments. See docs/real-kernel.md, "Your own kernel".\n';

function duration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

export async function runHost(args: string[], io: Io): Promise<number> {
  if (args.some((a) => a === '--sweep' || a.startsWith('--sweep='))) return runHostSweep(args, io);
  let parsed;
  try {
    parsed = parseArgs({
      args, allowPositionals: true,
      options: {
        samples: { type: 'string' }, duration: { type: 'string' }, singlestep: { type: 'boolean', default: false },
        seed: { type: 'string' }, out: { type: 'string' }, upload: { type: 'string' }, token: { type: 'string' },
        kernel: { type: 'string' }, vmlinux: { type: 'string' }, append: { type: 'string' },
      },
    });
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (parsed.positionals[0] !== 'qemu' || parsed.positionals.length !== 1) {
    io.err(USAGE);
    return 2;
  }
  const samples = v.samples !== undefined ? Number(v.samples) : undefined;
  const durationMs = v.duration !== undefined ? duration(v.duration) : undefined;
  if ((samples !== undefined && (!Number.isInteger(samples) || samples <= 0)) || (v.duration !== undefined && durationMs === undefined)) {
    io.err(`stacksanity host: --samples must be a positive integer and --duration a time such as 30s\n${USAGE}`);
    return 2;
  }
  if (samples !== undefined && durationMs !== undefined) {
    io.err('stacksanity host: give --samples or --duration, not both\n');
    return 2;
  }
  if (v.upload !== undefined && v.token === undefined) {
    io.err('stacksanity host: --upload needs --token\n');
    return 2;
  }
  if (v.upload !== undefined && v.out !== undefined) {
    io.err('stacksanity host: give --out or --upload, not both\n');
    return 2;
  }
  if (v.kernel === undefined && (v.vmlinux !== undefined || v.append !== undefined)) {
    io.err(`stacksanity host: --vmlinux and --append go with --kernel (Debian's kernel needs neither)\n${USAGE}`);
    return 2;
  }
  const own = ownKernelOptions(v);
  const seed = v.seed !== undefined ? Number(v.seed) : Date.now() % 2 ** 31;
  let session: RealHostSession;
  try {
    session = await RealHostSession.open({ seed, log: (s) => io.err(`stacksanity host: ${s}\n`), ...(own ? { own } : {}) });
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n`);
    return 2;
  }
  try {
    const run = await runSampling(session, {
      singleStep: v.singlestep,
      ...(samples !== undefined ? { samples } : {}),
      ...(durationMs !== undefined ? { durationMs } : {}),
    });
    const sum = summarize(run);
    io.err(`stacksanity host: seed ${seed}, ${sum.samples} samples (${JSON.stringify(sum.where)}); per sample median ${sum.steps.total.median.toFixed(2)} ms\n`);
    for (const [strategy, counts] of Object.entries(sum.verdicts)) io.err(`stacksanity host:   ${strategy}: ${JSON.stringify(counts)}\n`);
    const ref = crossReferenceOf(session.profile);
    io.err(`stacksanity host: entry cross-check (section against ${ref ?? 'nothing: no ORC tables and no frame pointers'}): ${JSON.stringify(sum.crossings)}\n`);
    const dump = formatTextDump(samplesOf(run));
    if (v.upload !== undefined) {
      await upload(v.upload, v.token!, session.build, session.kallsyms, dump);
      io.err(`stacksanity host: uploaded to ${v.upload}\n`);
    } else if (v.out !== undefined) {
      writeFileSync(v.out, dump);
      io.err(`stacksanity host: wrote ${v.out}\n`);
    } else io.out(dump);
    const bad = run.filter((c) => c.crossings.some((x) => x.result === 'mismatch')).length;
    return bad > 0 ? 1 : 0;
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n`);
    return 2;
  } finally {
    session.close();
  }
}

/** Symbols, the profile and the ORC tables, then the samples: the API keys everything by build id. */
async function upload(base: string, token: string, build: KernelBuild, kallsyms: string, dump: string): Promise<void> {
  const url = base.replace(/\/+$/, '');
  const auth = { authorization: `Bearer ${token}` };
  const buildId = build.buildId;
  const send = async (method: string, path: string, body: string | Uint8Array, type: string): Promise<void> => {
    const r = await fetch(url + path, { method, headers: { ...auth, 'content-type': type }, body });
    if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
  };
  await send('POST', `/v1/kernels/${buildId}/symbols`, gzipSync(kallsyms), 'application/gzip');
  const profile = build.framePointers === undefined ? { buildId } : { buildId, framePointers: build.framePointers };
  await send('PUT', `/v1/kernels/${buildId}/profile`, JSON.stringify(profile), 'application/json');
  // The workers run orc only with the build's tables: the raw sections, gzip (~1 MB for 6.1).
  if (build.orc) await send('PUT', `/v1/kernels/${buildId}/orc`, gzipSync(orcUploadOf(build)), 'application/gzip');
  await send('POST', '/v1/samples', dump, 'text/plain');
}

/** The upload form of the build's ORC tables, from the vmlinux the build was read from. */
function orcUploadOf(build: KernelBuild): Uint8Array {
  const file = readFileSync(build.vmlinuxPath);
  const elf = isBzImage(file) ? extractVmlinux(file) : file;
  const sections = elfSections(elf);
  const ip = sections.find((s) => s.name === '.orc_unwind_ip');
  const un = sections.find((s) => s.name === '.orc_unwind');
  const layout = build.orc?.layout ?? orcLayoutForRelease(build.files.release);
  if (!ip || !un || !layout) throw new Error(`${build.vmlinuxPath} has no .orc_unwind_ip/.orc_unwind sections`);
  return encodeOrcUpload({ layout, ipSectionAddr: ip.addr, ipSection: sectionBytes(elf, ip), unwindSection: sectionBytes(elf, un) });
}

function ownKernelOptions(v: { kernel?: string | undefined; vmlinux?: string | undefined; append?: string | undefined }): OwnKernelOptions | undefined {
  if (v.kernel === undefined) return undefined;
  return { kernel: v.kernel, ...(v.vmlinux !== undefined ? { vmlinux: v.vmlinux } : {}), ...(v.append !== undefined ? { append: v.append } : {}) };
}
