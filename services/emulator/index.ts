// The emulated host fleet: the public API the service, the CLI and the tests use.
import type { Sample } from '../core/dump/sample.ts';
import { buildKernel, LAYOUTS, type Layout, type KernelImage, type BuildFaults } from './image.ts';
import { EmulatedHost, type EmulatedSample, type FaultName, FAULTS } from './host.ts';
import { Rng } from './rng.ts';

export interface EmulatorOptions {
  seed: number;
  layout: 'kernel_entry' | 'section' | 'encoded_fp' | 'all';
  hosts?: number;
  faults?: string[];
  /** Fraction of samples into which one of the named faults is injected (default 0.2 when faults are named). */
  faultRate?: number;
  /** CPUs per host (default 4). */
  cpus?: number;
}

export interface EmulatedKernel {
  buildId: string;
  kallsyms: string;
  profile: {
    layouts: ('kernel_entry' | 'section' | 'encoded_fp')[];
    stubs?: Record<string, { entry?: string; offset?: number; indirect?: boolean }>;
  };
}

export { FAULTS, BUILD_FAULTS, type FaultName, type EmulatedSample, type InjectedFault } from './host.ts';
export type { Layout } from './image.ts';

/** Builds of a fleet: one per layout; 'all' adds the modern build that supports encoded_fp and section at once. */
export function fleetBuilds(layout: EmulatorOptions['layout'], faults: readonly FaultName[]): KernelImage[] {
  const bf: BuildFaults = {
    noFramePointer: faults.includes('no_frame_pointer'),
    missingKernelEntry: faults.includes('missing_kernel_entry'),
    stubOutsideSection: faults.includes('stub_outside_section'),
  };
  const layouts: Layout[] = layout === 'all' ? [...LAYOUTS] : [layout];
  const out = layouts.map((l) => buildKernel({ layout: l, faults: bf }));
  if (layout === 'all') out.push(buildKernel({ layout: 'encoded_fp', profileLayouts: ['encoded_fp', 'section'], faults: bf, variant: 1 }));
  return out;
}

export function parseFaults(list: readonly string[] | undefined): FaultName[] {
  const out: FaultName[] = [];
  for (const f of list ?? []) {
    if (!(FAULTS as readonly string[]).includes(f)) throw new Error(`unknown fault '${f}' (known: ${FAULTS.join(', ')})`);
    out.push(f as FaultName);
  }
  return out;
}

export class EmulatedFleet {
  private readonly rng: Rng;
  private readonly builds: KernelImage[];
  private readonly hosts: EmulatedHost[];
  private readonly faults: FaultName[];
  private readonly faultRate: number;

  constructor(opts: EmulatorOptions) {
    if (!['kernel_entry', 'section', 'encoded_fp', 'all'].includes(opts.layout)) {
      throw new Error(`unknown layout '${String(opts.layout)}' (known: kernel_entry, section, encoded_fp, all)`);
    }
    this.faults = parseFaults(opts.faults);
    this.faultRate = opts.faultRate ?? (this.faults.length > 0 ? 0.2 : 0);
    this.rng = new Rng(opts.seed);
    this.builds = fleetBuilds(opts.layout, this.faults);
    const n = Math.max(1, opts.hosts ?? 4);
    this.hosts = [];
    for (let i = 0; i < n; i++) {
      const k = this.builds[i % this.builds.length]!;
      const tag = k.profile.layouts.join('+').replace(/_/g, '-');
      this.hosts.push(new EmulatedHost({ name: `emu-${tag}-${String(i).padStart(3, '0')}`, kernel: k, cpus: opts.cpus ?? 4, seed: opts.seed + i }));
    }
  }

  kernels(): EmulatedKernel[] {
    return this.builds.map((k) => ({ buildId: k.buildId, kallsyms: k.kallsyms, profile: { layouts: [...k.profile.layouts] } }));
  }

  /** The kernel images themselves (for the sweep and the tests). */
  images(): readonly KernelImage[] {
    return this.builds;
  }

  /**
   * One sample. Its stack windows are views into shared 256 KiB slabs (byteOffset/byteLength
   * delimit them): copy a window's bytes before handing its .buffer to anything that takes whole
   * buffers (postMessage transfer lists).
   */
  next(): Sample {
    return this.nextInfo().sample;
  }

  /** A sample with what the emulator knows about it: host, layout, where it stopped, the fault injected. */
  nextInfo(): EmulatedSample {
    const host = this.hosts[this.rng.int(this.hosts.length)]!;
    let fault: FaultName | undefined;
    if (this.faults.length > 0 && this.rng.chance(this.faultRate)) {
      const usable = this.faults.filter((f) => faultApplies(f, host));
      if (usable.length > 0) fault = this.rng.pick(usable);
    }
    return host.sample(this.rng, fault);
  }

  batch(n: number): Sample[] {
    const out: Sample[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.next();
    return out;
  }
}

/** missing_kernel_entry only exists on kernel_entry builds; every other fault fits every build. */
function faultApplies(f: FaultName, h: EmulatedHost): boolean {
  return f !== 'missing_kernel_entry' || h.kernel.layout === 'kernel_entry';
}
