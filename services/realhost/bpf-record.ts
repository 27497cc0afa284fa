// The binary records the live-host BPF sampler writes (services/realhost/bpf/sampler.h, struct
// ss_record) decoded into the sample model: registers, every stack the sample was on with its
// bounds and captured bytes, and the kernel's own unwind of the same instant (bpf_get_stack, the
// perf_callchain_kernel() walk perf and bpftrace print) as the host callchain. Pure.
import type { CallchainEntry, Regs, Sample, SampleStack } from '../core/dump/sample.ts';
import { callchainFlags } from '../core/dump/callchain-flags.ts';
import { PT_REGS_FIELDS, type StackType } from '../core/stack/layout.ts';
import type { SymbolTable } from '../core/symbols/table.ts';

export const RECORD_MAGIC = 0x53534231;
export const RECORD_HEADER = 832;
const KSTACK_MAX = 64;
const MAX_STACKS = 3;
/** enum ss_stack_type, in order. */
const STACK_KINDS: readonly StackType[] = ['task', 'irq', 'nmi', 'db', 'mce', 'df'];
export const FLAG_USER = 1;
export const FLAG_OFF_STACK = 2;
export const FLAG_CUT = 4;

/** A record that cannot be read: where it is and why. */
export class RecordError extends Error {
  constructor(readonly offset: number, message: string) {
    super(`sampler output at byte ${offset}: ${message}`);
    this.name = 'RecordError';
  }
}

export interface DecodeOptions {
  /** Names the kernel frames (`func+0x12`) as perf script would; addresses alone without it. */
  symbols?: SymbolTable;
  /** Base of the seconds in Sample.time (CLOCK_MONOTONIC ns of the first record, by default 0). */
  trigger?: string;
}

export interface DecodedRecords {
  samples: Sample[];
  /** Records that could not be read (the rest are still decoded when the framing allows). */
  errors: RecordError[];
  userSamples: number;
  offStack: number;
  cut: number;
}

/** Decodes a whole sampler output file. */
export function decodeRecords(buf: Uint8Array, o: DecodeOptions = {}): DecodedRecords {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: DecodedRecords = { samples: [], errors: [], userSamples: 0, offStack: 0, cut: 0 };
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < 8) {
      out.errors.push(new RecordError(at, `${buf.length - at} trailing bytes, too short for a record header (truncated output?)`));
      break;
    }
    const magic = dv.getUint32(at, true);
    const size = dv.getUint32(at + 4, true);
    if (magic !== RECORD_MAGIC) {
      // No resynchronisation: the framing is lost, and guessing would invent samples.
      out.errors.push(new RecordError(at, `magic 0x${magic.toString(16)} is not 0x${RECORD_MAGIC.toString(16)} (a sampler of another version?)`));
      break;
    }
    if (size < RECORD_HEADER || at + size > buf.length) {
      out.errors.push(new RecordError(at, `record size ${size} ${size < RECORD_HEADER ? `is under the ${RECORD_HEADER}-byte header` : `runs past the end (${buf.length - at} bytes left): truncated output?`}`));
      break;
    }
    try {
      const s = decodeRecord(buf.subarray(at, at + size), at, o);
      const flags = dv.getUint32(at + 28, true);
      if (flags & FLAG_USER) out.userSamples++;
      if (flags & FLAG_OFF_STACK) out.offStack++;
      if (flags & FLAG_CUT) out.cut++;
      out.samples.push(s);
    } catch (e) {
      if (!(e instanceof RecordError)) throw e;
      out.errors.push(e);
    }
    at += size;
  }
  return out;
}

/** One record (exactly its bytes) as a sample. */
export function decodeRecord(b: Uint8Array, offset: number, o: DecodeOptions = {}): Sample {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u64 = (p: number): bigint => dv.getBigUint64(p, true);
  const timeNs = u64(8);
  const cpu = dv.getUint32(16, true);
  const pid = dv.getUint32(20, true);
  const tid = dv.getUint32(24, true);
  const flags = dv.getUint32(28, true);
  const commBytes = b.subarray(32, 48);
  const nul = commBytes.indexOf(0);
  const comm = Buffer.from(commBytes.subarray(0, nul < 0 ? 16 : nul)).toString('latin1');
  const regs: Regs = {};
  for (let i = 0; i < PT_REGS_FIELDS.length; i++) regs[PT_REGS_FIELDS[i]!] = u64(48 + i * 8);
  const s: Sample = {
    comm, pid, tid, cpu,
    time: `${timeNs / 1_000_000_000n}.${(timeNs % 1_000_000_000n).toString().padStart(9, '0')}`,
    trigger: o.trigger ?? 'cpu-clock',
    regs,
    stacks: [],
  };
  if (flags & FLAG_USER) {
    // User mode: nothing of the kernel to judge. The interrupted ip is the whole "callchain".
    s.callchain = [{ addr: regs.ip!, dso: '[unknown]', flags: callchainFlags(regs.ip!) }];
    return s;
  }
  const kbytes = dv.getInt32(216, true);
  const nstacks = dv.getUint32(220, true);
  if (nstacks > MAX_STACKS) throw new RecordError(offset, `nstacks ${nstacks} is over ${MAX_STACKS}`);
  if (kbytes > KSTACK_MAX * 8 || kbytes % 8 !== 0) throw new RecordError(offset, `kstack length ${kbytes} is not a multiple of 8 up to ${KSTACK_MAX * 8}`);
  // bpf_get_stack failed (kbytes < 0): the kernel gave no trace; the sample keeps its memory.
  const chain: CallchainEntry[] = [];
  for (let i = 0; i < Math.max(0, kbytes) / 8; i++) {
    const addr = u64(224 + i * 8);
    const sym = o.symbols?.format(addr, i > 0);
    const e: CallchainEntry = { addr, dso: '[kernel.kallsyms]', flags: [] };
    if (sym !== undefined && !sym.startsWith('0x')) e.sym = sym.replace(/\/0x[0-9a-f]+$/, '');
    e.flags = callchainFlags(addr, e.sym);
    chain.push(e);
  }
  s.callchain = chain;
  let data = RECORD_HEADER;
  for (let i = 0; i < nstacks; i++) {
    const p = 736 + i * 32;
    const begin = u64(p);
    const end = u64(p + 8);
    const start = u64(p + 16);
    const len = dv.getUint32(p + 24, true);
    const type = STACK_KINDS[dv.getUint32(p + 28, true)];
    if (type === undefined) throw new RecordError(offset, `stack ${i} has unknown type ${dv.getUint32(p + 28, true)}`);
    if (start < begin || start + BigInt(len) > end) throw new RecordError(offset, `stack ${i} (${type}): captured [${start.toString(16)}, +${len}) lies outside its bounds [${begin.toString(16)}, ${end.toString(16)})`);
    if (data + len > b.length) throw new RecordError(offset, `stack ${i} (${type}) declares ${len} bytes, the record holds ${b.length - data}`);
    // A copy: the record's buffer is the whole file, which should not stay alive through one window.
    const st: SampleStack = { type, begin, end, windows: [{ start, bytes: b.slice(data, data + len) }] };
    s.stacks.push(st);
    data += len;
  }
  return s;
}
