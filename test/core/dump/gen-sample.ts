// fast-check arbitraries for valid samples: every generated Sample passes validateSample, so a
// codec test can demand a lossless round trip without filtering.
import fc from 'fast-check';
import {
  CALLCHAIN_FLAGS,
  TOLERANCES,
  TRUTH_KINDS,
  type CallchainEntry,
  type GroundTruth,
  type Regs,
  type Sample,
  type SampleStack,
  type StackWindow,
  type TruthFrame,
} from '../../../services/core/dump/sample.ts';
import { MAX_STACK_SIZE } from '../../../services/core/dump/validate.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type StackType } from '../../../services/core/stack/layout.ts';
import { U64_MASK } from '../../../services/core/u64.ts';

const STACK_ROOM = BigInt(MAX_STACK_SIZE);

// Three disjoint, canonical (LA57) regions, one per stack slot, so up to three stacks never overlap
// and sp can sit on any of them. The last slot reaches the top of the address space, where a
// double would round every address.
const SLOTS: ReadonlyArray<readonly [bigint, bigint]> = [
  [0x0000000000001000n, (1n << 56n) - STACK_ROOM],
  [0xff00000000000000n, 0xffffc8ffffffffffn - STACK_ROOM],
  [0xffffc90000000000n, U64_MASK - STACK_ROOM],
];

/** Any unsigned 64-bit value, with the edges (0, 2^53±1, 2^64-1) likely. */
export const arbU64 = fc.oneof(
  fc.bigInt(0n, U64_MASK),
  fc.constantFrom(0n, 1n, (1n << 53n) - 1n, 1n << 53n, (1n << 53n) + 1n, 0xffffffff81000123n, U64_MASK),
);

/** Canonical with 57-bit virtual addresses, as validateSample demands of ip and sp. */
export const arbCanonical = fc.oneof(fc.bigInt(0n, (1n << 56n) - 1n), fc.bigInt(0xff00000000000000n, U64_MASK));

// Any UTF-16 code unit, lone surrogates included: JSON escapes them and must give them back.
const arbText = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 12 }),
);

/**
 * Exactly `len` bytes. fc.uint8Array costs about 80 ns a byte, which would make KiB-sized windows
 * dominate a fuzz run; above 64 bytes the content comes from a seeded xorshift instead.
 */
function arbBytes(len: number): fc.Arbitrary<Uint8Array> {
  if (len <= 64) return fc.uint8Array({ minLength: len, maxLength: len });
  return fc.integer({ min: 1, max: 0x7fffffff }).map((seed) => {
    const out = new Uint8Array(len);
    let x = seed;
    for (let i = 0; i < len; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    return out;
  });
}

/** Up to two non-overlapping windows inside a stack of `size` bytes, in either order. */
function arbWindows(begin: bigint, size: number): fc.Arbitrary<StackWindow[]> {
  // Mostly small windows to keep runs fast; sometimes a few KiB, as real captures are.
  const maxLen = (room: number) => Math.min(room, 4096);
  const arbLen = (room: number) => fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: Math.min(room, 64) }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: maxLen(room) }) });
  const one = arbLen(size).chain((len) =>
    fc.tuple(fc.integer({ min: 0, max: size - len }), arbBytes(len)).map(([off, bytes]) => [{ start: begin + BigInt(off), bytes }]),
  );
  // Two windows are never empty: validateSample orders windows with equal starts arbitrarily, so
  // an empty window at another's start may be reported as overlapping it.
  const two = () => arbLen(size - 2).chain((l1) =>
    arbLen(size - l1 - 2).chain((l2) => {
      const len1 = l1 + 1;
      const len2 = l2 + 1;
      const free = size - len1 - len2;
      return fc.integer({ min: 0, max: free }).chain((a) =>
        fc
          .tuple(
            fc.integer({ min: 0, max: free - a }),
            arbBytes(len1),
            arbBytes(len2),
            fc.boolean(),
          )
          .map(([gap, b1, b2, swap]) => {
            const w1 = { start: begin + BigInt(a), bytes: b1 };
            const w2 = { start: begin + BigInt(a + len1 + gap), bytes: b2 };
            return swap ? [w2, w1] : [w1, w2];
          }),
      );
    }),
  );
  const none = fc.constant<StackWindow[]>([]);
  return size >= 2 ? fc.oneof(none, one, two()) : fc.oneof(none, one);
}

function arbStack(type: StackType, slot: readonly [bigint, bigint]): fc.Arbitrary<SampleStack> {
  return fc
    .tuple(fc.bigInt(slot[0], slot[1]), fc.oneof(fc.integer({ min: 1, max: MAX_STACK_SIZE }), fc.constantFrom(4096, 16384, MAX_STACK_SIZE)))
    .chain(([begin, size]) => arbWindows(begin, size).map((windows) => ({ type, begin, end: begin + BigInt(size), windows })));
}

/** 0-3 stacks of distinct types in disjoint slots, in any order. */
export const arbStacks: fc.Arbitrary<SampleStack[]> = fc.integer({ min: 0, max: 3 }).chain((k) =>
  fc
    .tuple(
      fc.shuffledSubarray([...STACK_TYPES], { minLength: k, maxLength: k }),
      fc.shuffledSubarray([0, 1, 2], { minLength: k, maxLength: k }),
    )
    .chain(([types, slots]) => (k === 0 ? fc.constant<SampleStack[]>([]) : fc.tuple(...types.map((t, i) => arbStack(t, SLOTS[slots[i]!]!))))),
);

function arbRegs(stacks: SampleStack[]): fc.Arbitrary<Regs> {
  // sp must lie on one of the stacks (end included: an empty stack's sp equals its end).
  const arbSp =
    stacks.length === 0
      ? arbCanonical
      : fc.integer({ min: 0, max: stacks.length - 1 }).chain((i) => {
          const st = stacks[i]!;
          return fc.bigInt(st.begin, st.end);
        });
  const valueOf = (f: (typeof PT_REGS_FIELDS)[number]): fc.Arbitrary<bigint> => {
    if (f === 'sp') return arbSp;
    if (f === 'ip') return arbCanonical;
    if (f === 'cs' || f === 'ss') return fc.bigInt(0n, 0xffffn);
    return arbU64;
  };
  return fc.subarray([...PT_REGS_FIELDS]).chain((fields) =>
    fc.tuple(...fields.map(valueOf)).map((vals) => {
      const regs: Regs = {};
      fields.forEach((f, i) => (regs[f] = vals[i]!));
      return regs;
    }),
  );
}

const arbCallchainEntry: fc.Arbitrary<CallchainEntry> = fc
  .record(
    { addr: arbU64, sym: arbText, dso: arbText, flags: fc.shuffledSubarray([...CALLCHAIN_FLAGS]) },
    { requiredKeys: ['addr', 'flags'], noNullPrototype: true },
  );

const arbTruthFrame: fc.Arbitrary<TruthFrame> = fc.record(
  { ip: arbU64, kind: fc.constantFrom(...TRUTH_KINDS), entry: arbText, tolerated: fc.constantFrom(...TOLERANCES) },
  { requiredKeys: ['ip', 'kind'], noNullPrototype: true },
);

const arbTruth: fc.Arbitrary<GroundTruth> = fc.record({ frames: fc.array(arbTruthFrame, { maxLength: 5 }) }, { noNullPrototype: true });

const arbId = fc.oneof(fc.constantFrom(-1, 0, 0xffffffff), fc.integer({ min: -1, max: 0xffffffff }));

// Built once: fc.stringMatching parses its regex on construction, which costs milliseconds, so
// building these inside the chain below made generation forty times slower.
const arbTime = fc.stringMatching(/^[0-9]{1,12}(\.[0-9]{1,9})?$/);
const arbBuildId = fc.oneof(fc.stringMatching(/^[0-9a-f]{40}$/), arbText);
const arbTrigger = fc.oneof(fc.constantFrom('nmi', 'timer', 'single-step', 'sched', 'cpu-clock'), fc.string({ minLength: 1, maxLength: 12 }));
const arbCallchain = fc.array(arbCallchainEntry, { maxLength: 6 });

/** A valid Sample (no `source`): random optional fields, regs subsets, stacks, callchain, truth. */
export const arbSample: fc.Arbitrary<Sample> = arbStacks.chain((stacks) =>
  fc
    .record(
      {
        comm: arbText,
        pid: arbId,
        tid: arbId,
        cpu: arbId,
        time: arbTime,
        period: arbU64,
        trigger: arbTrigger,
        host: arbText,
        kernel: arbBuildId,
        regs: arbRegs(stacks),
        callchain: arbCallchain,
        truth: arbTruth,
      },
      { requiredKeys: ['trigger'], noNullPrototype: true },
    )
    .map((rest) => ({ ...rest, stacks }) as Sample),
);
