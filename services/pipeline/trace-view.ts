// A stored trace's detail, rendered when it is read: the sample is decoded from its stored record
// and checked again against the build's current profile. checkSample is deterministic, so with
// the profile the sample was checked with this is exactly the detail the checker would have
// rendered (the JSON that stored traces used to hold). When the profile has changed since (a new
// revision), another checker build renders it (checker-build.ts), or the re-derived verdicts are
// not the stored ones, the detail says so in `recheck` rather than pass the new results off as the
// ones the trace was stored for.
import { checkSample } from '../core/check/checker.ts';
import { sampleToJson } from '../core/dump/json.ts';
import { hasFullState, type Sample } from '../core/dump/sample.ts';
import { stackPicture, type StackPicture } from '../core/render/stack-picture.ts';
import { checkHostCallchain } from '../realhost/callchain-check.ts';
import { renderKernelTrace } from '../core/render/kernel-text.ts';
import { sampleCheckToJson } from '../core/render/json.ts';
import { decodeSampleRecord } from '../core/dump/batch-decode.ts';
import { BASELINE, strategiesFor, verdictsOf, type ProfileLookup, type Verdicts } from './check-batch.ts';
import { checkerBuild } from './checker-build.ts';
import { decodeTraceBody, type StoredTrace, type TraceHeader, type TraceMeta } from './trace-store.ts';

/** The detail as the JSON text GET /v1/traces/{id} answers (a body of the JSON era verbatim). */
export async function traceDetailJson(t: StoredTrace, lookup: ProfileLookup): Promise<string> {
  const b = decodeTraceBody(t.body);
  if (b.kind === 'json') return b.json;
  return JSON.stringify((await render(t.meta, b.header, b.record, lookup, false)).doc);
}

/** The detail as an object (for the HTML page). */
export async function traceDetail(t: StoredTrace, lookup: ProfileLookup): Promise<Record<string, unknown>> {
  return (await traceView(t, lookup, false)).detail;
}

/**
 * The detail and, with `picture`, the stack picture (core/render/stack-picture.ts) from the same
 * check: what the explorer's page draws and GET /v1/traces/{id}/picture serves. No picture for a
 * body of the JSON era, a sample without stack memory, or a build without a profile.
 */
export async function traceView(t: StoredTrace, lookup: ProfileLookup, picture = true): Promise<{ detail: Record<string, unknown>; picture: StackPicture | null }> {
  const b = decodeTraceBody(t.body);
  if (b.kind === 'json') return { detail: JSON.parse(b.json) as Record<string, unknown>, picture: null };
  const r = await render(t.meta, b.header, b.record, lookup, picture);
  return { detail: r.doc, picture: r.picture };
}

async function render(meta: TraceMeta, h: TraceHeader, record: Uint8Array, lookup: ProfileLookup, withPicture: boolean): Promise<{ doc: Record<string, unknown>; picture: StackPicture | null }> {
  const doc = await renderDoc(meta, h, record, lookup, withPicture);
  const picture = doc.picture ?? null;
  delete doc.picture;
  return { doc, picture: picture as StackPicture | null };
}

async function renderDoc(meta: TraceMeta, h: TraceHeader, record: Uint8Array, lookup: ProfileLookup, withPicture: boolean): Promise<Record<string, unknown>> {
  // Keys in the order the check-time rendering wrote them; the additions come last.
  const head = {
    id: meta.id, job: h.job, index: h.index, received_at: new Date(h.receivedAt).toISOString(), uploader: h.uploader, source: h.source,
    host: meta.host, kernel: meta.kernel, status: meta.status,
  };
  const stored = { strategies: meta.strategies, reasons: meta.reasons };
  let sample: Sample;
  try {
    sample = decodeSampleRecord(record).sample;
  } catch (e) {
    return { ...head, ...stored, message: `the stored sample record cannot be decoded (${(e as Error).message}); only the verdicts recorded at check time are available` };
  }
  const at = await lookup(meta.kernel);
  if (!at) {
    return {
      ...head, sample: sampleToJson(sample), ...stored,
      message: `kernel build '${meta.kernel}' has no profile any more (its symbols were removed), so the frames cannot be re-derived; strategies and reasons are the verdicts recorded when the sample was checked${h.rev !== undefined ? ` against profile revision ${h.rev}` : ''}`,
    };
  }
  const { profile } = at;
  // trail: each walk records the words it read (the picture's paths; "reads" in the JSON).
  // Without registers and stack memory no strategy can run: their "no_regs" results would only
  // hide the host callchain's own verdict, so such a sample has none.
  const full = hasFullState(sample);
  const check = checkSample(sample, profile, full ? strategiesFor(profile) : [], { trail: true });
  const checked = sampleCheckToJson(check, profile);
  const results = (checked.results as Record<string, unknown>[]).map((r, i) => ({
    ...r,
    baseline: BASELINE.has(check.results[i]!.strategy),
    kernel_text: renderKernelTrace(sample, profile, check.results[i]!.unwind),
  }));
  const doc: Record<string, unknown> = { ...head, sample: sampleToJson(sample), results, disagreements: checked.disagreements };
  if (!full && sample.callchain !== undefined) {
    // No stack memory: the host's own callchain is what there is to judge (realhost/callchain-check.ts).
    const c = checkHostCallchain(sample, profile);
    if (c) {
      doc.callchain_check = {
        verdict: c.verdict, ...(c.reason !== undefined ? { reason: c.reason } : {}), kernel_frames: c.kernelFrames, user_frames: c.userFrames,
        unresolved: c.unresolved, bottom: c.bottom, findings: c.findings,
      };
    }
  }
  if (withPicture && full) doc.picture = stackPicture(sample, profile, check, BASELINE);
  const now = verdictsOf(check);
  const verdictsChanged = !sameVerdicts(now, meta);
  // An unknown revision or checker build on either side cannot vouch for the results: say so too.
  const revChanged = h.rev === undefined || at.rev === undefined || h.rev !== at.rev;
  const checker = checkerBuild();
  const checkerChanged = h.checker === undefined || h.checker === 'unknown' || checker === 'unknown' || h.checker !== checker;
  if (verdictsChanged || revChanged || checkerChanged) {
    doc.recheck = {
      profile_rev_then: h.rev ?? null,
      profile_rev_now: at.rev ?? null,
      checker_then: h.checker ?? null,
      checker_now: checker,
      verdicts_changed: verdictsChanged,
      ...(verdictsChanged ? {
        then: { status: meta.status, strategies: meta.strategies, reasons: meta.reasons },
        now: { status: now.failing ? 'failing' : 'passing', strategies: now.strategies, reasons: now.reasons },
      } : {}),
    };
  }
  return doc;
}

function sameVerdicts(v: Verdicts, m: TraceMeta): boolean {
  return (v.failing ? 'failing' : 'passing') === m.status && sameList(v.strategies, m.strategies) && sameList(v.reasons, m.reasons);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
