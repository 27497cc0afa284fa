// The live host's kernel profile without a vmlinux (issue 16): its symbols from /proc/kallsyms,
// its ORC tables read out of its own memory (between __start_orc_unwind_ip … __stop_orc_unwind_ip
// and __start_orc_unwind … __stop_orc_unwind) with the entry layout of the running release, and the
// text bytes just before the return addresses its traces printed (for the call-instruction check).
// Memory is read by the BPF loader's `read` mode (bpf_probe_read_kernel in 64 KiB chunks).
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelSymbol } from '../core/symbols/table.ts';
import { decideFramePointers, framePointersFromOrc } from '../core/symbols/frame-pointer-evidence.ts';
import { encodeOrcUpload, guessOrcLayout, orcLayoutForRelease, OrcTable, ORC_LAYOUT_CHOICES, type OrcLayout, type OrcSections } from '../core/unwind/orc-table.ts';
import { formatHex64 } from '../core/u64.ts';
import { formatTextSnippets, TEXT_SNIPPET_BYTES, type TextSnippets } from '../core/check/kernel-trace.ts';

export class LiveKernelError extends Error {
  override name = 'LiveKernelError';
}

/** Where the built loader and BPF object are (scripts/bpf-build.sh). */
export interface BpfTools {
  loader: string;
  object: string;
}

export interface MemoryRead {
  addr: bigint;
  len: number;
}

/** Reads kernel memory through the loader; undefined for a range the kernel would not read. */
export function readKernelMemory(tools: BpfTools, reqs: readonly MemoryRead[]): (Uint8Array | undefined)[] {
  if (reqs.length === 0) return [];
  const input = reqs.map((r) => `${r.addr.toString(16)} ${r.len}\n`).join('');
  const total = reqs.reduce((n, r) => n + 4 + r.len, 0);
  const p = spawnSync(tools.loader, [tools.object, 'read'], { input, maxBuffer: total + (1 << 20) });
  if (p.error) throw new LiveKernelError(`cannot run ${tools.loader}: ${p.error.message}`);
  if (p.status !== 0) throw new LiveKernelError(`reading kernel memory failed (exit ${p.status}): ${p.stderr.toString().trim().split('\n').slice(-3).join(' / ')}`);
  const out: (Uint8Array | undefined)[] = [];
  const b = p.stdout;
  let at = 0;
  for (const r of reqs) {
    if (at + 4 + r.len > b.length) throw new LiveKernelError(`the reader returned ${b.length} bytes, short of the ${total} asked for`);
    const status = b.readInt32LE(at);
    out.push(status === 0 ? new Uint8Array(b.subarray(at + 4, at + 4 + r.len)) : undefined);
    at += 4 + r.len;
  }
  return out;
}

const ORC_MARKERS = ['__start_orc_unwind_ip', '__stop_orc_unwind_ip', '__start_orc_unwind', '__stop_orc_unwind'] as const;

/** The layout of a release, or a clear refusal (a wrong layout misreads every row). */
export function liveOrcLayout(release: string, override?: OrcLayout): OrcLayout {
  if (override) return override;
  const l = orcLayoutForRelease(release);
  if (!l) throw new LiveKernelError(`kernel release '${release}' has no known ORC entry layout (ORC arrived in v4.14); pass --orc-layout ${ORC_LAYOUT_CHOICES}`);
  return l;
}

export interface LiveOrc {
  sections: OrcSections;
  table: OrcTable;
  notes: string[];
}

/**
 * The ORC tables from live memory. Undefined (with a note) when the markers are absent: a kernel
 * built without CONFIG_UNWINDER_ORC, on which the orc strategy does not apply.
 */
export function readLiveOrc(tools: BpfTools, symbols: readonly KernelSymbol[], layout: OrcLayout): LiveOrc | undefined {
  const at = new Map<string, bigint>();
  for (const s of symbols) if (s.module === undefined && (ORC_MARKERS as readonly string[]).includes(s.name)) at.set(s.name, s.address);
  const missing = ORC_MARKERS.filter((m) => !at.has(m));
  if (missing.length > 0) return undefined;
  const ipStart = at.get('__start_orc_unwind_ip')!;
  const ipLen = Number(at.get('__stop_orc_unwind_ip')! - ipStart);
  const unStart = at.get('__start_orc_unwind')!;
  const unLen = Number(at.get('__stop_orc_unwind')! - unStart);
  if (!(ipLen > 0 && unLen > 0 && ipLen < 64 << 20 && unLen < 96 << 20)) {
    throw new LiveKernelError(`the ORC markers in kallsyms give sizes ${ipLen} and ${unLen} bytes: not a table`);
  }
  const [ip, un] = readKernelMemory(tools, [{ addr: ipStart, len: ipLen }, { addr: unStart, len: unLen }]);
  if (!ip || !un) throw new LiveKernelError(`bpf_probe_read_kernel refused the ORC tables at ${formatHex64(ipStart)} / ${formatHex64(unStart)}`);
  const sections: OrcSections = { layout, ipSectionAddr: ipStart, ipSection: ip, unwindSection: un };
  let table: OrcTable;
  try {
    table = OrcTable.fromSections(sections);
  } catch (e) {
    throw new LiveKernelError(`the ORC tables read from memory are unusable: ${(e as Error).message}`);
  }
  const notes = [`ORC: ${table.length} entries read from live memory (${ipLen + unLen} bytes), layout ${layout}`];
  const guess = guessOrcLayout(un);
  if (guess && guess !== layout) notes.push(`warning: the entries look like layout ${guess}, not ${layout}: every row may be misread`);
  return { sections, table, notes };
}

/** Whether the build keeps frame pointers, as far as its ORC table tells (undefined: cannot tell). */
export function framePointersOf(table: OrcTable): boolean | undefined {
  return decideFramePointers([framePointersFromOrc(table)]).framePointers;
}

/** The TEXT_SNIPPET_BYTES bytes before each address (the call instruction a return address follows). */
export function readTextBefore(tools: BpfTools, addrs: Iterable<bigint>): TextSnippets {
  const list = [...new Set(addrs)];
  const got = readKernelMemory(tools, list.map((a) => ({ addr: a - BigInt(TEXT_SNIPPET_BYTES), len: TEXT_SNIPPET_BYTES })));
  const out: TextSnippets = new Map();
  list.forEach((a, i) => {
    const b = got[i];
    if (b) out.set(a, b);
  });
  return out;
}

export interface HostKernelFiles {
  buildId: string;
  kallsyms: string;
  orc?: Uint8Array;
  framePointers?: boolean;
  release: string;
  layout?: OrcLayout;
  text: TextSnippets;
}

/**
 * Writes the profile in the layout `check --kernels DIR` reads: <id>.kallsyms, <id>.orc (the
 * upload form of the tables), <id>.text (bytes before return addresses), <id>.profile.json.
 */
export function writeKernelFiles(dir: string, k: HostKernelFiles): string[] {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, k.buildId.replace(/[^0-9A-Za-z_.-]/g, '_'));
  const files = [`${base}.kallsyms`, `${base}.profile.json`, `${base}.text`];
  writeFileSync(files[0]!, k.kallsyms);
  writeFileSync(files[1]!, `${JSON.stringify({ buildId: k.buildId, ...(k.framePointers !== undefined ? { framePointers: k.framePointers } : {}), release: k.release, ...(k.layout ? { orcLayout: k.layout } : {}) }, null, 2)}\n`);
  writeFileSync(files[2]!, formatTextSnippets(k.text));
  if (k.orc) {
    files.push(`${base}.orc`);
    writeFileSync(`${base}.orc`, k.orc);
  }
  return files;
}

export { encodeOrcUpload };
