// xorshift32: a small deterministic generator for the fuzz tests, so that a failing seed
// reproduces exactly. Returns numbers in [0, 1).
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}
