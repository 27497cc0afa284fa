// `stacksanity collapse`: perf script text → folded stacks, byte for byte what FlameGraph's
// stackcollapse-perf.pl prints (its options, its output), for flamegraph.pl, inferno or speedscope.
// perf.data input is collapsed too: its samples have no symbols, so frames are raw addresses.
import { parseArgs } from 'node:util';
import { DumpError } from '../core/dump/errors.ts';
import { formatHex64 } from '../core/u64.ts';
import { collapsePerfScript, type CollapseOptions } from '../realhost/collapse.ts';
import { readInputBytes, DEFAULT_MAX_INPUT } from '../realhost/input.ts';
import { isPerfData, parsePerfData } from '../realhost/perf-data.ts';
import type { Io } from './check.ts';

export const COLLAPSE_USAGE = `usage: stacksanity collapse [--pid] [--tid] [--kernel] [--jit] [--all] [--addrs] [--event-filter EVENT] [FILE...]
  Folds perf script output (gzip allowed; '-' or nothing reads stdin) into "comm;root;...;leaf count"
  lines, exactly as FlameGraph's stackcollapse-perf.pl does with the same options:
    --pid     comm-PID          --tid    comm-PID/TID
    --kernel  kernel frames _[k]  --jit  /tmp/perf-PID.map frames _[j]   --all  both
    --addrs   unresolved frames as [dso <pc>]
    --event-filter EVENT  keep this event (default: the first event seen)
`;

export function runCollapse(args: string[], io: Io): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        pid: { type: 'boolean' }, tid: { type: 'boolean' }, kernel: { type: 'boolean' }, jit: { type: 'boolean' },
        all: { type: 'boolean' }, addrs: { type: 'boolean' }, 'event-filter': { type: 'string' }, help: { type: 'boolean', short: 'h' },
        'max-bytes': { type: 'string' },
      },
    });
  } catch (e) {
    io.err(`stacksanity collapse: ${(e as Error).message}\n${COLLAPSE_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    io.out(COLLAPSE_USAGE);
    return 0;
  }
  const maxBytes = v['max-bytes'] !== undefined ? Number(v['max-bytes']) : DEFAULT_MAX_INPUT;
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) {
    io.err(`stacksanity collapse: --max-bytes must be a positive integer\n`);
    return 2;
  }
  const opts: CollapseOptions = {};
  if (v.pid) opts.pid = true;
  if (v.tid) opts.tid = true;
  if (v.kernel) opts.kernel = true;
  if (v.jit) opts.jit = true;
  if (v.all) opts.all = true;
  if (v.addrs) opts.addrs = true;
  if (v['event-filter'] !== undefined) opts.eventFilter = v['event-filter'];
  const files = parsed.positionals.length > 0 ? parsed.positionals : ['-'];
  // Like `stackcollapse-perf.pl a b`: the inputs are read as one stream.
  const parts: string[] = [];
  for (const f of files) {
    try {
      const bytes = readInputBytes(f, maxBytes);
      parts.push(isPerfData(bytes) ? perfDataAsScript(bytes, f, io) : bytes.toString('latin1'));
    } catch (e) {
      if (e instanceof DumpError) {
        io.err(`stacksanity collapse: ${e.describe()}\n`);
        return 2;
      }
      throw e;
    }
  }
  const r = collapsePerfScript(parts.join(''), opts);
  // stackcollapse-perf.pl's own messages, on stderr as it prints them.
  if (r.filteredEvent !== undefined) io.err(`Filtering for events of type: ${r.filteredEvent}\n`);
  if (r.unrecognized > 0) io.err(`stacksanity collapse: ${r.unrecognized} unrecognized line(s) skipped\n`);
  io.out(r.text);
  return 0;
}

/** perf.data samples as minimal perf script text (no symbols: the address stands for the frame). */
function perfDataAsScript(bytes: Uint8Array, file: string, io: Io): string {
  const r = parsePerfData(bytes, { file });
  for (const n of r.notes) io.err(`stacksanity collapse: ${file}: ${n}\n`);
  for (const x of r.rejected) io.err(`stacksanity collapse: ${x.message}\n`);
  let out = '';
  for (const s of r.samples) {
    out += `${(s.comm ?? '[unknown]').replace(/\s/g, '_')} ${s.pid ?? -1}/${s.tid ?? -1} ${s.time ?? '0.0'}: ${s.period ?? 1n} ${s.trigger}:\n`;
    for (const c of s.callchain ?? []) {
      const a = formatHex64(c.addr);
      out += `\t${a} ${a} (${c.addr >= 0xffff800000000000n ? '[kernel.kallsyms]' : '[unknown]'})\n`;
    }
    out += '\n';
  }
  return out;
}
