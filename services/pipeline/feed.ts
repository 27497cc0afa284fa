// Sample sources for the emulated host agent and the end-to-end benchmark: the emulated fleet
// (services/emulator, when present) or a replay of the shipped example with fresh hosts and
// times, so that no two batches are byte-identical (identical uploads are deduplicated).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatTextDump, parseTextDump } from '../core/dump/text.ts';
import type { Sample } from '../core/dump/sample.ts';
import type { EntryLayout, StubOverride } from '../core/symbols/profile.ts';

export interface FeedKernel {
  buildId: string;
  kallsyms: string;
  profile: { layouts?: EntryLayout[]; stubs?: Record<string, StubOverride>; kasan?: boolean };
}

export interface FeedSource {
  kind: string;
  kernels: FeedKernel[];
  /** A text dump of n samples. */
  batch(n: number): string;
}

interface Fleet {
  kernels(): FeedKernel[];
  batch(n: number): Sample[];
}

/** Per-sample faults the feeder injects by default, so a newcomer sees failing traces, not only passing ones. */
export const DEFAULT_FEED_FAULTS = ['corrupt_bp', 'clobber_ret', 'stale_frames'];

export interface FeedOptions {
  root: string;
  hosts: number;
  seed: number;
  faults?: string[];
  faultRate?: number;
  preferDemo?: boolean;
  warn?: (msg: string) => void;
}

export async function feederSource(o: FeedOptions): Promise<FeedSource> {
  if (!o.preferDemo) {
    // A variable specifier: the emulator is another issue's module and may be absent or unfinished.
    const path = join(o.root, 'services', 'emulator', 'index.ts');
    try {
      const mod = (await import(path)) as { EmulatedFleet?: new (opts: Record<string, unknown>) => Fleet; FAULTS?: readonly string[] };
      if (mod.EmulatedFleet) {
        const known = new Set(mod.FAULTS ?? []);
        const faults = (o.faults ?? DEFAULT_FEED_FAULTS).filter((f) => known.has(f));
        const fleet = new mod.EmulatedFleet({ seed: o.seed, layout: 'all', hosts: o.hosts, faults, faultRate: o.faultRate ?? 0.05 });
        return {
          kind: `emulated fleet: ${o.hosts} hosts, seed ${o.seed}, faults ${faults.join(',') || 'none'}`,
          kernels: fleet.kernels(),
          batch: (n) => formatTextDump(fleet.batch(n)),
        };
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') o.warn?.(`the emulator failed to load (${(e as Error).message}); replaying examples/demo.dump instead`);
    }
  }
  return demoSource(o.root, o.hosts);
}

export function demoSource(root: string, hosts: number): FeedSource {
  const kallsyms = readFileSync(join(root, 'examples', 'demo.kallsyms'), 'utf8');
  const parsed = parseTextDump(readFileSync(join(root, 'examples', 'demo.dump'), 'utf8'));
  const base = parsed.samples;
  let seq = 0;
  let clock = 0;
  return {
    kind: 'replay of examples/demo.dump',
    kernels: [{ buildId: 'demo-encoded-fp', kallsyms, profile: {} }],
    batch(n: number): string {
      const out: Sample[] = new Array(n);
      for (let i = 0; i < n; i++) {
        const s = base[seq++ % base.length]!;
        clock += 0.000137;
        out[i] = { ...s, host: `demo-host-${seq % Math.max(hosts, 1)}`, time: (6000 + clock).toFixed(6) };
      }
      return formatTextDump(out);
    },
  };
}
