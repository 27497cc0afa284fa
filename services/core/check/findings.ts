// Findings (DESIGN §3.5): failing unwinds grouped by a stable signature, the way syzkaller titles
// crashes, so that a blind spot that fails 2 % of samples forever is one line to read, acknowledge
// and gate on, not a stream of failing samples.
//
// The signature: strategy, verdict and reason, entry type, and the function where the walk stopped
// (or, for a walk that ended, the first frame it lost or invented), plus whether it was
// false_reliable. Offsets and the kernel build are kept beside it but are not part of the identity:
// a kernel developer's patch moves code (offsets) and changes the build id, and the baseline taken
// on the unpatched kernel must still recognise the same blind spot on the patched one.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { SampleCheck, StrategyCheck } from './checker.ts';
import { GOOD_VERDICTS } from './reasons.ts';
import type { StrategyName } from '../unwind/types.ts';

export interface FindingSignature {
  /** 16 hex digits: FNV-1a 64 of the identity fields. */
  id: string;
  title: string;
  strategy: string;
  verdict: string;
  reason: string;
  entry: string;
  /** Function where the walk stopped, or the first frame lost / invented. */
  fn: string;
  /** 'stopped' (the walk ended in an error at fn), 'lost' (fn is missing), 'extra' (fn was invented),
   *  'ended' (a complete walk judged wrong at its last frame, e.g. entry_mismatch), 'disagreed'. */
  where: 'stopped' | 'lost' | 'extra' | 'ended' | 'disagreed';
  falseReliable: boolean;
  /** fn+0xoff of this occurrence (not part of the identity). */
  at: string;
}

/**
 * The signatures of one checked sample: one per failing strategy result (strategies in baseline
 * excluded), plus one for a disagreement between strategies that each passed.
 */
export function findingsOf(sample: Sample, check: SampleCheck, profile: KernelProfile, baseline: ReadonlySet<StrategyName> = NONE): FindingSignature[] {
  const out: FindingSignature[] = [];
  let anyFailed = false;
  for (const r of check.results) {
    if (baseline.has(r.strategy)) continue;
    if (GOOD_VERDICTS.has(r.verdict) && !r.falseReliable) continue;
    anyFailed = true;
    out.push(signatureOf(r, profile));
  }
  if (!anyFailed && check.disagreements.length > 0) {
    const [a, b] = check.disagreements[0]!;
    const ip = sample.regs?.ip;
    const loc = ip === undefined ? { fn: '?', at: '?' } : locate(profile, Number(BigInt.asIntN(64, ip)), false);
    out.push(make({ strategy: `${a},${b}`, verdict: 'disagreement', reason: 'traces_differ', entry: 'none', fn: loc.fn, where: 'disagreed', falseReliable: false, at: loc.at }));
  }
  return out;
}

export function signatureOf(r: StrategyCheck, profile: KernelProfile): FindingSignature {
  const u = r.unwind;
  const stopped = u.outcome === 'error' || u.outcome === 'depth_limit' || r.verdict === 'truncated' || r.verdict === 'error';
  let loc: { fn: string; at: string };
  let where: FindingSignature['where'];
  if (!stopped && r.lostAt !== undefined) {
    loc = locate(profile, r.lostAt.ipS, r.lostAt.call);
    where = 'lost';
  } else if (!stopped && r.extraAt !== undefined) {
    loc = locate(profile, r.extraAt.ipS, r.extraAt.call);
    where = 'extra';
  } else {
    const last = u.frames[u.frames.length - 1];
    loc = last === undefined ? { fn: '(no frame)', at: '(no frame)' } : locate(profile, last.ipS, last.kind === 'call');
    where = stopped ? 'stopped' : 'ended';
  }
  return make({ strategy: r.strategy, verdict: r.verdict, reason: r.reason ?? 'none', entry: r.entry, fn: loc.fn, where, falseReliable: r.falseReliable, at: loc.at });
}

function make(f: Omit<FindingSignature, 'id' | 'title'>): FindingSignature {
  const id = fnv1a64([f.strategy, f.verdict, f.reason, f.entry, f.fn, f.where, f.falseReliable ? 'fr' : ''].join('\0'));
  const verb = f.where === 'stopped' ? 'stopped in' : f.where === 'lost' ? 'lost' : f.where === 'extra' ? 'invented' : f.where === 'ended' ? 'ending in' : 'at';
  const title = `${f.falseReliable ? 'false_reliable: ' : ''}${f.strategy} ${f.verdict} (${f.reason}) ${verb} ${f.fn}${f.entry !== 'none' ? ` [${f.entry}]` : ''}`;
  return { id, title, ...f };
}

/** Function name and fn+0xoff of an ip (a return address is looked up at ip-1, as %pB does). */
function locate(profile: KernelProfile, ipS: number, call: boolean): { fn: string; at: string } {
  if (!Number.isSafeInteger(ipS)) return { fn: 'non-canonical', at: 'non-canonical' };
  const t = profile.symbols;
  const i = t.indexOfSigned(call ? ipS - 1 : ipS);
  if (i < 0) {
    const hex = BigInt.asUintN(64, BigInt(ipS)).toString(16).padStart(16, '0');
    return { fn: '(not text)', at: hex };
  }
  const name = t.modules[i] !== undefined ? `${t.names[i]!} [${t.modules[i]!}]` : t.names[i]!;
  return { fn: name, at: `${t.names[i]!}+0x${(ipS - t.starts[i]!).toString(16)}` };
}

/**
 * FNV-1a, 64 bits, over the UTF-16 code units: a stable id with no I/O and no dependency. In two
 * 32-bit halves (the prime is 2^40 + 0x1b3), since BigInt arithmetic cost ~4 µs per id on the
 * worker's hot path.
 */
export function fnv1a64(s: string): string {
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < s.length; i++) {
    lo = (lo ^ s.charCodeAt(i)) >>> 0;
    // (hi·2^32 + lo) · (2^40 + 0x1b3) mod 2^64
    const low = lo * 0x1b3; // < 2^41: exact
    const carry = Math.floor(low / 0x100000000);
    hi = (Math.imul(hi, 0x1b3) + carry + (lo << 8)) >>> 0;
    lo = low >>> 0;
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

const NONE: ReadonlySet<StrategyName> = new Set();

/** A finding as tallied over many samples (the CLI's table and findings file). */
export interface Finding extends Omit<FindingSignature, 'at'> {
  count: number;
  /** Offsets seen, most frequent first (at most 5). */
  at: string[];
  kernels: string[];
  hosts: string[];
  /** Sample indexes (in input order) of the first few occurrences. */
  examples: number[];
}

const MAX_LIST = 5;

/** Findings over a run: one entry per signature id, in order of first appearance. */
export class FindingsTally {
  readonly byId = new Map<string, Finding & { atCounts: Map<string, number> }>();

  add(index: number, sample: Sample, sigs: readonly FindingSignature[]): void {
    for (const s of sigs) {
      let f = this.byId.get(s.id);
      if (!f) {
        const { at: _at, ...rest } = s;
        f = { ...rest, count: 0, at: [], kernels: [], hosts: [], examples: [], atCounts: new Map() };
        this.byId.set(s.id, f);
      }
      f.count++;
      f.atCounts.set(s.at, (f.atCounts.get(s.at) ?? 0) + 1);
      if (sample.kernel !== undefined && !f.kernels.includes(sample.kernel) && f.kernels.length < MAX_LIST) f.kernels.push(sample.kernel);
      if (sample.host !== undefined && !f.hosts.includes(sample.host) && f.hosts.length < MAX_LIST) f.hosts.push(sample.host);
      if (f.examples.length < 3 && f.examples[f.examples.length - 1] !== index) f.examples.push(index);
    }
  }

  /** Most frequent first. */
  list(): Finding[] {
    const out: Finding[] = [];
    for (const f of this.byId.values()) {
      const { atCounts, ...rest } = f;
      out.push({ ...rest, at: [...atCounts].sort((a, b) => b[1] - a[1]).slice(0, MAX_LIST).map(([k]) => k) });
    }
    return out.sort((a, b) => b.count - a.count || a.title.localeCompare(b.title));
  }
}
