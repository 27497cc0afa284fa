// The kernel's own trace against the project's unwind of the same instant, for built entry-design
// kernels (services/realkernel/instant-trace.ts; issue 18, part 2). One QEMU at a time.
// Usage: node --import tsx scripts/capture-instant.ts [--variant encoded ...|--variant all]
//          [--kernel BZIMAGE --vmlinux VMLINUX --variant NAME] [--json FILE]
// STACKSANITY_FPKERNEL_CACHE says where build-fp-kernel.sh left the kernels.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { captureInstant, captureInstantVariant, type InstantCapture } from '../services/realkernel/instant-trace.ts';

const VARIANTS = ['encoded', 'section-stock', 'section-patched', 'kernel_entry-stock', 'kernel_entry-patched'];
const { values } = parseArgs({
  options: {
    variant: { type: 'string', multiple: true },
    kernel: { type: 'string' },
    vmlinux: { type: 'string' },
    json: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});
const log = values.quiet ? undefined : (s: string): void => void process.stderr.write(`  ${s}\n`);
const asked = values.variant ?? ['all'];
const variants = asked.includes('all') ? VARIANTS : asked;
const results: InstantCapture[] = [];
for (const v of variants) {
  process.stderr.write(`capture-instant: ${v}\n`);
  const r = values.kernel && values.vmlinux
    ? await captureInstant({ kernel: values.kernel, vmlinux: values.vmlinux, variant: v, ...(log ? { log } : {}) })
    : await captureInstantVariant(v, log ? { log } : {});
  results.push(r);
  process.stdout.write(`${r.verdict}\n`);
  if (!r.skipped) {
    process.stdout.write(`  kernel:  ${r.kernelTrace.join(' | ')}\n  project: ${r.projectTrace.join(' | ')}\n`);
    if (r.kernelWarnings.length) process.stdout.write(`  warnings: ${r.kernelWarnings.join(' | ')}\n`);
  }
}
if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2) + '\n');
