// Hex digits for the dump scanners (text.ts, batch-transcode.ts): a 64-bit number read into two 32-bit
// halves, so the hot paths make no BigInt per word.

/**
 * Digit values indexed by any UTF-16 code unit, so the digit loops need no range check; -1 ORed
 * into an accumulator marks a bad digit without a branch per character.
 */
export const HEX_DIGITS = new Int8Array(65536).fill(-1);
for (let c = 0; c < 10; c++) HEX_DIGITS[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX_DIGITS[0x61 + c] = 10 + c;
  HEX_DIGITS[0x41 + c] = 10 + c;
}

/** Reads 1–16 hex digits into hi:lo; one instance per scanner, so reading allocates nothing. */
export class HexReader {
  hi = 0;
  lo = 0;

  /** t[from, to) as hex into hi:lo. False when malformed or wider than 64 bits. */
  read(t: string, from: number, to: number): boolean {
    const n = to - from;
    if (n <= 0 || n > 16) return false;
    let hi = 0;
    let lo = 0;
    let bad = 0;
    const split = n > 8 ? to - 8 : from; // digits left of split belong to the high half
    for (let i = from; i < split; i++) {
      const d = HEX_DIGITS[t.charCodeAt(i)]!;
      hi = (hi << 4) | d;
      bad |= d;
    }
    for (let i = split; i < to; i++) {
      const d = HEX_DIGITS[t.charCodeAt(i)]!;
      lo = (lo << 4) | d;
      bad |= d;
    }
    if (bad < 0) return false;
    this.hi = hi >>> 0;
    this.lo = lo >>> 0;
    return true;
  }
}
