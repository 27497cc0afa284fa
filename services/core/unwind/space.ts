// The address space of one sample as an unwinder sees it: the stacks the sample declares, with
// the bytes it captured. Positions on a stack are "linear" numbers — stack index * STRIDE +
// offset — so that frame arithmetic stays in plain doubles (exact) while absolute addresses,
// which exceed 2^53, only appear as bigint at the edges.
import type { Regs, Sample } from '../dump/sample.ts';
import { linkFromTop, STACK_TYPES, userMode, type StackType } from '../stack/layout.ts';
import { bigFromHalves, signedFromBig } from '../u64.ts';

// One store into a BigUint64Array yields both 32-bit halves of a u64 without making a bigint.
const B64 = new BigUint64Array(1);
const W32 = new Uint32Array(B64.buffer);
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LO_W = LITTLE ? 0 : 1;
const HI_W = LITTLE ? 1 : 0;

export const STRIDE = 2 ** 32;
const TWO32 = 4294967296;

interface Win {
  off: number;
  len: number;
  bytes: Uint8Array;
}

export interface SpaceStack {
  type: StackType;
  typeBit: number;
  begin: bigint;
  end: bigint;
  beginHi: number;
  beginLo: number;
  size: number;
  base: number;
  /** Where the link word sits below the end, or -1 for stacks that link to nothing. */
  linkFromTop: number;
  wins: Win[];
}

export class StackSpace {
  readonly stacks: SpaceStack[];
  /** Halves of the last word read. */
  hi = 0;
  lo = 0;

  /** The sample's registers in the walkers' number forms (see sampledRegs). */
  private regsSeen: Regs | undefined;
  regSpLin = -1;
  regIpS = NaN;
  regBpHi = 0;
  regBpLo = 0;
  regUser = false;

  constructor(sample: Sample) {
    // Differences of u64 values from their 32-bit halves: hi * 2^32 is exact, so each sum is the
    // exact difference rounded once, as Number(a - b) rounds it.
    const src = sample.stacks;
    if (!allU64(src)) {
      this.stacks = src.map((st, i) => exactStack(st, i));
      return;
    }
    const stacks: SpaceStack[] = new Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const st = src[i]!;
      B64[0] = st.begin;
      const bh = W32[HI_W]!;
      const bl = W32[LO_W]!;
      const ws = st.windows;
      const wins: Win[] = new Array(ws.length);
      for (let k = 0; k < ws.length; k++) {
        const w = ws[k]!;
        B64[0] = w.start;
        wins[k] = { off: (W32[HI_W]! - bh) * TWO32 + (W32[LO_W]! - bl), len: w.bytes.length, bytes: w.bytes };
      }
      B64[0] = st.end;
      stacks[i] = {
        type: st.type,
        typeBit: 1 << STACK_TYPES.indexOf(st.type),
        begin: st.begin,
        end: st.end,
        beginHi: bh,
        beginLo: bl,
        size: (W32[HI_W]! - bh) * TWO32 + (W32[LO_W]! - bl),
        base: i * STRIDE,
        linkFromTop: linkFromTop(st.type) ?? -1,
        wins,
      };
    }
    this.stacks = stacks;
  }

  /**
   * Converts the sampled ip, sp and bp once per sample rather than once per strategy (bigint work
   * is the costly part of starting a walk). Requires r.ip and r.sp.
   */
  sampledRegs(r: Regs): void {
    if (this.regsSeen === r) return;
    this.regsSeen = r;
    this.regSpLin = this.locateBig(r.sp!, 0);
    this.regIpS = signedFromBig(r.ip!);
    this.regUser = r.cs !== undefined && userMode(r.cs);
    if (r.bp !== undefined) {
      this.regBpHi = Number(r.bp >> 32n);
      this.regBpLo = Number(r.bp & 0xffffffffn);
    }
  }

  /**
   * Linear position of the address given as 32-bit halves, if [addr, addr+len) lies on one stack
   * (the kernel's on_stack()); -1 otherwise. len 0 accepts the stack's end itself (an empty stack).
   */
  locate(hi: number, lo: number, len: number): number {
    const ss = this.stacks;
    for (let i = 0; i < ss.length; i++) {
      const s = ss[i]!;
      const off = (hi - s.beginHi) * TWO32 + (lo - s.beginLo);
      if (off >= 0 && off + len <= s.size && (len > 0 || off <= s.size)) return s.base + off;
    }
    return -1;
  }

  locateBig(addr: bigint, len: number): number {
    return this.locate(Number(addr >> 32n), Number(addr & 0xffffffffn), len);
  }

  stackAt(lin: number): SpaceStack {
    return this.stacks[Math.floor(lin / STRIDE)]!;
  }

  /** True when [lin, lin+len) is on the stack that holds lin (within its bounds). */
  fits(lin: number, len: number): boolean {
    const s = this.stacks[Math.floor(lin / STRIDE)];
    return s !== undefined && lin - s.base + len <= s.size;
  }

  /** Reads the u64 at lin into hi/lo. False when those bytes were not captured. */
  read(lin: number): boolean {
    const s = this.stacks[Math.floor(lin / STRIDE)];
    if (s === undefined) return false;
    const off = lin - s.base;
    const wins = s.wins;
    for (let i = 0; i < wins.length; i++) {
      const w = wins[i]!;
      const o = off - w.off;
      if (o >= 0 && o + 8 <= w.len) {
        // Little-endian words straight from the bytes: a DataView per window cost more than the reads.
        const b = w.bytes;
        this.lo = (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
        this.hi = (b[o + 4]! | (b[o + 5]! << 8) | (b[o + 6]! << 16) | (b[o + 7]! << 24)) >>> 0;
        return true;
      }
    }
    return false;
  }

  captured(lin: number, len: number): boolean {
    const s = this.stacks[Math.floor(lin / STRIDE)];
    if (s === undefined) return false;
    const off = lin - s.base;
    for (const w of s.wins) if (off >= w.off && off + len <= w.off + w.len) return true;
    return false;
  }

  readBig(lin: number): bigint | undefined {
    return this.read(lin) ? bigFromHalves(this.hi, this.lo) : undefined;
  }

  addressOf(lin: number): bigint {
    const s = this.stackAt(lin);
    return s.begin + BigInt(lin - s.base);
  }

  /** Linear position of the stack's end (one past its last byte). */
  endOf(s: SpaceStack): number {
    return s.base + s.size;
  }

  /**
   * Where the link word of a stack sits: the IRQ stack keeps the interrupted rsp in its top word;
   * an IST stack holds the hardware frame at its top, whose saved RSP is 16 bytes below the end.
   */
  linkSlot(s: SpaceStack): number {
    return s.linkFromTop < 0 ? -1 : s.base + s.size - s.linkFromTop;
  }

  byType(type: StackType): SpaceStack | undefined {
    return this.stacks.find((s) => s.type === type);
  }
}

const U64_END = 1n << 64n;

function isU64(v: bigint): boolean {
  return v >= 0n && v < U64_END;
}

/** The halves arithmetic above holds for u64 values; anything else takes the exact bigint route. */
function allU64(src: Sample['stacks']): boolean {
  for (let i = 0; i < src.length; i++) {
    const st = src[i]!;
    if (!isU64(st.begin) || !isU64(st.end)) return false;
    for (let k = 0; k < st.windows.length; k++) if (!isU64(st.windows[k]!.start)) return false;
  }
  return true;
}

function exactStack(st: Sample['stacks'][number], i: number): SpaceStack {
  return {
    type: st.type,
    typeBit: 1 << STACK_TYPES.indexOf(st.type),
    begin: st.begin,
    end: st.end,
    beginHi: Number(st.begin >> 32n),
    beginLo: Number(st.begin & 0xffffffffn),
    size: Number(st.end - st.begin),
    base: i * STRIDE,
    linkFromTop: linkFromTop(st.type) ?? -1,
    wins: st.windows.map((w) => ({ off: Number(w.start - st.begin), len: w.bytes.length, bytes: w.bytes, view: undefined })),
  };
}
