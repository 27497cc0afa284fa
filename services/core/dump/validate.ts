// Checks that hold for every sample whatever format it came in. Codecs call validateSample after
// decoding; a failure rejects that sample only.
import { DumpError, type Location } from './errors.ts';
import type { Sample } from './sample.ts';
import { STACK_TYPES } from '../stack/layout.ts';
import { isCanonical57 } from '../u64.ts';

/** Largest stack we accept: 32 KiB (KASAN task/IRQ stacks) with room for odd configurations. */
export const MAX_STACK_SIZE = 64 * 1024;
export const MAX_SAMPLE_BYTES = 1024 * 1024;

export function validateSample(s: Sample, where: Location = {}): void {
  const fail = (reason: ConstructorParameters<typeof DumpError>[0], field: string, msg: string): never => {
    throw new DumpError(reason, msg, { ...where, field });
  };
  const seen = new Set<string>();
  let total = 0;
  const sorted = [...s.stacks].sort((a, b) => (a.begin < b.begin ? -1 : a.begin > b.begin ? 1 : 0));
  for (const st of s.stacks) {
    if (!(STACK_TYPES as readonly string[]).includes(st.type)) fail('bad_field', 'stack.type', `unknown stack type '${st.type}'`);
    if (seen.has(st.type)) fail('overlapping_stacks', 'stack.type', `stack type '${st.type}' appears twice (an unwind visits each stack type once)`);
    seen.add(st.type);
    if (st.end <= st.begin) fail('window_out_of_bounds', 'stack.end', `stack ${st.type} ends at ${st.end.toString(16)}, not above its begin ${st.begin.toString(16)}`);
    if (st.end - st.begin > BigInt(MAX_STACK_SIZE)) fail('oversized', 'stack.end', `stack ${st.type} is ${st.end - st.begin} bytes; the largest accepted is ${MAX_STACK_SIZE}`);
    let prevEnd = -1n;
    const wins = st.windows.filter((w) => w.bytes.length > 0).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const w of wins) {
      const wEnd = w.start + BigInt(w.bytes.length);
      if (w.start < st.begin || wEnd > st.end) {
        fail('window_out_of_bounds', 'window.start', `window ${w.start.toString(16)}-${wEnd.toString(16)} lies outside its ${st.type} stack ${st.begin.toString(16)}-${st.end.toString(16)}`);
      }
      if (w.start < prevEnd) fail('overlapping_stacks', 'window.start', `window at ${w.start.toString(16)} overlaps the previous window of the ${st.type} stack`);
      prevEnd = wEnd;
      total += w.bytes.length;
    }
  }
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!, b = sorted[i]!;
    if (b.begin < a.end) fail('overlapping_stacks', 'stack.begin', `stacks ${a.type} and ${b.type} overlap`);
  }
  if (total > MAX_SAMPLE_BYTES) fail('oversized', 'window', `sample carries ${total} bytes of stack; the limit is ${MAX_SAMPLE_BYTES}`);

  const r = s.regs;
  if (r) {
    if (r.ip !== undefined && !isCanonical57(r.ip)) fail('impossible_regs', 'regs.ip', `ip ${r.ip.toString(16)} is not a canonical address`);
    if (r.sp !== undefined) {
      if (!isCanonical57(r.sp)) fail('impossible_regs', 'regs.sp', `sp ${r.sp.toString(16)} is not a canonical address`);
      // sp may lie on no captured stack: a user-mode sample, or kernel code still on the user's rsp
      // (the first instructions of entry_SYSCALL_64). The unwinders report what they can do there.
    }
    if (r.cs !== undefined && r.cs > 0xffffn) fail('impossible_regs', 'regs.cs', `cs ${r.cs.toString(16)} is wider than a 16-bit selector`);
    if (r.ss !== undefined && r.ss > 0xffffn) fail('impossible_regs', 'regs.ss', `ss ${r.ss.toString(16)} is wider than a 16-bit selector`);
  }
}
