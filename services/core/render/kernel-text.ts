// Renders an unwind the way the kernel prints a trace (arch/x86/kernel/dumpstack.c
// show_trace_log_lvl): per stack a <NAME> ... </NAME> segment, each reliable return address as
// " func+0xoff/0xsize", every other kernel text address found on the stack as " ? func+...", and
// at each entry the decoded pt_regs as the line this project's entry-aware strategies make
// possible: " page fault, RIP=func+0x12/0x40".
import type { Sample } from '../dump/sample.ts';
import { STACK_TYPE_NAME, type StackType } from '../stack/layout.ts';
import { ENTRY_TITLE } from '../symbols/entry-types.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { formatHex64, signedOf } from '../u64.ts';
import { StackSpace } from '../unwind/space.ts';
import type { Frame, UnwindResult } from '../unwind/types.ts';

export interface RenderOptions {
  /** Print "? " entries for unused text addresses (default true). */
  unreliable?: boolean;
}

export function renderKernelTrace(sample: Sample, profile: KernelProfile, u: UnwindResult, opts: RenderOptions = {}): string {
  const sym = profile.symbols;
  const lines: string[] = [];
  const start = u.frames[0];
  if (start && start.kind === 'start') {
    const cs = sample.regs?.cs;
    lines.push(`RIP: ${cs !== undefined ? cs.toString(16).padStart(4, '0') + ':' : ''}${sym.format(start.ip)}`);
    const r = sample.regs;
    if (r?.sp !== undefined) lines.push(`RSP: ${formatHex64(r.sp)}${r.bp !== undefined ? ` RBP: ${formatHex64(r.bp)}` : ''}`);
  }
  lines.push('Call Trace:');
  const space = new StackSpace(sample);
  // Frames by the stack word they were read from; frames of each stack in walk order.
  const bySlot = new Map<bigint, Frame>();
  for (const f of u.frames) if (f.slot !== undefined) bySlot.set(f.slot, f);
  const scanFrom = new Map<StackType, bigint>();
  if (sample.regs?.sp !== undefined) {
    const st = sample.stacks.find((s) => sample.regs!.sp! >= s.begin && sample.regs!.sp! <= s.end);
    if (st) scanFrom.set(st.type, sample.regs.sp);
  }
  const scanUnreliable = opts.unreliable !== false;
  for (const type of u.stacks) {
    const st = sample.stacks.find((s) => s.type === type);
    if (!st) continue;
    lines.push(` <${STACK_TYPE_NAME[type]}>`);
    const ss = space.stacks.find((s) => s.type === type)!;
    const from = scanFrom.get(type) ?? lowestSlot(u.frames, type) ?? st.begin;
    for (let a = alignUp(from); a + 8n <= st.end; a += 8n) {
      const f = bySlot.get(a);
      if (f) {
        if (f.kind === 'regs') lines.push(` ${ENTRY_TITLE[f.entry ?? 'unknown']}, RIP=${sym.format(f.ip)}`);
        else lines.push(` ${sym.format(f.ip, true)}`);
        continue;
      }
      if (!scanUnreliable) continue;
      const lin = ss.base + Number(a - st.begin);
      if (!space.read(lin)) continue;
      const s = signedOf(space.hi, space.lo);
      if (!Number.isSafeInteger(s) || !profile.isTextS(s)) continue;
      lines.push(` ? ${sym.format(BigInt.asUintN(64, BigInt(s)), true)}`);
    }
    lines.push(` </${STACK_TYPE_NAME[type]}>`);
  }
  if (u.outcome === 'error' || u.outcome === 'depth_limit') {
    lines.push(`unwind stopped: ${u.reason ?? u.outcome}${u.message ? `: ${u.message}` : ''}`);
  }
  return lines.join('\n') + '\n';
}

function lowestSlot(frames: Frame[], type: StackType): bigint | undefined {
  let low: bigint | undefined;
  for (const f of frames) if (f.stack === type && f.slot !== undefined && (low === undefined || f.slot < low)) low = f.slot;
  return low;
}

function alignUp(a: bigint): bigint {
  return (a + 7n) & ~7n;
}
