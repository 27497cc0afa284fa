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
  return alignN(trace, trace.length, ref);
}

// The LCS table is reused across calls (it is rebuilt for every mismatch); only the cells the
// recurrence reads without writing — row n and column m — need zeroing.
let table = new Uint16Array(1024);

/** align over the first n entries of trace (judge passes a reused buffer longer than the trace). */
export function alignN(trace: ArrayLike<number>, n: number, ref: readonly RefFrame[]): Alignment {
  const m = ref.length;
  if (n === m) {
    let same = true;
    for (let i = 0; i < n; i++) if (trace[i] !== ref[i]!.ipS) { same = false; break; }
    if (same) return { missing: [], extra: [], prefix: true };
  }
  // LCS table over (n+1) x (m+1); n, m ≤ a few hundred.
  const w = m + 1;
  const cells = (n + 1) * w;
  if (table.length < cells) table = new Uint16Array(Math.max(cells, table.length * 2));
  const t = table;
  t.fill(0, n * w, cells);
  for (let i = 0; i < n; i++) t[i * w + m] = 0;
  // The reference ips, read once per row below rather than through the frame objects.
  const refIp = refScratch(ref);
  for (let i = n - 1; i >= 0; i--) {
    const ti = trace[i];
    const row = i * w;
    const below = row + w;
    for (let j = m - 1; j >= 0; j--) {
      t[row + j] = ti === refIp[j] ? t[below + j + 1]! + 1 : Math.max(t[below + j]!, t[row + j + 1]!);
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
    const eq = trace[i] === refIp[j];
    if (eq && ref[j]!.tolerated && t[i * w + j + 1]! === t[i * w + j]!) {
      missing.push(j++);
    } else if (eq) {
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
  let prefix = true;
  for (let k = 0; k < missing.length; k++) {
    const r = missing[k]!;
    if (!(r > lastMatchedRef || ref[r]!.tolerated)) { prefix = false; break; }
  }
  return { missing, extra, prefix };
}

let refIps = new Float64Array(256);

function refScratch(ref: readonly RefFrame[]): Float64Array {
  if (refIps.length < ref.length) refIps = new Float64Array(Math.max(ref.length, refIps.length * 2));
  const out = refIps;
  for (let j = 0; j < ref.length; j++) out[j] = ref[j]!.ipS;
  return out;
}
