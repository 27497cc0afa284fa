// Whether a kernel build keeps frame pointers, from what its image says about itself. Three kinds
// of evidence, in the order they are trusted (docs/real-kernel.md, "Frame pointers"):
//  1. its own config (CONFIG_IKCONFIG's embedded .config): the build's declared intent;
//  2. its ORC table: what objtool saw the compiler do with rbp, function by function;
//  3. its code: whether function prologues set up a frame (`push %rbp; mov %rsp,%rbp`).
// Pure: the adapter finds the config text, the table and the function bytes in the image.
import { ORC_REG, ORC_TYPE, type OrcTable } from '../unwind/orc-table.ts';

export type FramePointerSource = 'config' | 'orc' | 'code';

export interface FramePointerEvidence {
  source: FramePointerSource;
  /** What this evidence says; undefined when it cannot tell. */
  framePointers: boolean | undefined;
  /** One sentence with the figures it rests on, for notes and the JSON output. */
  detail: string;
}

/**
 * CONFIG_FRAME_POINTER from a kernel .config. On x86 it is on exactly when the frame-pointer
 * unwinder is chosen (UNWINDER_FRAME_POINTER selects it; with UNWINDER_ORC it cannot be set), so
 * either line settles it; a config that names neither (not an x86 .config?) cannot tell.
 */
export function framePointersFromConfig(config: string): FramePointerEvidence {
  const set = (name: string): boolean => new RegExp(`^CONFIG_${name}=y$`, 'm').test(config);
  const known = (name: string): boolean => new RegExp(`^(CONFIG_${name}=|# CONFIG_${name} is not set$)`, 'm').test(config);
  const unwinder = set('UNWINDER_ORC') ? 'UNWINDER_ORC' : set('UNWINDER_FRAME_POINTER') ? 'UNWINDER_FRAME_POINTER' : set('UNWINDER_GUESS') ? 'UNWINDER_GUESS' : undefined;
  const uw = unwinder ? `, CONFIG_${unwinder}=y` : '';
  if (set('FRAME_POINTER') || set('UNWINDER_FRAME_POINTER')) {
    return { source: 'config', framePointers: true, detail: `embedded kernel config: CONFIG_FRAME_POINTER=y${uw}` };
  }
  if (known('FRAME_POINTER') || unwinder !== undefined) {
    return { source: 'config', framePointers: false, detail: `embedded kernel config: CONFIG_FRAME_POINTER not set${uw}` };
  }
  return { source: 'config', framePointers: undefined, detail: 'embedded kernel config names neither CONFIG_FRAME_POINTER nor an x86 unwinder' };
}

/**
 * Thresholds on the share of CALL rows whose CFA is rbp-based. A framed function's body is one
 * such row (objtool moves the CFA base to rbp at `mov %rsp,%rbp`, and no later push or sub moves
 * rbp) against about two sp-based rows per return path (entry, after `push %rbp`, after the
 * epilogue): a quarter to a half of the rows. Without frame pointers only functions that need
 * rbp as a frame anyway (stack realignment, variable-length arrays) have such rows: ~1 % on
 * Debian's 6.1. Between the two the table cannot tell.
 */
export const ORC_FP_MIN_SHARE = 0.15;
export const ORC_NOFP_MAX_SHARE = 0.05;
/** Fewer CALL rows than this (a hand-made or truncated table) is no evidence either way. */
export const ORC_MIN_ROWS = 200;

export interface OrcFrameStats {
  /** CALL rows (the rows of ordinary function code; entry code and hints are left out). */
  callRows: number;
  /** Of those, the rows whose CFA is rbp + offset (sp_reg = ORC_REG_BP). */
  bpCfaRows: number;
}

export function orcFrameStats(t: OrcTable): OrcFrameStats {
  let callRows = 0;
  let bpCfaRows = 0;
  for (let i = 0; i < t.length; i++) {
    if (t.type[i] !== ORC_TYPE.CALL) continue;
    callRows++;
    if (t.spReg[i] === ORC_REG.BP) bpCfaRows++;
  }
  return { callRows, bpCfaRows };
}

export function framePointersFromOrc(t: OrcTable): FramePointerEvidence {
  const { callRows, bpCfaRows } = orcFrameStats(t);
  const share = callRows > 0 ? bpCfaRows / callRows : 0;
  const figures = `${bpCfaRows} of ${callRows} ORC call rows (${pct(share)}) take the CFA from rbp`;
  if (callRows < ORC_MIN_ROWS) return { source: 'orc', framePointers: undefined, detail: `${figures}: too few rows to tell` };
  if (share >= ORC_FP_MIN_SHARE) return { source: 'orc', framePointers: true, detail: `${figures} (a frame-pointer build has >= ${pct(ORC_FP_MIN_SHARE)})` };
  if (share <= ORC_NOFP_MAX_SHARE) return { source: 'orc', framePointers: false, detail: `${figures} (a frame-pointer build has >= ${pct(ORC_FP_MIN_SHARE)})` };
  return { source: 'orc', framePointers: undefined, detail: `${figures}: between ${pct(ORC_NOFP_MAX_SHARE)} and ${pct(ORC_FP_MIN_SHARE)}, cannot tell` };
}

/**
 * True when a function's first bytes set up a frame: `push %rbp; mov %rsp,%rbp` (55 48 89 e5, or
 * the 48 8b ec encoding of the mov), after what may precede it at a kernel function's entry: an
 * `endbr64` (IBT), and the 5-byte `call __fentry__` or the nop it is patched to (ftrace).
 */
export function startsWithFrame(b: Uint8Array): boolean {
  let i = 0;
  for (let k = 0; k < 3; k++) {
    if (b[i] === 0xf3 && b[i + 1] === 0x0f && b[i + 2] === 0x1e && b[i + 3] === 0xfa) i += 4; // endbr64
    else if (b[i] === 0xe8) i += 5; // call rel32 (__fentry__)
    else if (b[i] === 0x0f && b[i + 1] === 0x1f && b[i + 2] === 0x44 && b[i + 3] === 0x00 && b[i + 4] === 0x00) i += 5; // nopl 0(%rax,%rax,1)
    else break;
  }
  return b[i] === 0x55 && b[i + 1] === 0x48 && ((b[i + 2] === 0x89 && b[i + 3] === 0xe5) || (b[i + 2] === 0x8b && b[i + 3] === 0xec));
}

/**
 * Thresholds on the share of sampled functions that open with a frame. With frame pointers the
 * compiler frames every C function (the kernel builds with -fno-omit-frame-pointer and keeps
 * leaf frames), so only assembly lowers the share; without them only the functions that need a
 * frame anyway have one: 2.5 % of Debian 6.1's text functions.
 */
export const CODE_FP_MIN_SHARE = 0.5;
export const CODE_NOFP_MAX_SHARE = 0.15;
export const CODE_MIN_FUNCTIONS = 50;

/** `starts`: the first bytes (16 are plenty) of each sampled function. */
export function framePointersFromCode(starts: readonly Uint8Array[]): FramePointerEvidence {
  const n = starts.length;
  const framed = starts.filter(startsWithFrame).length;
  const share = n > 0 ? framed / n : 0;
  const figures = `${framed} of ${n} sampled text functions (${pct(share)}) open with push %rbp; mov %rsp,%rbp`;
  if (n < CODE_MIN_FUNCTIONS) return { source: 'code', framePointers: undefined, detail: `${figures}: too few functions to tell` };
  if (share >= CODE_FP_MIN_SHARE) return { source: 'code', framePointers: true, detail: `${figures} (>= ${pct(CODE_FP_MIN_SHARE)}: framed)` };
  if (share <= CODE_NOFP_MAX_SHARE) return { source: 'code', framePointers: false, detail: `${figures} (a frame-pointer build frames >= ${pct(CODE_FP_MIN_SHARE)})` };
  return { source: 'code', framePointers: undefined, detail: `${figures}: between ${pct(CODE_NOFP_MAX_SHARE)} and ${pct(CODE_FP_MIN_SHARE)}, cannot tell` };
}

export interface FramePointerDecision {
  framePointers: boolean | undefined;
  /** The evidence the answer rests on: the first conclusive one in trust order. */
  used: FramePointerEvidence | undefined;
  /** Conclusive evidence that says the opposite (worth a warning: a patched build, or a wrong file). */
  disagreeing: FramePointerEvidence[];
}

const ORDER: readonly FramePointerSource[] = ['config', 'orc', 'code'];

export function decideFramePointers(evidence: readonly FramePointerEvidence[]): FramePointerDecision {
  const sorted = [...evidence].sort((a, b) => ORDER.indexOf(a.source) - ORDER.indexOf(b.source));
  const used = sorted.find((e) => e.framePointers !== undefined);
  const disagreeing = used ? sorted.filter((e) => e.framePointers !== undefined && e.framePointers !== used.framePointers) : [];
  return { framePointers: used?.framePointers, used, disagreeing };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`;
}
