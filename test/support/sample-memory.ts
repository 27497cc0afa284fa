// Reading a sample's captured memory the plain way (no unwinder involved), for tests that check a
// walk's claims against the bytes themselves.
import type { Sample, SampleStack } from '../../services/core/dump/sample.ts';

/** A u64 of the sample's captured memory, read straight from its windows; undefined where none was captured. */
export function word(st: SampleStack, addr: bigint): bigint | undefined {
  for (const w of st.windows) {
    const off = Number(addr - w.start);
    if (off >= 0 && off + 8 <= w.bytes.length) return new DataView(w.bytes.buffer, w.bytes.byteOffset + off, 8).getBigUint64(0, true);
  }
  return undefined;
}

/** CPL 0 in the sampled cs: the sample interrupted the kernel. */
export function kernelMode(s: Sample): boolean {
  return ((s.regs?.cs ?? 3n) & 3n) === 0n;
}
