// The real sweep against the emulator's, for the same design and entry path: where is each design's
// own strategy blind (stopped, not decoded or wrong: windows the kernel documents do not count) on
// one side and not on the other? Only functions both sides stepped through are compared: the
// emulator models a chosen call path per scenario, the real kernel runs whatever it runs.
// Every difference found must have an explanation in KNOWN (why it differs, and which side is
// wrong or that it is a choice of the model); one without is reported as unexplained.
import { DESIGN_STRATEGY, type BlindSpot, type DesignName, type Difference, type ExperimentResults, type SweepOutcome } from './results.ts';
import { scenarioToPath } from './emulator-side.ts';

const BLIND: ReadonlySet<SweepOutcome> = new Set(['stopped', 'not_decoded', 'wrong']);

export interface KnownDifference {
  design?: DesignName;
  /** The function the difference is at. */
  fn: RegExp;
  /** real: blind only on the real kernel; emulator: blind only in the emulator. */
  side: 'real' | 'emulator';
  why: string;
  resolution: string;
}

/** Explanations, written after reading both sweeps (docs/experiment-method.md, "Against the emulator"). */
export const KNOWN: readonly KnownDifference[] = [
  {
    design: 'section',
    // The C handler's prologue and ret: sysvec_apic_timer_interrupt, common_interrupt, exc_page_fault, exc_nmi, ...
    fn: /^(sysvec_|common_interrupt$|exc_|__?sysvec)/,
    side: 'real',
    why: 'real 6.1 entry code zeroes rbp (PUSH_AND_CLEAR_REGS) and the section design never sets it again, so at the C handler\'s first instructions and its ret no frame links to pt_regs; the emulator\'s IDT stubs do not clear rbp, so its chain still reaches the interrupted frame there',
    resolution: 'emulator wrong: its idtStub must clear rbp (CLEAR_RBP) for every layout, kernel_entry pushing pt_regs->bp; not yet fixed (open, see the issue 18 note)',
  },
];

function blindFns(spots: readonly BlindSpot[], strategy: string): Map<string, BlindSpot> {
  const out = new Map<string, BlindSpot>();
  for (const b of spots) if (b.strategy === strategy && BLIND.has(b.outcome) && !out.has(b.fn)) out.set(b.fn, b);
  return out;
}

export function compareWithEmulator(r: ExperimentResults, known: readonly KnownDifference[] = KNOWN): Difference[] {
  const out: Difference[] = [];
  for (const d of r.designs) {
    const strategy = DESIGN_STRATEGY[d.design];
    for (const p of d.paths) {
      if (p.skipped) continue;
      const emus = r.emulator.filter((e) => e.layout === d.design && scenarioToPath(e.scenario) === p.path);
      if (emus.length === 0) continue;
      const realFns = new Set(p.pathFns ?? []);
      for (const e of emus) {
        const emuFns = new Set(e.pathFns ?? []);
        const both = (fn: string): boolean => (realFns.size === 0 || realFns.has(fn)) && (emuFns.size === 0 || emuFns.has(fn));
        const real = blindFns(p.blindSpots, strategy);
        const emu = blindFns(e.blindSpots, strategy);
        const diff = (fn: string, b: BlindSpot, side: 'real' | 'emulator'): void => {
          const k = known.find((x) => x.side === side && x.fn.test(fn) && (x.design === undefined || x.design === d.design));
          const other = side === 'real' ? `the emulator (${e.scenario}) is exact there` : 'the real kernel is exact there';
          out.push({
            design: d.design, path: p.path,
            what: `${side === 'real' ? 'real kernel' : `emulator (${e.scenario})`}: ${strategy} ${b.outcome} at ${b.where} (${b.steps} insns, ${b.verdict}${b.reason ? `/${b.reason}` : ''}${b.lost.length ? `, lost ${b.lost.join(',')}` : ''}); ${other}`,
            why: k?.why ?? 'not yet explained',
            resolution: k?.resolution ?? 'unexplained',
          });
        };
        for (const [fn, b] of real) if (!emu.has(fn) && both(fn)) diff(fn, b, 'real');
        for (const [fn, b] of emu) if (!real.has(fn) && both(fn)) diff(fn, b, 'emulator');
      }
    }
  }
  return out;
}
