// JSON forms of unwinds and verdicts: addresses as 16-digit hex strings (JSON numbers are doubles).
import type { Regs } from '../dump/sample.ts';
import type { SampleCheck, StrategyCheck } from '../check/checker.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { formatHex64 } from '../u64.ts';
import type { Frame, UnwindResult } from '../unwind/types.ts';

export function frameToJson(f: Frame, profile: KernelProfile): Record<string, unknown> {
  const o: Record<string, unknown> = {
    ip: formatHex64(f.ip),
    symbol: profile.symbols.format(f.ip, f.kind === 'call'),
    kind: f.kind,
    stack: f.stack,
  };
  if (f.slot !== undefined) o.slot = formatHex64(f.slot);
  if (f.entry !== undefined) o.entry = f.entry;
  if (f.regsAt !== undefined) o.regs_at = formatHex64(f.regsAt);
  if (f.regs !== undefined) o.regs = regsToJson(f.regs);
  return o;
}

export function regsToJson(r: Regs): Record<string, string> {
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(r)) if (v !== undefined) o[k] = formatHex64(v);
  return o;
}

export function unwindToJson(u: UnwindResult, profile: KernelProfile): Record<string, unknown> {
  const o: Record<string, unknown> = {
    strategy: u.strategy,
    outcome: u.outcome,
    reliable: u.reliable,
    stacks: u.stacks,
    frames: u.frames.map((f) => frameToJson(f, profile)),
  };
  if (u.reason !== undefined) o.reason = u.reason;
  if (u.message !== undefined) o.message = u.message;
  if (u.reads !== undefined) o.reads = u.reads.map((r) => ({ addr: formatHex64(r.addr), role: r.role }));
  return o;
}

export function strategyCheckToJson(c: StrategyCheck, profile: KernelProfile): Record<string, unknown> {
  const o: Record<string, unknown> = {
    strategy: c.strategy,
    verdict: c.verdict,
    reference: c.reference,
    entry: c.entry,
    reliable: c.reliable,
    false_reliable: c.falseReliable,
  };
  if (c.reason !== undefined) o.reason = c.reason;
  if (c.missing.length) o.missing = c.missing;
  if (c.extra.length) o.extra = c.extra;
  o.unwind = unwindToJson(c.unwind, profile);
  return o;
}

export function sampleCheckToJson(c: SampleCheck, profile: KernelProfile): Record<string, unknown> {
  return {
    results: c.results.map((r) => strategyCheckToJson(r, profile)),
    disagreements: c.disagreements.map(([a, b]) => `${a},${b}`),
  };
}
