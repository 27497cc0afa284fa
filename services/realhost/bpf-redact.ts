// What leaves the host (issue 16, part 4). Raw kernel stack memory can hold secrets: keys, user
// data spilled from registers. By default only the words an unwinder can use survive:
//   - kernel text addresses (return addresses, pt_regs ips),
//   - addresses on the sample's own stacks (saved stack pointers, frame pointers, the IRQ link),
//   - the ip, cs, flags, sp, ss and bp of every pt_regs on the stacks: the user-mode pt_regs at the
//     top of the task stack, the hardware frame at the top of an IST stack, and every pt_regs the
//     ORC walk of the full sample decodes (their cs says user or kernel mode; their sp leads on);
// and the same rule for the sampled registers. Every other word becomes 0 and is counted. Pure.
import type { Sample } from '../core/dump/sample.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { IST_STACK_TYPES, PT_REGS_OFFSET, PT_REGS_SIZE, PT_REGS_FIELDS, type PtRegsField } from '../core/stack/layout.ts';
import { signedFromBig } from '../core/u64.ts';
import { unwind } from '../core/unwind/index.ts';

/** pt_regs fields kept whatever their value. */
export const KEPT_REGS: readonly PtRegsField[] = ['ip', 'cs', 'flags', 'sp', 'ss', 'bp'];
const IRET_FIELDS: readonly PtRegsField[] = ['ip', 'cs', 'flags', 'sp', 'ss'];

export interface RedactionStats {
  /** Stack words looked at / set to zero (non-zero words only count as zeroed). */
  words: number;
  zeroed: number;
  /** Sampled registers set to zero. */
  regsZeroed: number;
}

export function emptyRedactionStats(): RedactionStats {
  return { words: 0, zeroed: 0, regsZeroed: 0 };
}

/** Redacts one sample in place; adds to `stats`. Samples without stack memory keep only the kept registers. */
export function redactSample(s: Sample, profile: KernelProfile, stats: RedactionStats = emptyRedactionStats()): RedactionStats {
  const onStack = (v: bigint): boolean => s.stacks.some((st) => v >= st.begin && v < st.end);
  const isText = (v: bigint): boolean => (v >> 63n) === 1n && profile.isTextS(signedFromBig(v));
  const keep = (v: bigint): boolean => v === 0n || isText(v) || onStack(v);

  // Slots of pt_regs fields to keep, by address.
  const kept = new Set<bigint>();
  const regsAt = (base: bigint, fields: readonly PtRegsField[]): void => {
    for (const f of fields) kept.add(base + BigInt(PT_REGS_OFFSET[f]));
  };
  for (const st of s.stacks) {
    if (st.type === 'task') regsAt(st.end - BigInt(PT_REGS_SIZE), KEPT_REGS);
    if (IST_STACK_TYPES.has(st.type)) regsAt(st.end - BigInt(PT_REGS_SIZE), IRET_FIELDS);
  }
  if (profile.orc && s.stacks.length > 0 && s.regs?.ip !== undefined && s.regs.sp !== undefined) {
    const u = unwind(s, profile, 'orc');
    for (const f of u.frames) {
      if (f.kind !== 'regs' || f.regsAt === undefined) continue;
      regsAt(f.regsAt, f.partial ? IRET_FIELDS : KEPT_REGS);
    }
    if (u.userRegsAt !== undefined) regsAt(u.userRegsAt, KEPT_REGS);
  }

  for (const st of s.stacks) {
    for (const w of st.windows) {
      const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
      for (let o = 0; o + 8 <= w.bytes.length; o += 8) {
        stats.words++;
        const v = dv.getBigUint64(o, true);
        if (keep(v) || kept.has(w.start + BigInt(o))) continue;
        dv.setBigUint64(o, 0n, true);
        stats.zeroed++;
      }
      // A tail shorter than a word is no address: zero it.
      for (let o = w.bytes.length & ~7; o < w.bytes.length; o++) w.bytes[o] = 0;
    }
  }
  if (s.regs) {
    for (const f of PT_REGS_FIELDS) {
      const v = s.regs[f];
      if (v === undefined || KEPT_REGS.includes(f) || keep(v)) continue;
      s.regs[f] = 0n;
      stats.regsZeroed++;
    }
  }
  return stats;
}
