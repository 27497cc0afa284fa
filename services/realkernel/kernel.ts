// One kernel build as the real host sees it: the vmlinux out of the package's bzImage (cached),
// its build id and ORC tables, the kallsyms the guest dumped (cached per build id), and the
// kernel profile built from them for the checking engine.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KernelProfile, type ProfileProvenance } from '../core/symbols/profile.ts';
import type { OrcTable } from '../core/unwind/orc-table.ts';
import { extractVmlinux, readVmlinux, type ElfSection } from './vmlinux.ts';
import { hasFramePointers, type KernelFiles } from './guest.ts';

export interface KernelBuild {
  files: KernelFiles;
  buildId: string;
  sections: ElfSection[];
  /** The vmlinux's ORC tables; undefined for a kernel built without CONFIG_UNWINDER_ORC (own kernels only). */
  orc: OrcTable | undefined;
  /** undefined: the evidence was inconclusive (own kernels only), so the frame-pointer strategies run. */
  framePointers: boolean | undefined;
  /** The ELF the facts were read from (the package's, extracted and cached, or the user's). */
  vmlinuxPath: string;
  /** What was inferred about the build and from what, one line each (printed by `host qemu`). */
  notes: string[];
  /** Where framePointers came from, as `check --vmlinux` reports it. */
  provenance?: ProfileProvenance;
  /** Timings of the one-time steps, ms. */
  timings: Record<string, number>;
}

export function loadKernelBuild(files: KernelFiles): KernelBuild {
  const timings: Record<string, number> = {};
  let t = performance.now();
  const vmlinuxPath = join(files.cache, files.package, 'vmlinux');
  let elf: Uint8Array;
  if (existsSync(vmlinuxPath)) elf = readFileSync(vmlinuxPath);
  else {
    elf = extractVmlinux(readFileSync(files.image));
    writeFileSync(vmlinuxPath, elf);
  }
  timings.vmlinux = performance.now() - t;
  t = performance.now();
  const facts = readVmlinux(elf, files.release);
  timings.orc = performance.now() - t;
  if (!facts.buildId) throw new Error(`${vmlinuxPath}: no GNU build id note`);
  if (!facts.orc) throw new Error(`${vmlinuxPath}: no .orc_unwind/.orc_unwind_ip sections (a kernel built without CONFIG_UNWINDER_ORC?)`);
  const config = existsSync(files.config) ? readFileSync(files.config, 'utf8') : '';
  const framePointers = hasFramePointers(config);
  return {
    files, buildId: facts.buildId, sections: facts.sections, orc: facts.orc, framePointers, vmlinuxPath, timings,
    notes: [`frame pointers: ${framePointers ? 'yes' : 'no'}, from the package's ${files.config}; ORC: ${facts.orc.length} entries`],
  };
}

export function kallsymsCachePath(b: KernelBuild): string {
  return join(b.files.cache, `${b.buildId}.kallsyms`);
}

export function cachedKallsyms(b: KernelBuild): string | undefined {
  const p = kallsymsCachePath(b);
  return existsSync(p) ? readFileSync(p, 'utf8') : undefined;
}

export function profileOf(b: KernelBuild, kallsyms: string): KernelProfile {
  return KernelProfile.fromKallsyms(kallsyms, {
    buildId: b.buildId, file: kallsymsCachePath(b),
    ...(b.orc ? { orc: b.orc } : {}),
    ...(b.framePointers !== undefined ? { framePointers: b.framePointers } : {}),
    ...(b.provenance ? { provenance: b.provenance } : {}),
  });
}

/** Any symbol's address by name, data and per-CPU symbols included (the profile keeps only text). */
export function symbolAddresses(kallsyms: string, names: readonly string[]): Map<string, bigint> {
  const want = new Set(names);
  const out = new Map<string, bigint>();
  for (const line of kallsyms.split('\n')) {
    const sp2 = line.indexOf(' ', 17);
    if (sp2 < 0) continue;
    const name = line.slice(sp2 + 1).split(/[\t ]/)[0]!;
    if (want.has(name) && !out.has(name)) out.set(name, BigInt('0x' + line.slice(0, 16)));
  }
  return out;
}
