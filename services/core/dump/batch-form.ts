// The binary batch form: what the API hands the checker workers. The API reads an upload once
// (text, JSON, NDJSON) and writes its accepted samples here; a worker decodes them without parsing
// any text: numbers are fixed-width little-endian, strings carry their length, and each stack
// window's bytes are a view into the batch (no copy). Layout: docs/dump-format.md, "Binary batch
// form".
//
// A batch is a header and one record per sample. A record is self-contained (its own length,
// version and input index), so it can be sliced out of a batch and stored alone as a trace's sample.
// Inside a record the fields are tagged and may come in any order: the text transcoder writes each
// extension line's field the moment it reads the line, with no per-sample staging.
//
// This module holds what every side of the form shares: its constants, tags and closed name lists,
// and the magic test. The sides have their own modules: batch-encode.ts (Samples -> bytes),
// batch-decode.ts (bytes -> Samples) and batch-transcode.ts (dump text -> bytes in one pass).
import type { Rejection } from './errors.ts';
import {
  CALLCHAIN_FLAGS, TOLERANCES, TRUTH_KINDS,
  type CallchainFlag, type FrameKind, type Sample, type Tolerance,
} from './sample.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type PtRegsField, type StackType } from '../stack/layout.ts';

/** What the API needs to know about one usable sample (what the API's 202 is built from). */
export interface BatchSampleInfo {
  /** Index in the input, counting rejected samples too (the parser's numbering). */
  index: number;
  /** Line of the sample's header (source.line; 0 when the sample has no source). */
  line: number;
  kernel: string | undefined;
  /** Registers (ip and sp) and at least one stack: hasFullState of the sample. */
  fullState: boolean;
}

export interface EncodedBatch {
  bytes: Uint8Array;
  samples: BatchSampleInfo[];
  rejected: Rejection[];
  /** True when the transcoder's fast path proved the whole text; false when a parser judged it. */
  fast: boolean;
}

// ---------------------------------------------------------------------------------------------
// Format constants

/** "\x89SSB": the high first byte is neither text nor gzip (1f 8b), so legacy bodies never match. */
export const MAGIC0 = 0x89, MAGIC1 = 0x53, MAGIC2 = 0x53, MAGIC3 = 0x42;
export const BATCH_VERSION = 1;
/** magic(4) version(1) reserved(3) count(4) */
export const BATCH_HEADER = 12;
/** u32 length of the rest, u8 record version, u32 index. */
export const RECORD_HEAD = 9;

// Field tags inside a record.
export const T_COMM = 1, T_PID = 2, T_TID = 3, T_CPU = 4, T_TIME = 5, T_PERIOD = 6, T_TRIGGER = 7;
export const T_HOST = 8, T_KERNEL = 9, T_REGS = 10, T_STACK = 11, T_WINDOW = 12, T_CALLCHAIN = 13;
export const T_TRUTH = 14, T_FRAME = 15, T_SOURCE = 16, T_UNDEF = 17;
/** Optional Sample keys by tag, for T_UNDEF (a key present with the value undefined). */
export const UNDEF_KEYS: Record<number, keyof Sample> = {
  [T_COMM]: 'comm', [T_PID]: 'pid', [T_TID]: 'tid', [T_CPU]: 'cpu', [T_TIME]: 'time', [T_PERIOD]: 'period',
  [T_HOST]: 'host', [T_KERNEL]: 'kernel', [T_REGS]: 'regs', [T_CALLCHAIN]: 'callchain', [T_TRUTH]: 'truth', [T_SOURCE]: 'source',
};
export const OTHER = 0xff; // an enum byte that is followed by the value as a string (not in the closed list)
export const REG_UNDEF = 0x80; // regs: the field's key is present with the value undefined
// Entry bits (callchain entries, truth frames): key present, key present but undefined.
export const HAS_A = 1, HAS_B = 2, UNDEF_A = 4, UNDEF_B = 8;

export const TWO32 = 4294967296;

// The closed name lists an enum byte indexes, and each name's code.
export const REG_NAMES: readonly PtRegsField[] = PT_REGS_FIELDS;
export const STACK_NAMES: readonly StackType[] = STACK_TYPES;
export const KIND_NAMES: readonly FrameKind[] = TRUTH_KINDS;
export const TOL_NAMES: readonly Tolerance[] = TOLERANCES;
export const FLAG_NAMES: readonly CallchainFlag[] = CALLCHAIN_FLAGS;
export const REG_INDEX = new Map<string, number>(REG_NAMES.map((f, i) => [f, i]));
export const STACK_INDEX = new Map<string, number>(STACK_NAMES.map((f, i) => [f, i]));
export const KIND_INDEX = new Map<string, number>(KIND_NAMES.map((f, i) => [f, i]));
export const TOL_INDEX = new Map<string, number>(TOL_NAMES.map((f, i) => [f, i]));
export const FLAG_INDEX = new Map<string, number>(FLAG_NAMES.map((f, i) => [f, i]));

/** True when the bytes start with this form's magic (so a worker can tell it from legacy text/gzip bodies). */
export function isEncodedBatch(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === MAGIC0 && bytes[1] === MAGIC1 && bytes[2] === MAGIC2 && bytes[3] === MAGIC3;
}

/** The form version of a binary batch (its fifth byte), or undefined for bytes that are not one. */
export function batchFormVersion(bytes: Uint8Array): number | undefined {
  return isEncodedBatch(bytes) && bytes.length > 4 ? bytes[4] : undefined;
}
