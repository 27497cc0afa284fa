// Compares an unwound trace with a reference chain (ground truth or the host's own callchain):
// which reference frames were lost, which frames the unwinder invented. Traces are short (≤ 128
// frames) and usually identical, so the common case is one linear pass; only a mismatch pays for
// the longest-common-subsequence alignment.

export interface RefFrame {
  ipS: number;
  /** 'regs' frames are the interrupted functions of entries. */
  kind: string;
  tolerated: boolean;
}

export interface Alignment {
  /** Indices into the reference that the trace lacks. */
  missing: number[];
  /** Indices into the trace that the reference lacks. */
  extra: number[];
  /** True when every matched reference frame precedes every missing non-tolerated one: a prefix. */
  prefix: boolean;
}

export function align(trace: ArrayLike<number>, ref: readonly RefFrame[]): Alignment {
  const n = trace.length;
  const m = ref.length;
  if (n === m) {
    let same = true;
    for (let i = 0; i < n; i++) if (trace[i] !== ref[i]!.ipS) { same = false; break; }
    if (same) return { missing: [], extra: [], prefix: true };
  }
  // LCS table over (n+1) x (m+1); n, m ≤ a few hundred.
  const w = m + 1;
  const t = new Uint16Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      t[i * w + j] = trace[i] === ref[j]!.ipS ? t[(i + 1) * w + j + 1]! + 1 : Math.max(t[(i + 1) * w + j]!, t[i * w + j + 1]!);
    }
  }
  const missing: number[] = [];
  const extra: number[] = [];
  let lastMatchedRef = -1;
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    // With repeated ips (recursion), a tolerated reference frame that can be skipped without
    // shortening the common subsequence is the one to call missing, not a required twin of it.
    if (trace[i] === ref[j]!.ipS && ref[j]!.tolerated && t[i * w + j + 1]! === t[i * w + j]!) {
      missing.push(j++);
    } else if (trace[i] === ref[j]!.ipS) {
      lastMatchedRef = j;
      i++;
      j++;
    } else if (t[(i + 1) * w + j]! >= t[i * w + j + 1]!) {
      extra.push(i++);
    } else {
      missing.push(j++);
    }
  }
  while (i < n) extra.push(i++);
  while (j < m) missing.push(j++);
  const prefix = missing.every((k) => k > lastMatchedRef || ref[k]!.tolerated);
  return { missing, extra, prefix };
}
