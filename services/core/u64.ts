// 64-bit values are exact everywhere: kernel addresses exceed 2^53, so a JS number would round them.
// Public APIs carry bigint. Hot paths (the unwinders) split words into 32-bit halves and use the
// "signed" form below, which is exact for every address within 2^53 of either end of the address
// space — all kernel text, modules and the top-of-address-space areas.

export const U64_MASK = (1n << 64n) - 1n;
const TWO32 = 4294967296;

export function formatHex64(v: bigint): string {
  return v.toString(16).padStart(16, '0');
}

export function formatHex(v: bigint | number): string {
  return '0x' + v.toString(16);
}

const HEX_RE = /^(?:0x)?[0-9a-fA-F]{1,16}$/;

/** Parses an unsigned hex number of at most 64 bits (optional 0x). Returns undefined when malformed. */
export function parseHex64(s: string): bigint | undefined {
  if (!HEX_RE.test(s)) return undefined;
  return BigInt(s.startsWith('0x') || s.startsWith('0X') ? s : '0x' + s);
}

/** x86-64 canonical with 48-bit virtual addresses: bits 63..47 all equal. */
export function isCanonical48(v: bigint): boolean {
  const top = v >> 47n;
  return top === 0n || top === 0x1ffffn;
}

/** x86-64 canonical with 57-bit virtual addresses (LA57): bits 63..56 all equal. */
export function isCanonical57(v: bigint): boolean {
  const top = v >> 56n;
  return top === 0n || top === 0xffn;
}

export function isKernelHalf(v: bigint): boolean {
  return (v >> 63n) === 1n;
}

/**
 * The signed form of a 64-bit word given as two unsigned 32-bit halves: the value as an int64.
 * Exact when |result| < 2^53, i.e. hi within [-2^21, 2^21) once sign-extended; callers treat
 * anything outside as "not text" (no kernel text lives there).
 */
export function signedOf(hi: number, lo: number): number {
  return (hi | 0) * TWO32 + lo;
}

// A bigint stored into a BigUint64Array is reduced mod 2^64 without allocating, and its halves
// read back as plain numbers: about twice as fast as asIntN/shift/mask, each of which makes a bigint.
const B64 = new BigUint64Array(1);
const W32 = new Uint32Array(B64.buffer);
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LO_W = LITTLE ? 0 : 1;
const HI_W = LITTLE ? 1 : 0;

/**
 * Number(BigInt.asIntN(64, v)), bit for bit: hi * 2^32 is exact, so the one addition rounds the
 * exact int64 to nearest-even just as Number() does.
 */
export function signedFromBig(v: bigint): number {
  B64[0] = v;
  return (W32[HI_W]! | 0) * TWO32 + W32[LO_W]!;
}

/** Inverse of signedOf for exact values. */
export function bigFromSigned(s: number): bigint {
  return BigInt.asUintN(64, BigInt(s));
}

export function bigFromHalves(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** True when the signed form is exact (fits in a double without rounding). */
export function isExactSigned(s: number): boolean {
  return Number.isSafeInteger(s);
}
