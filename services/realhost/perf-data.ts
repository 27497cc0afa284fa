// perf.data ("PERFILE2") → callchain-only samples, the same model `perf script` text parses into.
// Layout: tools/perf/Documentation/perf.data-file-format.txt and include/uapi/linux/perf_event.h
// (summarised in reference/peers-and-formats.md §2.9). Pure: bytes in, samples out.
//
// Samples come out in time order, as perf script prints them.
//
// Robustness rules: a record type this reader does not use is skipped and counted, never fatal;
// anything that does not fit (a section past the end of the file, a record longer than the data
// section, a field past its record) is reported with the file, the byte offset and the field, and
// reading stops there or skips that record — it never throws an unexpected error or loops.
import { DumpError, type Rejection } from '../core/dump/errors.ts';
import { callchainFlags } from '../core/dump/callchain-flags.ts';
import type { CallchainEntry, Regs, Sample } from '../core/dump/sample.ts';
import type { PtRegsField } from '../core/stack/layout.ts';
import type { HostChainContext } from './callchain-check.ts';

// perf_event_attr.sample_type bits (uapi perf_event.h)
const S = {
  IP: 1n << 0n, TID: 1n << 1n, TIME: 1n << 2n, ADDR: 1n << 3n, READ: 1n << 4n, CALLCHAIN: 1n << 5n,
  ID: 1n << 6n, CPU: 1n << 7n, PERIOD: 1n << 8n, STREAM_ID: 1n << 9n, RAW: 1n << 10n,
  BRANCH_STACK: 1n << 11n, REGS_USER: 1n << 12n, STACK_USER: 1n << 13n, WEIGHT: 1n << 14n,
  DATA_SRC: 1n << 15n, IDENTIFIER: 1n << 16n, TRANSACTION: 1n << 17n, REGS_INTR: 1n << 18n,
  PHYS_ADDR: 1n << 19n, AUX: 1n << 20n, CGROUP: 1n << 21n, DATA_PAGE_SIZE: 1n << 22n,
  CODE_PAGE_SIZE: 1n << 23n, WEIGHT_STRUCT: 1n << 24n,
} as const;

// read_format bits
const FMT_TOTAL_TIME_ENABLED = 1n << 0n;
const FMT_TOTAL_TIME_RUNNING = 1n << 1n;
const FMT_ID = 1n << 2n;
const FMT_GROUP = 1n << 3n;
const FMT_LOST = 1n << 4n;
// branch_sample_type: the kernel stores hw_idx before the entries when asked
const BRANCH_HW_INDEX = 1n << 17n;
const BRANCH_COUNTERS = 1n << 19n;

/** Callchain entries at or above this are context markers (PERF_CONTEXT_MAX = -4095), not ips. */
export const PERF_CONTEXT_MAX = 0xfffffffffffff001n;
export const PERF_CONTEXT_KERNEL = 0xffffffffffffff80n;
export const PERF_CONTEXT_USER = 0xfffffffffffffe00n;

/** Record types by number, for the skipped tally (uapi perf_event.h and perf's own session.h). */
export const RECORD_NAMES: Readonly<Record<number, string>> = {
  1: 'MMAP', 2: 'LOST', 3: 'COMM', 4: 'EXIT', 5: 'THROTTLE', 6: 'UNTHROTTLE', 7: 'FORK', 8: 'READ',
  9: 'SAMPLE', 10: 'MMAP2', 11: 'AUX', 12: 'ITRACE_START', 13: 'LOST_SAMPLES', 14: 'SWITCH',
  15: 'SWITCH_CPU_WIDE', 16: 'NAMESPACES', 17: 'KSYMBOL', 18: 'BPF_EVENT', 19: 'CGROUP',
  20: 'TEXT_POKE', 21: 'AUX_OUTPUT_HW_ID', 64: 'HEADER_ATTR', 65: 'HEADER_EVENT_TYPE',
  66: 'HEADER_TRACING_DATA', 67: 'HEADER_BUILD_ID', 68: 'FINISHED_ROUND', 69: 'ID_INDEX',
  70: 'AUXTRACE_INFO', 71: 'AUXTRACE', 72: 'AUXTRACE_ERROR', 73: 'THREAD_MAP', 74: 'CPU_MAP',
  75: 'STAT_CONFIG', 76: 'STAT', 77: 'STAT_ROUND', 78: 'EVENT_UPDATE', 79: 'TIME_CONV',
  80: 'HEADER_FEATURE', 81: 'COMPRESSED', 82: 'FINISHED_INIT',
};

// x86 perf_regs.h order (PERF_REG_X86_*): the bit index of each register in sample_regs_intr.
const X86_REGS: readonly (PtRegsField | undefined)[] = [
  'ax', 'bx', 'cx', 'dx', 'si', 'di', 'bp', 'sp', 'ip', 'flags', 'cs', 'ss',
  undefined, undefined, undefined, undefined, // ds es fs gs: not in pt_regs
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
];

// Feature bits (HEADER_*) this reader uses.
const FEAT_BUILD_ID = 2;
const FEAT_HOSTNAME = 3;
const FEAT_OSRELEASE = 4;
const FEAT_ARCH = 6;
const FEAT_CMDLINE = 11;
const FEAT_EVENT_DESC = 12;

const HW_EVENTS = ['cycles', 'instructions', 'cache-references', 'cache-misses', 'branches', 'branch-misses', 'bus-cycles', 'stalled-cycles-frontend', 'stalled-cycles-backend', 'ref-cycles'];
const SW_EVENTS = ['cpu-clock', 'task-clock', 'page-faults', 'context-switches', 'cpu-migrations', 'minor-faults', 'major-faults', 'alignment-faults', 'emulation-faults', 'dummy', 'bpf-output'];

export interface PerfEventAttr {
  type: number;
  config: bigint;
  sampleType: bigint;
  readFormat: bigint;
  branchSampleType: bigint;
  sampleRegsUser: bigint;
  sampleRegsIntr: bigint;
  sampleIdAll: boolean;
  ids: bigint[];
  name: string;
}

export interface BuildIdEntry {
  pid: number;
  cpumode: number;
  buildId: string;
  filename: string;
}

export interface PerfDataResult {
  samples: Sample[];
  /** Problems, each with the file, the byte offset and the field; samples before them are kept. */
  rejected: Rejection[];
  attrs: PerfEventAttr[];
  /** Records this reader does not use, by type name (MMAP2 3, FINISHED_ROUND 12, ...). */
  skipped: Record<string, number>;
  hostname?: string;
  osRelease?: string;
  arch?: string;
  cmdline?: string[];
  buildIds: BuildIdEntry[];
  /** The build id of [kernel.kallsyms], set on every sample as `kernel`. */
  kernelBuildId?: string;
  bigEndian: boolean;
  /** What the reader could not do that hides samples (e.g. zstd-compressed records). */
  notes: string[];
  /** What the record says about a sample's chain beyond its addresses (see readSample). */
  contexts: Map<Sample, HostChainContext>;
}

export interface PerfDataOptions {
  file?: string;
  /** Stop after this many samples (the capture agent's batches). */
  maxSamples?: number;
}

/** True when the bytes start like a perf.data file (either endianness). */
export function isPerfData(b: Uint8Array): boolean {
  if (b.length < 8) return false;
  const m = String.fromCharCode(...b.subarray(0, 8));
  return m === 'PERFILE2' || m === '2ELIFREP';
}

/** A bounds-checked little/big-endian reader whose errors name the offset and the field. */
class Reader {
  constructor(
    readonly dv: DataView,
    readonly le: boolean,
    readonly file: string,
  ) {}

  need(at: number, n: number, end: number, field: string): void {
    if (at < 0 || at + n > end) {
      throw new DumpError('truncated', `offset ${at}: field ${field} needs ${n} bytes but its ${end > this.dv.byteLength ? 'file' : 'record'} ends at ${end}`, { file: this.file, field });
    }
  }
  u16(at: number, end: number, field: string): number {
    this.need(at, 2, end, field);
    return this.dv.getUint16(at, this.le);
  }
  u32(at: number, end: number, field: string): number {
    this.need(at, 4, end, field);
    return this.dv.getUint32(at, this.le);
  }
  u64(at: number, end: number, field: string): bigint {
    this.need(at, 8, end, field);
    return this.dv.getBigUint64(at, this.le);
  }
  /** A u64 that must be a byte count or offset within the file. */
  size(at: number, end: number, field: string): number {
    const v = this.u64(at, end, field);
    if (v > BigInt(this.dv.byteLength)) {
      throw new DumpError('bad_field', `offset ${at}: field ${field} = ${v} is larger than the file (${this.dv.byteLength} bytes)`, { file: this.file, field });
    }
    return Number(v);
  }
  /** perf's header strings: u32 len, then len bytes, NUL-padded. */
  str(at: number, end: number, field: string): { value: string; next: number } {
    const len = this.u32(at, end, `${field}.len`);
    this.need(at + 4, len, end, field);
    const bytes = new Uint8Array(this.dv.buffer, this.dv.byteOffset + at + 4, len);
    let n = bytes.indexOf(0);
    if (n < 0) n = len;
    return { value: Buffer.from(bytes.subarray(0, n)).toString('utf8'), next: at + 4 + len };
  }
}

function popcount(v: bigint): number {
  let n = 0;
  for (let x = v; x !== 0n; x &= x - 1n) n++;
  return n;
}

function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** perf's own default names, for files without the EVENT_DESC feature. */
function eventName(type: number, config: bigint): string {
  if (type === 0 && config < BigInt(HW_EVENTS.length)) return HW_EVENTS[Number(config)]!;
  if (type === 1 && config < BigInt(SW_EVENTS.length)) return SW_EVENTS[Number(config)]!;
  return `raw-${type}-${config.toString(16)}`;
}

function timeKey(t: string): bigint {
  const dot = t.indexOf('.');
  return BigInt(t.slice(0, dot)) * 1_000_000_000n + BigInt(t.slice(dot + 1));
}

/** Nanoseconds as perf script --ns prints them (secs.nsecs): exact, kept as text. */
export function formatPerfTime(ns: bigint): string {
  return `${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, '0')}`;
}

export function parsePerfData(bytes: Uint8Array, opts: PerfDataOptions = {}): PerfDataResult {
  const file = opts.file ?? '<perf.data>';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.byteLength;
  if (!isPerfData(bytes)) {
    const m = String.fromCharCode(...bytes.subarray(0, Math.min(8, len))).replace(/[^\x20-\x7e]/g, '.');
    throw new DumpError('bad_header', `not a perf.data file: magic '${m}', expected 'PERFILE2'`, { file, field: 'magic' });
  }
  const le = bytes[0] === 0x50; // "PERFILE2" read in file order means little-endian
  const r = new Reader(dv, le, file);
  const headerSize = r.size(8, len, 'header.size');
  if (headerSize === 16) throw new DumpError('bad_header', 'pipe-mode perf.data (perf record -o -) is not supported: record to a file', { file, field: 'header.size' });
  if (headerSize < 104) throw new DumpError('bad_header', `offset 8: header.size ${headerSize} is smaller than the 104-byte perf_file_header`, { file, field: 'header.size' });
  const attrSize = r.size(16, len, 'header.attr_size');
  const attrsAt = r.size(24, len, 'header.attrs.offset');
  const attrsSize = r.size(32, len, 'header.attrs.size');
  const dataAt = r.size(40, len, 'header.data.offset');
  const dataSize = r.size(48, len, 'header.data.size');
  const features: bigint[] = [r.u64(72, len, 'header.flags'), r.u64(80, len, 'header.flags1[0]'), r.u64(88, len, 'header.flags1[1]'), r.u64(96, len, 'header.flags1[2]')];

  const result: PerfDataResult = { samples: [], rejected: [], attrs: [], skipped: {}, buildIds: [], bigEndian: !le, notes: [], contexts: new Map() };
  const reject = (e: DumpError, sampleIndex: number): void => {
    result.rejected.push({ sampleIndex, reason: e.reason, message: e.describe(), where: { ...e.where, sampleIndex } });
  };

  // Attributes: perf_file_attr = perf_event_attr (its own size field) + perf_file_section ids.
  if (attrSize < 16 + 64) throw new DumpError('bad_header', `offset 16: header.attr_size ${attrSize} is too small for a perf_event_attr`, { file, field: 'header.attr_size' });
  r.need(attrsAt, attrsSize, len, 'attrs');
  if (attrsSize % attrSize !== 0) throw new DumpError('bad_header', `offset 32: attrs.size ${attrsSize} is not a multiple of attr_size ${attrSize}`, { file, field: 'header.attrs.size' });
  for (let at = attrsAt; at < attrsAt + attrsSize; at += attrSize) {
    const end = at + attrSize;
    const a = readAttr(r, at, end - 16, `attrs[${result.attrs.length}]`);
    const idsAt = r.size(end - 16, end, 'attr.ids.offset');
    const idsSize = r.size(end - 8, end, 'attr.ids.size');
    r.need(idsAt, idsSize, len, 'attr.ids');
    for (let p = idsAt; p + 8 <= idsAt + idsSize; p += 8) a.ids.push(r.u64(p, len, 'attr.ids'));
    result.attrs.push(a);
  }
  if (result.attrs.length === 0) throw new DumpError('bad_header', 'the file has no event attributes', { file, field: 'attrs' });

  // Feature sections: one perf_file_section per set bit, in bit order, right after the data.
  const featAt = dataAt + dataSize;
  let nth = 0;
  for (let bit = 0; bit < 256; bit++) {
    if (((features[bit >> 6]! >> BigInt(bit & 63)) & 1n) === 0n) continue;
    const secAt = featAt + 16 * nth++;
    try {
      const off = r.size(secAt, len, `feature[${bit}].offset`);
      const size = r.size(secAt + 8, len, `feature[${bit}].size`);
      r.need(off, size, len, `feature[${bit}]`);
      readFeature(r, bit, off, off + size, result);
    } catch (e) {
      if (!(e instanceof DumpError)) throw e;
      // A bad feature section costs that feature only; samples do not depend on it.
      reject(e, -1);
    }
  }
  for (const b of result.buildIds) if (b.filename === '[kernel.kallsyms]') result.kernelBuildId = b.buildId;

  // Data: a stream of perf_event_header { u32 type; u16 misc; u16 size } records.
  let dataEnd = dataAt + dataSize;
  if (dataEnd > len) {
    reject(new DumpError('truncated', `offset ${dataAt}: the data section claims ${dataSize} bytes but the file ends after ${len - dataAt}`, { file, field: 'data' }), result.samples.length);
    dataEnd = len;
  }
  const byId = new Map<bigint, PerfEventAttr>();
  for (const a of result.attrs) for (const id of a.ids) byId.set(id, a);
  const comms = new Map<number, string>();
  const maxSamples = opts.maxSamples ?? Infinity;
  let recordNo = 0;
  for (let at = dataAt; at < dataEnd; ) {
    if (at + 8 > dataEnd) {
      reject(new DumpError('truncated', `offset ${at}: ${dataEnd - at} bytes left, less than a record header`, { file, field: 'record.header' }), result.samples.length);
      break;
    }
    const type = r.u32(at, dataEnd, 'record.type');
    const size = r.u16(at + 6, dataEnd, 'record.size');
    recordNo++;
    if (size < 8) {
      // The stream cannot be resynchronised past a record whose size is wrong.
      reject(new DumpError('bad_field', `offset ${at}: record ${recordNo} (type ${type}) has size ${size}, smaller than its header: cannot continue`, { file, field: 'record.size' }), result.samples.length);
      break;
    }
    const end = at + size;
    if (end > dataEnd) {
      reject(new DumpError('truncated', `offset ${at}: record ${recordNo} (type ${RECORD_NAMES[type] ?? type}) of ${size} bytes runs past the end of the data at ${dataEnd}`, { file, field: 'record' }), result.samples.length);
      break;
    }
    try {
      if (type === 9) {
        if (result.samples.length >= maxSamples) break;
        const ctx: HostChainContext = {};
        const s = readSample(r, at + 8, end, result.attrs, byId, comms, ctx);
        result.contexts.set(s, ctx);
        s.source = { file, line: recordNo };
        if (result.kernelBuildId !== undefined) s.kernel = result.kernelBuildId;
        result.samples.push(s);
      } else if (type === 3) {
        // COMM { u32 pid, tid; char comm[] }: names the thread for the samples that follow.
        const tid = r.u32(at + 12, end, 'comm.tid');
        const bytesAt = at + 16;
        const raw = bytes.subarray(bytesAt, end);
        let n = raw.indexOf(0);
        if (n < 0) n = raw.length;
        comms.set(tid, Buffer.from(raw.subarray(0, n)).toString('utf8'));
      } else {
        const name = RECORD_NAMES[type] ?? `type ${type}`;
        result.skipped[name] = (result.skipped[name] ?? 0) + 1;
      }
    } catch (e) {
      if (!(e instanceof DumpError)) throw e;
      // The header's size is trustworthy (it fit): skip just this record.
      reject(new DumpError(e.reason, `record ${recordNo} (${RECORD_NAMES[type] ?? `type ${type}`}) at offset ${at}: ${e.message}`, e.where), result.samples.length);
    }
    at = end;
  }
  // The kernel writes each CPU's buffer in turn, so records are not time-ordered across CPUs;
  // perf script sorts them (reordering up to each FINISHED_ROUND). A stable sort by time gives the
  // same order for a well-formed file.
  if (result.samples.every((x) => x.time !== undefined)) {
    const key = new Map(result.samples.map((x) => [x, timeKey(x.time!)]));
    result.samples.sort((x, y) => {
      const a = key.get(x)!;
      const b = key.get(y)!;
      return a < b ? -1 : a > b ? 1 : 0;
    });
  }
  if (result.skipped.COMPRESSED) {
    // perf record -z: the samples are inside zstd frames, and Node 20 has no zstd.
    result.notes.push(`${result.skipped.COMPRESSED} COMPRESSED records (perf record -z, zstd) were skipped with the samples inside them: record without -z, or run \`perf inject -i FILE -o OUT\` to decompress`);
  }
  return result;
}

function readAttr(r: Reader, at: number, end: number, field: string): PerfEventAttr {
  const type = r.u32(at, end, `${field}.type`);
  const size = r.u32(at + 4, end, `${field}.size`);
  // PERF_ATTR_SIZE_VER0 is 64 bytes; later fields exist only when the attr is that large.
  const lim = Math.min(end, at + size);
  const opt = (off: number, name: string): bigint => (at + off + 8 <= lim ? r.u64(at + off, end, `${field}.${name}`) : 0n);
  const flags = r.u64(at + 40, end, `${field}.flags`);
  const config = r.u64(at + 8, end, `${field}.config`);
  return {
    type,
    config,
    sampleType: r.u64(at + 24, end, `${field}.sample_type`),
    readFormat: r.u64(at + 32, end, `${field}.read_format`),
    branchSampleType: opt(72, 'branch_sample_type'),
    sampleRegsUser: opt(80, 'sample_regs_user'),
    sampleRegsIntr: opt(96, 'sample_regs_intr'),
    sampleIdAll: ((flags >> 18n) & 1n) === 1n,
    ids: [],
    name: eventName(type, config),
  };
}

function readFeature(r: Reader, bit: number, at: number, end: number, out: PerfDataResult): void {
  switch (bit) {
    case FEAT_HOSTNAME:
      out.hostname = r.str(at, end, 'hostname').value;
      return;
    case FEAT_OSRELEASE:
      out.osRelease = r.str(at, end, 'osrelease').value;
      return;
    case FEAT_ARCH:
      out.arch = r.str(at, end, 'arch').value;
      return;
    case FEAT_CMDLINE: {
      const nr = r.u32(at, end, 'cmdline.nr');
      const args: string[] = [];
      let p = at + 4;
      for (let i = 0; i < nr && p < end; i++) {
        const s = r.str(p, end, `cmdline[${i}]`);
        args.push(s.value);
        p = s.next;
      }
      out.cmdline = args;
      return;
    }
    case FEAT_EVENT_DESC: {
      // u32 nr, u32 attr_size, then per event: attr, u32 nr_ids, string name, u64 ids[nr_ids]
      const nr = r.u32(at, end, 'event_desc.nr');
      const sz = r.u32(at + 4, end, 'event_desc.attr_size');
      let p = at + 8;
      for (let i = 0; i < nr && p < end; i++) {
        r.need(p, sz, end, `event_desc[${i}].attr`);
        p += sz;
        const nrIds = r.u32(p, end, `event_desc[${i}].nr_ids`);
        const name = r.str(p + 4, end, `event_desc[${i}].name`);
        p = name.next;
        const ids: bigint[] = [];
        for (let k = 0; k < nrIds; k++) ids.push(r.u64(p + 8 * k, end, `event_desc[${i}].ids`));
        p += 8 * nrIds;
        // Name the attr these ids belong to (by id; by position when the file has no ids).
        const a = out.attrs.find((x) => x.ids.some((id) => ids.includes(id))) ?? (ids.length === 0 ? out.attrs[i] : undefined);
        if (a) a.name = name.value;
      }
      return;
    }
    case FEAT_BUILD_ID: {
      // build_id_event { perf_event_header; s32 pid; u8 build_id[24]; char filename[] }
      for (let p = at; p + 8 <= end; ) {
        const misc = r.u16(p + 4, end, 'build_id.misc');
        const size = r.u16(p + 6, end, 'build_id.size');
        if (size < 36 || p + size > end) throw new DumpError('bad_field', `offset ${p}: build_id record size ${size} does not fit its section`, { file: r.file, field: 'build_id.size' });
        const pid = r.u32(p + 8, end, 'build_id.pid') | 0;
        const raw = new Uint8Array(r.dv.buffer, r.dv.byteOffset + p + 12, 24);
        // PERF_RECORD_MISC_BUILD_ID_SIZE (bit 15): byte 20 holds the real length; else SHA-1's 20.
        const idLen = misc & 0x8000 ? Math.min(raw[20]!, 20) : 20;
        const name = new Uint8Array(r.dv.buffer, r.dv.byteOffset + p + 36, size - 36);
        let n = name.indexOf(0);
        if (n < 0) n = name.length;
        out.buildIds.push({ pid, cpumode: misc & 7, buildId: hex(raw.subarray(0, idLen)), filename: Buffer.from(name.subarray(0, n)).toString('utf8') });
        p += size;
      }
      return;
    }
    default:
  }
}

function readSample(
  r: Reader, at: number, end: number,
  attrs: PerfEventAttr[], byId: Map<bigint, PerfEventAttr>, comms: Map<number, string>, ctx: HostChainContext,
): Sample {
  let attr = attrs[0]!;
  if (attrs.length > 1) {
    // With several events the record says which one it is: IDENTIFIER comes first, else ID sits
    // after the fields before it (all attrs of one file agree on those, as perf requires).
    const st = attr.sampleType;
    let id: bigint | undefined;
    if (st & S.IDENTIFIER) id = r.u64(at, end, 'sample.identifier');
    else if (st & S.ID) {
      let off = 0;
      for (const b of [S.IP, S.TID, S.TIME, S.ADDR]) if (st & b) off += 8;
      id = r.u64(at + off, end, 'sample.id');
    }
    if (id !== undefined) {
      const a = byId.get(id);
      if (!a) throw new DumpError('bad_field', `sample id ${id} belongs to no event attribute`, { file: r.file, field: 'sample.id' });
      attr = a;
    }
  }
  const st = attr.sampleType;
  let p = at;
  const u64 = (field: string): bigint => {
    const v = r.u64(p, end, field);
    p += 8;
    return v;
  };
  const s: Sample = { trigger: attr.name, stacks: [] };
  if (st & S.IDENTIFIER) u64('sample.identifier');
  let ip: bigint | undefined;
  if (st & S.IP) ip = u64('sample.ip');
  if (st & S.TID) {
    s.pid = r.u32(p, end, 'sample.pid') | 0;
    s.tid = r.u32(p + 4, end, 'sample.tid') | 0;
    p += 8;
    const comm = comms.get(s.tid);
    if (comm !== undefined) s.comm = comm;
  }
  if (st & S.TIME) s.time = formatPerfTime(u64('sample.time'));
  if (st & S.ADDR) u64('sample.addr');
  if (st & S.ID) u64('sample.id');
  if (st & S.STREAM_ID) u64('sample.stream_id');
  if (st & S.CPU) {
    s.cpu = r.u32(p, end, 'sample.cpu');
    p += 8;
  }
  if (st & S.PERIOD) s.period = u64('sample.period');
  if (st & S.READ) {
    const rf = attr.readFormat;
    const per = 1 + (rf & FMT_ID ? 1 : 0) + (rf & FMT_LOST ? 1 : 0);
    const times = (rf & FMT_TOTAL_TIME_ENABLED ? 1 : 0) + (rf & FMT_TOTAL_TIME_RUNNING ? 1 : 0);
    if (rf & FMT_GROUP) {
      const nr = u64('sample.read.nr');
      skipWords(r, p, end, nr, times + 0, per, 'sample.read');
      p += 8 * (times + Number(nr) * per);
    } else p += 8 * (per + times);
    r.need(at, p - at, end, 'sample.read');
  }
  if (st & S.CALLCHAIN) {
    const nr = u64('sample.callchain.nr');
    if (nr > BigInt(Math.floor((end - p) / 8))) throw new DumpError('truncated', `offset ${p - 8}: callchain.nr ${nr} needs ${nr * 8n} bytes, the record has ${end - p} left`, { file: r.file, field: 'sample.callchain.nr' });
    const chain: CallchainEntry[] = [];
    for (let i = 0n; i < nr; i++) {
      const a = u64('sample.callchain.ips');
      // Context markers (PERF_CONTEXT_KERNEL, _USER, ...) say whose frames follow; perf script
      // prints none of them, and addresses tell kernel from user on x86-64.
      if (a >= PERF_CONTEXT_MAX) {
        if (a === PERF_CONTEXT_USER) ctx.endsInUserRegs = true;
        continue;
      }
      chain.push({ addr: a, flags: callchainFlags(a) });
    }
    // With --call-graph dwarf the kernel stores no user frames (exclude_callchain_user): a sample
    // taken in user mode then has no ip in its chain at all, and perf starts the chain at the ip.
    if (chain.length === 0 && ip !== undefined) chain.push({ addr: ip, flags: callchainFlags(ip) });
    s.callchain = chain;
  } else if (ip !== undefined) {
    s.callchain = [{ addr: ip, flags: callchainFlags(ip) }];
  }
  if (st & S.RAW) {
    const size = r.u32(p, end, 'sample.raw.size');
    r.need(p + 4, size, end, 'sample.raw');
    p += 4 + size;
  }
  if (st & S.BRANCH_STACK) {
    const nr = u64('sample.branch_stack.nr');
    if (attr.branchSampleType & BRANCH_HW_INDEX) u64('sample.branch_stack.hw_idx');
    const per = 3 + (attr.branchSampleType & BRANCH_COUNTERS ? 1 : 0);
    if (nr > BigInt(Math.floor((end - p) / (8 * per)))) throw new DumpError('truncated', `offset ${p}: branch_stack.nr ${nr} does not fit the record`, { file: r.file, field: 'sample.branch_stack.nr' });
    p += Number(nr) * 8 * per;
  }
  if (st & S.REGS_USER) {
    const abi = u64('sample.regs_user.abi');
    // ABI_NONE only for kernel threads: any other task's kernel stack ends at its user-mode
    // pt_regs, even when its user callchain was not recorded (--call-graph dwarf).
    if (abi !== 0n) {
      p += 8 * popcount(attr.sampleRegsUser);
      ctx.endsInUserRegs = true;
    }
    r.need(at, p - at, end, 'sample.regs_user');
  }
  if (st & S.STACK_USER) {
    const size = u64('sample.stack_user.size');
    if (size > BigInt(end - p)) throw new DumpError('truncated', `offset ${p - 8}: stack_user.size ${size} runs past the record`, { file: r.file, field: 'sample.stack_user.size' });
    p += Number(size);
    if (size !== 0n) u64('sample.stack_user.dyn_size');
  }
  if (st & (S.WEIGHT | S.WEIGHT_STRUCT)) u64('sample.weight');
  if (st & S.DATA_SRC) u64('sample.data_src');
  if (st & S.TRANSACTION) u64('sample.transaction');
  if (st & S.REGS_INTR) {
    const abi = u64('sample.regs_intr.abi');
    if (abi !== 0n) {
      const regs: Regs = {};
      for (let bit = 0; bit < 64; bit++) {
        if (((attr.sampleRegsIntr >> BigInt(bit)) & 1n) === 0n) continue;
        const v = u64(`sample.regs_intr[${bit}]`);
        const f = X86_REGS[bit];
        if (f !== undefined) regs[f] = v;
      }
      s.regs = regs;
    }
  }
  return s;
}

/** Bounds check for a read_format group: nr entries of `per` words after `times` words. */
function skipWords(r: Reader, p: number, end: number, nr: bigint, times: number, per: number, field: string): void {
  const words = BigInt(times) + nr * BigInt(per);
  if (words * 8n > BigInt(end - p)) throw new DumpError('truncated', `offset ${p}: ${field} needs ${words * 8n} bytes, the record has ${end - p}`, { file: r.file, field });
}
