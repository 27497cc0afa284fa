// The address space of one sample as an unwinder sees it: the stacks the sample declares, with
// the bytes it captured. Positions on a stack are "linear" numbers — stack index * STRIDE +
// offset — so that frame arithmetic stays in plain doubles (exact) while absolute addresses,
// which exceed 2^53, only appear as bigint at the edges.
import type { Sample } from '../dump/sample.ts';
import { linkFromTop, STACK_TYPES, type StackType } from '../stack/layout.ts';
import { bigFromHalves } from '../u64.ts';

export const STRIDE = 2 ** 32;
const TWO32 = 4294967296;

interface Win {
  off: number;
  len: number;
  view: DataView;
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

  constructor(sample: Sample) {
    this.stacks = sample.stacks.map((st, i) => {
      const size = Number(st.end - st.begin);
      return {
        type: st.type,
        typeBit: 1 << STACK_TYPES.indexOf(st.type),
        begin: st.begin,
        end: st.end,
        beginHi: Number(st.begin >> 32n),
        beginLo: Number(st.begin & 0xffffffffn),
        size,
        base: i * STRIDE,
        linkFromTop: linkFromTop(st.type) ?? -1,
        wins: st.windows.map((w) => ({
          off: Number(w.start - st.begin),
          len: w.bytes.length,
          view: new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength),
        })),
      };
    });
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
        this.lo = w.view.getUint32(o, true);
        this.hi = w.view.getUint32(o + 4, true);
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
