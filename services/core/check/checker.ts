// Verdicts (DESIGN §3.4): each strategy's unwind judged against ground truth when the sample has
// it, else against the host's own callchain, else against the invariants alone; agreement across
// strategies; and false_reliable — a strategy that claimed a reliable trace and was wrong.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { EntryType } from '../symbols/entry-types.ts';
import { ENTRY_TYPES } from '../symbols/entry-types.ts';
import { formatHex64, signedFromBig } from '../u64.ts';
import { unwind } from '../unwind/index.ts';
import { crossCheckEntries } from '../unwind/orc.ts';
import { StackSpace } from '../unwind/space.ts';
import { STRATEGIES, type StrategyName, type UnwindOptions, type UnwindResult } from '../unwind/types.ts';
import { silentStop } from './silent-stops.ts';
import { alignN, type Alignment, type RefFrame } from './compare.ts';
import { ERROR_REASONS, GOOD_VERDICTS, type Reason, type Verdict } from './reasons.ts';

export type Reference = 'truth' | 'host' | 'none';

export interface StrategyCheck {
  strategy: StrategyName;
  unwind: UnwindResult;
  verdict: Verdict;
  reason?: Reason;
  /** The entry type nearest the failure ('none' when the trace crossed no entry). */
  entry: EntryType | 'none';
  reference: Reference;
  /** Functions of reference frames the unwind lost / frames it reported that the reference lacks. */
  missing: string[];
  extra: string[];
  reliable: boolean;
  falseReliable: boolean;
  /** The first reference frame lost (a hard loss when there is one), for the finding's signature. */
  lostAt?: { ipS: number; call: boolean };
  /** The first frame reported that the reference lacks. */
  extraAt?: { ipS: number; call: boolean };
}

export interface SampleCheck {
  results: StrategyCheck[];
  /** Pairs of strategies (the fp baseline excluded) whose traces differ. */
  disagreements: [StrategyName, StrategyName][];
}

export const DEFAULT_STRATEGIES: readonly StrategyName[] = STRATEGIES;

export function checkSample(
  sample: Sample,
  profile: KernelProfile,
  strategies: readonly StrategyName[] = DEFAULT_STRATEGIES,
  opts?: UnwindOptions,
): SampleCheck {
  const ref = referenceOf(sample);
  // One index of the sample's stacks serves every strategy (they only read it).
  const space = opts?.space ?? new StackSpace(sample);
  const shared: UnwindOptions = opts === undefined ? { space } : { ...opts, space };
  const results: StrategyCheck[] = [];
  for (let i = 0; i < strategies.length; i++) {
    const s = strategies[i]!;
    results.push(notApplicable(profile, s) ?? orcFindings(profile, judge(profile, unwind(sample, profile, s, shared), ref, sample), space));
  }
  return { results, disagreements: disagreements(results) };
}

export interface Ref {
  kind: Reference;
  frames: RefFrame[];
  entries: (EntryType | undefined)[];
}

export function referenceOf(sample: Sample): Ref {
  const truth = sample.truth?.frames;
  if (truth && truth.length > 0) {
    const frames: RefFrame[] = [];
    const entries: (EntryType | undefined)[] = [];
    for (let i = 0; i < truth.length; i++) {
      const f = truth[i]!;
      frames.push({ ipS: signedFromBig(f.ip), kind: f.kind, tolerated: f.tolerated !== undefined });
      entries.push(f.entry !== undefined && ENTRY_TYPE_SET.has(f.entry) ? (f.entry as EntryType) : f.kind === 'regs' ? 'unknown' : undefined);
    }
    return { kind: 'truth', frames, entries };
  }
  // `unreliable` entries (a kernel log's "? " lines) are stack words the host's unwinder skipped.
  const chain = sample.callchain?.filter((c) => (c.addr >> 63n) === 1n && c.flags.every((f) => f !== 'all_ones' && f !== 'zero' && f !== 'non_canonical' && f !== 'unreliable'));
  if (chain && chain.length > 0) {
    return { kind: 'host', frames: chain.map((c) => ({ ipS: signedFromBig(c.addr), kind: 'call', tolerated: false })), entries: chain.map(() => undefined) };
  }
  return { kind: 'none', frames: [], entries: [] };
}

/** isEntryType as a set: referenceOf asks it for every truth frame of every sample. */
const ENTRY_TYPE_SET: ReadonlySet<string> = new Set(ENTRY_TYPES);

/** The trace's ips for alignN, reused: judge runs once per strategy per sample. */
let traceBuf = new Float64Array(256);

/** One strategy's unwind judged against the reference (ground truth, host callchain, or none). */
export function judge(profile: KernelProfile, u: UnwindResult, ref: Ref, sample: Sample): StrategyCheck {
  const out: StrategyCheck = {
    strategy: u.strategy, unwind: u, verdict: 'consistent', entry: 'none', reference: ref.kind,
    missing: [], extra: [], reliable: u.reliable, falseReliable: false,
  };
  for (let i = u.frames.length - 1; i >= 0; i--) {
    const f = u.frames[i]!;
    if (f.kind === 'regs') {
      if (f.entry) out.entry = f.entry;
      break;
    }
  }
  const stopped = u.outcome === 'error' || u.outcome === 'depth_limit';

  if (stopped && u.reason === 'pt_regs_not_decoded' && sectionStepsAside(profile, u)) {
    out.verdict = 'not_applicable';
    out.reason = 'encoded_entry_window';
    return out;
  }
  if (stopped && u.reason !== undefined && ERROR_REASONS.has(u.reason)) {
    out.verdict = 'error';
    out.reason = u.reason;
    return out;
  }
  // Where the kernel's own unwinder would have stopped without a word (silent-stops.ts).
  const silent = stopped ? silentStop(profile, sample, u) : undefined;
  if (ref.kind === 'none') {
    if (silent !== undefined) {
      out.verdict = 'tolerated';
      out.reason = silent;
    } else if (stopped) {
      out.verdict = 'error';
      if (u.reason) out.reason = u.reason;
    }
    return out;
  }

  const frames = u.frames;
  const n = frames.length;
  if (traceBuf.length < n) traceBuf = new Float64Array(Math.max(n, traceBuf.length * 2));
  const trace = traceBuf;
  for (let i = 0; i < n; i++) trace[i] = frames[i]!.ipS;
  const a: Alignment = alignN(trace, n, ref.frames);
  const refFrames = ref.frames;
  const missing = a.missing;
  const extra = a.extra;
  const missingNames: string[] = [];
  let hardMissing = 0;
  let hardMissingRegs = false;
  let lostEntry: EntryType | undefined;
  for (let x = 0; x < missing.length; x++) {
    const k = missing[x]!;
    const rf = refFrames[k]!;
    missingNames.push(functionName(profile, rf.ipS, rf.kind === 'call'));
    if (!rf.tolerated && hardMissing === 0) out.lostAt = { ipS: rf.ipS, call: rf.kind === 'call' };
    else if (out.lostAt === undefined) out.lostAt = { ipS: rf.ipS, call: rf.kind === 'call' };
    if (!rf.tolerated) {
      hardMissing++;
      if (rf.kind === 'regs') hardMissingRegs = true;
    }
    // The entry label of a failure: the entry of the first lost interrupted frame, else the trace's.
    if (lostEntry === undefined) lostEntry = ref.entries[k];
  }
  const extraNames: string[] = [];
  for (let x = 0; x < extra.length; x++) {
    const f = frames[extra[x]!]!;
    extraNames.push(functionName(profile, f.ipS, f.kind === 'call'));
    if (x === 0) out.extraAt = { ipS: f.ipS, call: f.kind === 'call' };
  }
  out.missing = missingNames;
  out.extra = extraNames;
  if (lostEntry) out.entry = lostEntry;

  if (stopped && extra.length === 0 && hardMissing === 0 && (silent !== undefined || missing.length > 0)) {
    // Every frame a correct unwinder recovers is there, and the walk then stopped where the kernel
    // stops silently (rule 17), or lost its way in a window the truth documents as lossy (rules 17,
    // 18: the stop is that window's consequence, as in a C handler before its frame exists).
    out.verdict = 'tolerated';
    out.reason = silent ?? 'stopped_in_lossy_window';
  } else if (stopped && extra.length === 0 && a.prefix) {
    out.verdict = 'truncated';
    if (u.reason) out.reason = u.reason;
  } else if (missing.length === 0 && extra.length === 0) {
    out.verdict = 'exact';
  } else if (extra.length === 0 && hardMissing === 0) {
    out.verdict = stopped ? 'truncated' : 'tolerated';
    if (stopped && u.reason) out.reason = u.reason;
  } else if (extra.length === 0) {
    out.verdict = 'missing_frames';
    out.reason = stopped && u.reason ? u.reason : hardMissingRegs ? 'missing_interrupted_frame' : 'missing_caller';
  } else if (hardMissing === 0) {
    out.verdict = 'extra_frames';
    out.reason = stopped && u.reason ? u.reason : 'extra_frame';
  } else {
    out.verdict = 'wrong_frames';
    out.reason = stopped && u.reason ? u.reason : 'wrong_frame';
  }
  out.falseReliable = ref.kind === 'truth' && u.reliable && out.verdict !== 'exact';
  return out;
}

function disagreements(results: StrategyCheck[]): [StrategyName, StrategyName][] {
  const out: [StrategyName, StrategyName][] = [];
  const usable: StrategyCheck[] = [];
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    if (r.strategy !== 'fp' && r.verdict !== 'error' && r.verdict !== 'not_applicable') usable.push(r);
  }
  if (usable.length < 2) return out;
  for (let i = 0; i < usable.length; i++) {
    for (let j = i + 1; j < usable.length; j++) {
      const a = usable[i]!.unwind.frames;
      const b = usable[j]!.unwind.frames;
      let same = a.length === b.length;
      for (let k = 0; same && k < a.length; k++) if (a[k]!.ipS !== b[k]!.ipS) same = false;
      if (!same) out.push([usable[i]!.strategy, usable[j]!.strategy]);
    }
  }
  return out;
}

/** The function a frame names (a return address is looked up at addr-1, as %pB does). */
function functionName(profile: KernelProfile, ipS: number, returnAddress: boolean): string {
  if (!Number.isSafeInteger(ipS)) return 'non-canonical';
  const i = profile.symbols.indexOfSigned(returnAddress ? ipS - 1 : ipS);
  return i >= 0 ? profile.symbols.names[i]! : formatHex64(BigInt.asUintN(64, BigInt(ipS)));
}

/**
 * The section strategy on a build whose entry code also encodes rbp (modern Linux): in entry code
 * and in a C handler before its frame exists, rbp itself is the kernel's encoded pt_regs pointer,
 * read from the registers rather than from a frame. The section strategy finds entries only
 * through a handler's frame (its return into the stub), so at that instant the entry is
 * encoded_fp's to read. A bit-0 bp found in a saved frame word is different: a frame whose caller
 * is outside the section encoded it, i.e. a stub outside the entry section — still an error.
 */
function sectionStepsAside(profile: KernelProfile, u: UnwindResult): boolean {
  if (u.strategy !== 'section' || !profile.layouts.has('encoded_fp')) return false;
  const last = u.frames[u.frames.length - 1];
  return last !== undefined && last.kind !== 'call' && u.stoppedAtEncodedBp === true;
}

/** The frame-pointer strategies on a kernel built without frame pointers: not run, not a failure. */
function notApplicable(profile: KernelProfile, s: StrategyName): StrategyCheck | undefined {
  if (profile.framePointers !== false || !(STRATEGIES as readonly string[]).includes(s)) return undefined;
  const message = 'this kernel is built without frame pointers (CONFIG_FRAME_POINTER is not set): rbp is an ordinary register';
  const u: UnwindResult = { strategy: s, frames: [], outcome: 'error', reason: 'no_frame_pointers', message, reliable: false, stacks: [] };
  return { strategy: s, unwind: u, verdict: 'not_applicable', reason: 'no_frame_pointers', entry: 'none', reference: 'none', missing: [], extra: [], reliable: false, falseReliable: false };
}

/**
 * ORC only: an end-of-stack entry in the middle of a stack truncates the trace (orc_end_hint);
 * and every entry boundary the walk crossed must agree with the section strategy's reading of it
 * (crossCheckEntries in unwind/orc.ts) — a disagreement is its own verdict.
 */
function orcFindings(profile: KernelProfile, c: StrategyCheck, space: StackSpace): StrategyCheck {
  if (c.strategy !== 'orc' || !GOOD_VERDICTS.has(c.verdict)) return c;
  const u = c.unwind;
  if (u.outcome === 'end_of_stack' && u.reason === 'orc_end_hint') {
    c.verdict = 'truncated';
    c.reason = 'orc_end_hint';
    return c;
  }
  const bad = crossCheckEntries(profile, u, space).find((x) => x.result === 'mismatch');
  if (bad) {
    c.verdict = 'entry_mismatch';
    c.reason = 'section_mismatch';
    if (bad.entry !== 'unknown') c.entry = bad.entry;
    u.message = bad.message;
  }
  return c;
}
