// The clean-kernel check (docs/verdicts.md "Before changing a verdict"): a verdict is a promise to
// whoever is paged by it, so every change to the checker is run against
// 1. clean emulated kernels of every layout, several seeds, 20,000 samples each: no sample may
//    fail (a stop where the kernel's own unwinder is silent is not a failure);
// 2. every injected fault: each faulted sample must fail for every strategy of its kernel's
//    profile that can see the fault (the emulator says which sample was faulted, not the checker).
// Usage: npm run verify:verdicts [-- --seeds 11,22,33 --samples 20000 --fault-samples 2000]
// Exit 0 when both hold, 1 otherwise (the offending samples are printed).
import { parseArgs } from 'node:util';
import { EmulatedFleet, FAULTS, type FaultName } from '../services/emulator/index.ts';
import { KernelProfile, type EntryLayout } from '../services/core/symbols/profile.ts';
import { checkSample } from '../services/core/check/checker.ts';
import { CheckSummary } from '../services/core/check/summary.ts';
import { GOOD_VERDICTS } from '../services/core/check/reasons.ts';
import type { StrategyName } from '../services/core/unwind/types.ts';

const LAYOUTS = ['kernel_entry', 'section', 'encoded_fp', 'all'] as const;
/** Faults no strategy can see by design (docs/emulator.md): checked for "fools none", not "caught". */
const INVISIBLE: ReadonlySet<FaultName> = new Set(['stale_frames']);
const BASELINE: ReadonlySet<StrategyName> = new Set(['fp']);

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: String(Date.now() % 100000) + ',' + String((Date.now() >> 7) % 100000) + ',' + String((Date.now() >> 13) % 100000) },
    samples: { type: 'string', default: '20000' },
    'fault-samples': { type: 'string', default: '2000' },
  },
});
const seeds = values.seeds.split(',').map(Number);
const samples = Number(values.samples);
const faultSamples = Number(values['fault-samples']);

function profiles(fleet: EmulatedFleet): Map<string, KernelProfile> {
  return new Map(fleet.kernels().map((k) => [k.buildId, KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: k.buildId })]));
}

/** The strategies `check` runs by default on a kernel: its layouts, plus the fp baseline. */
function strategiesOf(p: KernelProfile): StrategyName[] {
  return ['fp', ...([...p.layouts] as StrategyName[])];
}

let bad = 0;
console.log(`clean kernels: seeds ${seeds.join(', ')}, ${samples} samples per layout and seed`);
for (const layout of LAYOUTS) {
  for (const seed of seeds) {
    const fleet = new EmulatedFleet({ seed, layout, hosts: 8 });
    const ps = profiles(fleet);
    const sum = new CheckSummary(5);
    const reasons = new Map<string, number>();
    for (let i = 0; i < samples; i++) {
      const s = fleet.next();
      const p = ps.get(s.kernel!)!;
      const c = checkSample(s, p, strategiesOf(p));
      sum.add(i, s, c, BASELINE);
      for (const r of c.results) if (r.verdict === 'tolerated' && r.reason) reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
    }
    const silent = [...reasons].map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(`  ${layout.padEnd(13)} seed ${String(seed).padStart(6)}: failing ${sum.failingSamples}, false_reliable ${sum.falseReliable}, disagreements ${sum.disagreements}  (tolerated stops: ${silent || 'none'})`);
    if (sum.failingSamples > 0) {
      bad++;
      for (const f of sum.failures) {
        const r = f.check.results.filter((x) => !BASELINE.has(x.strategy) && !GOOD_VERDICTS.has(x.verdict));
        console.log(`    sample ${f.index} ${f.sample.host} ip ${f.sample.regs?.ip?.toString(16)}: ${r.map((x) => `${x.strategy} ${x.verdict}/${x.reason ?? ''} missing [${x.missing.join(',')}] ${x.unwind.message ?? ''}`).join('; ')}`);
      }
    }
  }
}

console.log(`faults: ${faultSamples} samples each, every one faulted where the fault applies`);
for (const fault of FAULTS) {
  const fleet = new EmulatedFleet({ seed: seeds[0]!, layout: 'all', hosts: 8, faults: [fault], faultRate: 1 });
  const ps = profiles(fleet);
  let injected = 0;
  let missed = 0;
  let blindCount = 0;
  const byReason = new Map<string, number>();
  const examples: string[] = [];
  for (let i = 0; i < faultSamples; i++) {
    const e = fleet.nextInfo();
    if (e.fault?.name !== fault) continue;
    const p = ps.get(e.sample.kernel!)!;
    // Only the section strategy reads the entry section: on builds without it the fault is invisible.
    if (fault === 'stub_outside_section' && !p.layouts.has('section')) continue;
    injected++;
    const c = checkSample(e.sample, p, [...p.layouts] as StrategyName[]);
    // Caught: some strategy of the kernel's own layouts fails the sample (a strategy may be blind
    // to a fault at one instant, e.g. section while rbp is encoded_fp's marker; the sample still
    // pages). Fooled (stale frames): a strategy reports frames that are not there.
    let caught = false;
    let fooled = false;
    let blind = false;
    for (const r of c.results) {
      const key = `${r.verdict}/${r.reason ?? '-'}`;
      byReason.set(key, (byReason.get(key) ?? 0) + 1);
      if (fault === 'stub_outside_section' && r.strategy !== 'section') continue;
      if (!GOOD_VERDICTS.has(r.verdict) || r.falseReliable) caught = true;
      if (r.verdict === 'not_applicable') blind = true;
      if (r.verdict === 'wrong_frames' || r.verdict === 'extra_frames' || r.falseReliable) fooled = true;
    }
    if (!INVISIBLE.has(fault) && !caught && blind) {
      // Every eligible strategy said it cannot read this instant: not a silent miss.
      blindCount++;
      continue;
    }
    if (INVISIBLE.has(fault) ? fooled : !caught) {
      missed++;
      if (examples.length < 5) examples.push(`${e.layout} at ${e.where.fn}: ${c.results.map((r) => `${r.strategy} ${r.verdict}/${r.reason ?? '-'}`).join(', ')} (${e.fault.detail})`);
    }
  }
  const dist = [...byReason].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  console.log(`  ${fault.padEnd(20)} injected ${String(injected).padStart(5)}  ${INVISIBLE.has(fault) ? 'fooled' : 'missed'} ${missed}  blind ${blindCount}  (${dist})`);
  for (const x of examples) console.log(`    ${x}`);
  if (missed > 0) bad++;
}
console.log(bad === 0 ? 'verdicts: clean kernels silent, every fault caught' : `verdicts: ${bad} check(s) failed`);
process.exitCode = bad === 0 ? 0 : 1;
