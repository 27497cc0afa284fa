// Where scripts/build-fp-kernel.sh left its kernel: <cache>/<source version>/<design>/kernel.env
// names the bzImage and vmlinux of the last successful build. The tests, the bench and the docs'
// commands find the frame-pointer kernel through here instead of guessing paths.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const FP_KERNEL_CACHE = resolve(process.env.STACKSANITY_FPKERNEL_CACHE ?? '.cache/fpkernel');

export interface BuiltKernel {
  image: string;
  vmlinux: string;
  config: string;
  /** "linux-source-6.1 6.1.192-3" */
  source: string;
  design: string;
}

/** The newest build of a design (by source version directory), or undefined when none is complete. */
export function builtFpKernel(design = 'encoded', cache = FP_KERNEL_CACHE): BuiltKernel | undefined {
  if (!existsSync(cache)) return undefined;
  const versions = readdirSync(cache).filter((v) => existsSync(join(cache, v, design, 'kernel.env'))).sort(compareVersions);
  for (const v of versions.reverse()) {
    const kv = new Map<string, string>();
    for (const line of readFileSync(join(cache, v, design, 'kernel.env'), 'utf8').split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
    }
    const k = { image: kv.get('KERNEL_IMAGE') ?? '', vmlinux: kv.get('KERNEL_VMLINUX') ?? '', config: kv.get('KERNEL_CONFIG') ?? '', source: kv.get('KERNEL_SOURCE') ?? '', design };
    if (existsSync(k.image) && existsSync(k.vmlinux)) return k;
  }
  return undefined;
}

/** Debian versions compare by their numeric runs well enough here (6.1.192-3 < 6.1.200-1). */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[^0-9]+/).map(Number);
  const pb = b.split(/[^0-9]+/).map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? -1) - (pb[i] ?? -1);
    if (d !== 0) return d;
  }
  return 0;
}
