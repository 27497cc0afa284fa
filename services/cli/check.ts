// `stacksanity check`: unwind every sample of the given dumps with each strategy, print a summary
// per strategy and verdict, then the failing samples. Exit 0 when all are consistent, 1 when
// failures were found, 2 when the input was unusable.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DumpError, rejectionOf, type ParseResult } from '../core/dump/errors.ts';
import { hasFullState, type Sample } from '../core/dump/sample.ts';
import { checkSample, type StrategyCheck } from '../core/check/checker.ts';
import type { Finding } from '../core/check/findings.ts';
import { CheckSummary } from '../core/check/summary.ts';
import { FindingsTally, findingsOf } from '../core/check/findings.ts';
import { findingsDocument, findingsTable, readKnownIds, writeFindingsFile } from './findings-file.ts';
import { GOOD_VERDICTS } from '../core/check/reasons.ts';
import { KernelProfile, parseProfileOptions, type ProfileOptions, type ProfileProvenance } from '../core/symbols/profile.ts';
import { parseKallsyms } from '../core/symbols/kallsyms.ts';
import type { KernelSymbol } from '../core/symbols/table.ts';
import type { OrcLayout } from '../core/unwind/orc-table.ts';
import { renderKernelTrace } from '../core/render/kernel-text.ts';
import { sampleCheckToJson } from '../core/render/json.ts';
import { STRATEGIES, type StrategyName } from '../core/unwind/types.ts';
import { formatHex64 } from '../core/u64.ts';
import { readInputBytes, DEFAULT_MAX_INPUT } from '../realhost/input.ts';
import { vmlinuxProfile } from '../realkernel/vmlinux-profile.ts';
import { InputFileError, readHostInput } from '../realhost/input.ts';
import { checkHostCallchain, HostChainSummary, type HostChainContext } from '../realhost/callchain-check.ts';
import { Progress } from './progress.ts';
import { decodeOrcUpload, OrcTable } from '../core/unwind/orc-table.ts';
import { checkKernelTrace, kernelTraceFindings, parseTextSnippets, type KernelTraceReason, type TextSnippets } from '../core/check/kernel-trace.ts';

export interface CheckOptions {
  files: string[];
  kallsyms?: string;
  profile?: string;
  /** A vmlinux (ELF) or bzImage: its ORC tables make the orc strategy run, its build id names the profile, it tells whether the build has frame pointers. */
  vmlinux?: string;
  /** The ORC entry layout of --vmlinux, for an image without a banner (or to override it). */
  orcLayout?: OrcLayout;
  strategies?: StrategyName[];
  /** The kernels/ folder `emulate --out` writes: <buildId>.kallsyms (+ .profile.json) per build. */
  kernels?: string;
  /** Write the run's findings here (JSON), for a later --known. */
  findingsOut?: string;
  /** A findings file: exit 0 when every finding of this run is in it, 1 when a new one appears. */
  known?: string;
  format: 'text' | 'json' | 'ndjson';
  maxBytes?: number;
  maxFailures?: number;
}

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

export const EXIT_OK = 0;
export const EXIT_FAILURES = 1;
export const EXIT_UNUSABLE = 2;

export function runCheck(o: CheckOptions, io: Io): number {
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_INPUT;
  let profile: KernelProfile | undefined;
  let byBuild: Map<string, KernelProfile> | undefined;
  let known: Set<string> | undefined;
  try {
    profile = loadProfile(o, maxBytes, io);
    if (o.kernels !== undefined) byBuild = loadKernels(o.kernels, maxBytes);
    if (o.known !== undefined) known = readKnownIds(o.known);
  } catch (e) {
    io.err(`stacksanity: ${e instanceof DumpError ? e.describe() : (e as Error).message}\n`);
    return EXIT_UNUSABLE;
  }
  // The fp baseline loses the interrupted function at every entry by design: it is shown for
  // comparison and only counts as a failure when asked for by name.
  const explicit = o.strategies !== undefined;
  // By default: the strategies this kernel's entry code supports (its profile's layouts), plus
  // the baseline. Asking for another by name shows it failing with pt_regs_not_decoded.
  const strategiesFor = (p: KernelProfile | undefined): StrategyName[] => {
    const list: StrategyName[] = o.strategies ?? STRATEGIES.filter((s) => s === 'fp' || !p || p.layouts.has(s));
    if (!o.strategies && p?.orc) list.push('orc');
    return list;
  };
  const strategyCache = new Map<KernelProfile | undefined, StrategyName[]>();
  const profileOf = (s: Sample): KernelProfile | undefined => (s.kernel !== undefined ? byBuild?.get(s.kernel) : undefined) ?? profile;
  const summary = new CheckSummary(o.maxFailures ?? 20);
  const findings = new FindingsTally();
  const baseline = explicit ? NO_BASELINE : BASELINE;
  const profiles = new WeakMap<Sample, KernelProfile>();
  // Callchain-only samples (perf script, perf.data, kernel logs) are judged on their host callchain.
  const hostChains = new HostChainSummary(o.maxFailures ?? 20);
  const kernelTraces = new KernelTraceSummary();
  let inputsRead = 0;
  let unreadable = 0;
  let index = 0;
  for (const file of o.files) {
    let parsed: ParseResult<Sample>;
    let contexts: WeakMap<Sample, HostChainContext>;
    try {
      // perf.data, kernel logs, JSON and text dumps, told apart by content.
      const input = readHostInput(file, { maxBytes, ...(profile ? { profile } : {}) });
      parsed = input.parsed;
      contexts = input.contexts;
      for (const n of input.notes) io.err(`stacksanity: ${n}\n`);
      inputsRead++;
    } catch (e) {
      if (e instanceof InputFileError) {
        // Not a sample that was refused: said once here, kept out of the rejection counts.
        io.err(`stacksanity: ${e.describe()}\n`);
        unreadable++;
        continue;
      }
      if (e instanceof DumpError) {
        summary.reject(rejectionOf(e, index));
        io.err(`stacksanity: ${e.describe()}\n`);
        continue;
      }
      throw e;
    }
    const base = index;
    for (const r of parsed.rejected) summary.reject({ ...r, sampleIndex: base + r.sampleIndex });
    const progress = new Progress(parsed.samples.length, file);
    let i = 0;
    for (const s of parsed.samples) {
      const at = base + i++;
      progress.tick(i);
      const p = profileOf(s);
      if (!hasFullState(s)) {
        summary.addCallchainOnly(s);
        hostChains.add(at, s, checkHostCallchain(s, p, contexts.get(s)));
        if (o.format === 'ndjson') io.out(JSON.stringify({ type: 'sample', index: at, source: s.source, host: s.host, kernel: s.kernel, callchain_only: true }) + '\n');
        continue;
      }
      if (!p) {
        const message = byBuild
          ? `${where(s)}: no kernel in ${o.kernels} for build ${s.kernel ?? '(none named)'}${profile ? '' : ' (and no --kallsyms for the rest)'}`
          : `${where(s)}: no kernel profile to unwind with: pass --kallsyms FILE (or --kernels DIR)`;
        summary.reject({ sampleIndex: at, reason: 'unknown_build_id', message, where: { sampleIndex: at } });
        continue;
      }
      if (s.kernel !== undefined && p.buildId !== undefined && s.kernel !== p.buildId) {
        summary.reject({ sampleIndex: at, reason: 'unknown_build_id', message: `${where(s)}: sample names kernel build ${s.kernel}, but the profile is for ${p.buildId}`, where: { sampleIndex: at } });
        continue;
      }
      let strategies = strategyCache.get(p);
      if (!strategies) strategyCache.set(p, (strategies = strategiesFor(p)));
      const check = checkSample(s, p, strategies);
      profiles.set(s, p);
      summary.add(at, s, check, baseline);
      const sigs = findingsOf(s, check, p, baseline);
      // A live host's BPF capture (its profile carries the text bytes, <build id>.text): the host
      // callchain is the kernel's own trace of the same instant, judged against the same bytes and
      // against the project's ORC walk of them. Other inputs' callchains (perf, logs, emulated
      // hosts) were not taken at the instant of the memory, so they are not judged this way.
      const text = TEXT_SNIPPETS.get(p);
      const orcRun = check.results.find((r) => r.strategy === 'orc');
      const kt = text === undefined ? undefined : checkKernelTrace(s, p, orcRun?.unwind, text, s.callchain?.length === BPF_TRACE_CAP ? BPF_TRACE_CAP : Infinity);
      if (kt) {
        const k = kernelTraces;
        k.samples++;
        k.frames += kt.frames;
        k.onStack += kt.onStack;
        k.afterCall += kt.afterCall;
        k.callUnchecked += kt.callUnchecked;
        if (kt.equalToOrc !== undefined) {
          k.comparedToOrc++;
          if (kt.equalToOrc) k.equalToOrc++;
        }
        if (kt.problems.length > 0) {
          k.failing++;
          for (const x of kt.problems) k.reasons.set(x.reason, (k.reasons.get(x.reason) ?? 0) + 1);
          if (k.examples.length < (o.maxFailures ?? 20)) k.examples.push({ index: at, sample: s, messages: kt.problems.map((x) => x.message) });
          sigs.push(...kernelTraceFindings(s, kt, p));
        }
      }
      findings.add(at, s, sigs);
      if (o.format === 'ndjson') {
        io.out(JSON.stringify({ type: 'sample', index: at, source: s.source, host: s.host, kernel: s.kernel, ...sampleCheckToJson(check, p), findings: sigs.map((f) => f.id) }) + '\n');
      }
    }
    progress.finish();
    index = base + parsed.samples.length + parsed.rejected.length;
  }
  const pick = (s: Sample): KernelProfile | undefined => profiles.get(s) ?? profileOf(s);
  if (inputsRead === 0 && unreadable > 0 && summary.rejectedCount === 0) {
    io.err(`stacksanity: no input could be read (${unreadable === 1 ? 'the file above' : `${unreadable} files above`})\n`);
    return EXIT_UNUSABLE;
  }
  if (inputsRead === 0 || (summary.samples === 0 && summary.rejectedCount > 0)) {
    printSummary(summary, io, o, pick, hostChains, []);
    io.err('stacksanity: no usable samples in the input\n');
    return EXIT_UNUSABLE;
  }
  const list = findings.list();
  if (o.findingsOut !== undefined) {
    try {
      writeFindingsFile(o.findingsOut, findingsDocument(list, summary.samples));
    } catch (e) {
      io.err(`stacksanity: cannot write the findings to ${o.findingsOut}: ${(e as Error).message}\n`);
      return EXIT_UNUSABLE;
    }
  }
  if (o.format === 'json') printJson(summary, io, pick, hostChains, list, known, kernelTraces);
  else if (o.format === 'ndjson') io.out(JSON.stringify({ type: 'summary', samples: summary.samples, rejected: summary.rejectedCount, failing_samples: summary.failingSamples, findings: findingsDocument(list, summary.samples, known).findings.map(({ id, title, count, state }) => ({ id, title, count, ...(state ? { state } : {}) })) }) + '\n');
  else printSummary(summary, io, o, pick, hostChains, list, known, kernelTraces);
  if (known) {
    // The kernel-CI gate: only findings outside the baseline fail the run.
    const fresh = list.filter((f) => !known.has(f.id));
    for (const f of fresh) io.err(`stacksanity: new finding ${f.id}: ${f.title} (${f.count} samples, e.g. sample ${f.examples[0]})\n`);
    return fresh.length > 0 || hostChains.failing > 0 ? EXIT_FAILURES : EXIT_OK;
  }
  return summary.failingSamples > 0 || hostChains.failing > 0 || kernelTraces.failing > 0 ? EXIT_FAILURES : EXIT_OK;
}

/** Text bytes before return addresses, per profile (a live host's <buildId>.text). */
const TEXT_SNIPPETS = new WeakMap<KernelProfile, TextSnippets>();

/** The kernel's own traces judged against the raw memory (kernel-trace.ts), over a run. */
class KernelTraceSummary {
  samples = 0;
  equalToOrc = 0;
  comparedToOrc = 0;
  frames = 0;
  onStack = 0;
  afterCall = 0;
  callUnchecked = 0;
  failing = 0;
  readonly reasons = new Map<KernelTraceReason, number>();
  readonly examples: { index: number; sample: Sample; messages: string[] }[] = [];
}

const BASELINE: ReadonlySet<StrategyName> = new Set(['fp']);
const NO_BASELINE: ReadonlySet<StrategyName> = new Set();

function loadProfile(o: CheckOptions, maxBytes: number, io: Io): KernelProfile | undefined {
  let opts: ProfileOptions = {};
  if (o.profile) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(o.profile, 'utf8'));
    } catch (e) {
      throw new DumpError('bad_json', `cannot read the profile: ${(e as Error).message}`, { file: o.profile });
    }
    opts = parseProfileOptions(json, o.profile);
  }
  if (o.orcLayout && !o.vmlinux) throw new DumpError('bad_field', '--orc-layout names the layout of the ORC tables in --vmlinux FILE; give that too');
  if (!o.kallsyms) {
    if (o.vmlinux) throw new DumpError('bad_field', '--vmlinux gives the ORC tables; the symbols still come from --kallsyms FILE', { file: o.vmlinux });
    return undefined;
  }
  const { symbols } = parseKallsyms(readInputBytes(o.kallsyms, maxBytes).toString('utf8'), o.kallsyms);
  if (o.vmlinux) opts = withVmlinux(o, opts, symbols, io);
  else if (opts.framePointers !== undefined) opts.provenance = { framePointers: { source: 'profile', detail: `"framePointers": ${opts.framePointers} in ${o.profile}` } };
  return new KernelProfile(symbols, opts);
}

/** Every <buildId>.kallsyms in dir (with <buildId>.profile.json beside it when present), by build id. */
function loadKernels(dir: string, maxBytes: number): Map<string, KernelProfile> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new DumpError('bad_field', `cannot read the kernels folder: ${(e as Error).message}`, { file: dir });
  }
  const out = new Map<string, KernelProfile>();
  for (const n of names.filter((x) => x.endsWith('.kallsyms')).sort()) {
    const buildId = n.slice(0, -'.kallsyms'.length);
    const file = join(dir, n);
    let opts: ProfileOptions = {};
    const pj = join(dir, `${buildId}.profile.json`);
    let text: string | undefined;
    try {
      text = readFileSync(pj, 'utf8');
    } catch {
      text = undefined; // no options file: the layouts are inferred from the symbols
    }
    if (text !== undefined) {
      try {
        opts = parseProfileOptions(JSON.parse(text), pj);
      } catch (e) {
        if (e instanceof DumpError) throw e;
        throw new DumpError('bad_json', `cannot read the profile: ${(e as Error).message}`, { file: pj });
      }
    }
    const { symbols } = parseKallsyms(readInputBytes(file, maxBytes).toString('utf8'), file);
    // A live host's profile (capture --bpf) adds its ORC tables, read from its memory, in the upload form.
    const orcFile = join(dir, `${buildId}.orc`);
    let orc: OrcTable | undefined;
    let orcBytes: Buffer | undefined;
    try {
      orcBytes = readInputBytes(orcFile, maxBytes);
    } catch {
      orcBytes = undefined; // no ORC tables for this build: the orc strategy does not run
    }
    if (orcBytes !== undefined) {
      try {
        orc = OrcTable.fromSections(decodeOrcUpload(orcBytes));
      } catch (e) {
        throw new DumpError('bad_field', `the ORC tables are unusable: ${(e as Error).message}`, { file: orcFile });
      }
    }
    const profile = new KernelProfile(symbols, { ...opts, buildId: opts.buildId ?? buildId, ...(orc ? { orc } : {}) });
    out.set(buildId, profile);
    const textFile = join(dir, `${buildId}.text`);
    let snippets: string | undefined;
    try {
      snippets = readFileSync(textFile, 'utf8');
    } catch {
      snippets = undefined;
    }
    if (snippets !== undefined) {
      try {
        TEXT_SNIPPETS.set(profile, parseTextSnippets(snippets, textFile));
      } catch (e) {
        throw new DumpError('bad_field', (e as Error).message, { file: textFile });
      }
    }
  }
  if (out.size === 0) throw new DumpError('bad_field', 'no <build id>.kallsyms file in the kernels folder (emulate --out writes one per build under kernels/)', { file: dir });
  return out;
}

/**
 * The build facts of a vmlinux or bzImage (build id, ORC tables, frame pointers) under the
 * user's profile: what the profile file states explicitly wins, and a note says so.
 */
function withVmlinux(o: CheckOptions, user: ProfileOptions, symbols: readonly KernelSymbol[], io: Io): ProfileOptions {
  const file = o.vmlinux!;
  let learned;
  try {
    learned = vmlinuxProfile(readFileSync(file), { symbols, ...(o.orcLayout ? { orcLayout: o.orcLayout } : {}) });
  } catch (e) {
    throw new DumpError('bad_field', (e as Error).message, { file });
  }
  const v = learned.options;
  for (const n of learned.notes) io.err(`stacksanity: ${file}: ${n}\n`);
  const provenance: ProfileProvenance = { ...v.provenance };
  if (user.framePointers !== undefined) {
    provenance.framePointers = { source: 'profile', detail: `"framePointers": ${user.framePointers} in ${o.profile}` };
    if (v.framePointers !== undefined && v.framePointers !== user.framePointers) {
      io.err(`stacksanity: ${file}: the profile ${o.profile} says framePointers ${user.framePointers}; using it over the image's evidence\n`);
    }
  }
  return { ...v, ...user, provenance };
}

/** The profile section of the JSON output: which kernel facts were used and where they came from. */
function profileJson(profile: KernelProfile | undefined): Record<string, unknown> | null {
  if (!profile) return null;
  const p = profile.provenance;
  return {
    build_id: profile.buildId ?? null,
    frame_pointers: profile.framePointers ?? null,
    frame_pointers_source: p?.framePointers?.source ?? null,
    frame_pointers_detail: p?.framePointers?.detail ?? null,
    evidence: (p?.evidence ?? []).map((e) => ({ source: e.source, frame_pointers: e.framePointers ?? null, detail: e.detail })),
    orc: profile.orc
      ? { entries: profile.orc.length, layout: profile.orc.layout, layout_source: p?.orc?.layoutSource ?? null, release: p?.orc?.release ?? null }
      : null,
  };
}

function where(s: Sample): string {
  const src = s.source ? `${s.source.file}:${s.source.line}` : '';
  const who = [s.comm, s.tid !== undefined ? String(s.tid) : s.pid !== undefined ? String(s.pid) : undefined].filter(Boolean).join(' ');
  return [src, who].filter(Boolean).join(' ');
}

/** The sampler's trace depth (SS_KSTACK_MAX): a trace exactly this long may have been cut. */
const BPF_TRACE_CAP = 64;

function kernelTraceLines(k: KernelTraceSummary): string[] {
  if (k.samples === 0) return [];
  const pct = (a: number, b: number): string => (b > 0 ? `${((100 * a) / b).toFixed(1)} %` : 'n/a');
  const out = ['', `kernel's own traces judged against the raw memory: ${k.samples} samples, ${k.frames} frames`];
  out.push(`  equal to the project's ORC walk: ${k.equalToOrc} of ${k.comparedToOrc} (${pct(k.equalToOrc, k.comparedToOrc)})`);
  out.push(`  frames found on the stack in order: ${k.onStack} of ${k.frames - k.samples}; return addresses after a call instruction: ${k.afterCall}${k.callUnchecked ? ` (${k.callUnchecked} without text bytes, not checked)` : ''}`);
  if (k.reasons.size > 0) out.push(`  problems: ${[...k.reasons].map(([r, n]) => `${r} ${n}`).join(', ')} in ${k.failing} samples`);
  for (const x of k.examples.slice(0, 10)) {
    const s = x.sample;
    out.push(`  --- sample ${x.index}${s.source ? ` (${s.source.file}:${s.source.line})` : ''} ${s.comm ?? ''} ${s.tid ?? ''} cpu ${s.cpu ?? '?'}`);
    for (const m of x.messages.slice(0, 3)) out.push(`      ${m}`);
  }
  return out;
}

function printSummary(sm: CheckSummary, io: Io, o: CheckOptions, profileOf: (s: Sample) => KernelProfile | undefined, host: HostChainSummary, findings: readonly Finding[], known?: ReadonlySet<string>, kt?: KernelTraceSummary): void {
  const profile = o.kernels === undefined ? profileOf({} as Sample) : undefined;
  const baseline = o.strategies ? NO_BASELINE : BASELINE;
  const lines: string[] = [];
  lines.push(`samples: ${sm.samples} checked, ${sm.rejectedCount} rejected${sm.callchainOnly ? `, ${sm.callchainOnly} callchain-only (no registers or stack memory to unwind)` : ''}`);
  if (sm.verdicts.size > 0) {
    lines.push('');
    lines.push('strategy      verdicts');
    for (const [strategy, m] of sm.verdicts) {
      const parts = [...m].sort((a, b) => b[1] - a[1]).map(([v, n]) => `${v} ${n}`);
      const note = strategy === 'fp' && !o.strategies ? '  (baseline, not counted as failure)' : '';
      lines.push(`${strategy.padEnd(13)} ${parts.join(', ')}${note}`);
      const rm = sm.reasons.get(strategy);
      if (rm && rm.size > 0) lines.push(`${''.padEnd(13)}   reasons: ${[...rm].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${n}`).join(', ')}`);
    }
  }
  if (sm.disagreements || sm.falseReliable) lines.push(`disagreeing samples: ${sm.disagreements}; false_reliable: ${sm.falseReliable}`);
  if (sm.flaggedFrames.size > 0) lines.push(`flagged host callchain frames: ${[...sm.flaggedFrames].map(([f, n]) => `${f} ${n}`).join(', ')}`);
  if (host.checked + host.userOnly > 0) lines.push(...hostChainLines(host, profile));
  if (kt) lines.push(...kernelTraceLines(kt));
  if (sm.rejected.size > 0) {
    lines.push(`rejected by reason: ${[...sm.rejected].map(([r, n]) => `${r} ${n}`).join(', ')}`);
    for (const r of sm.rejections.slice(0, 20)) lines.push(`  ${r.message}`);
    if (sm.rejections.length > 20) lines.push(`  ... ${sm.rejectedCount - 20} more`);
  }
  lines.push(...findingsTable(findings, sm.samples, known));
  if (sm.failures.length > 0) {
    lines.push('');
    lines.push(`failing samples: ${sm.failingSamples}${sm.failingSamples > sm.failures.length ? ` (first ${sm.failures.length} shown)` : ''}`);
    for (const f of sm.failures) {
      lines.push('');
      const s = f.sample;
      lines.push(`--- sample ${f.index}${s.source ? ` (${s.source.file}:${s.source.line})` : ''} ${s.comm ?? ''} ${s.tid ?? s.pid ?? ''} cpu ${s.cpu ?? '?'} trigger ${s.trigger}${s.regs?.ip !== undefined ? ` ip ${formatHex64(s.regs.ip)}` : ''}`);
      for (const r of f.check.results) {
        const detail = [r.reason, r.missing.length ? `missing ${r.missing.join(', ')}` : '', r.extra.length ? `extra ${r.extra.join(', ')}` : '', r.falseReliable ? 'FALSE RELIABLE' : '']
          .filter(Boolean).join('; ');
        lines.push(`  ${r.strategy.padEnd(12)} ${r.verdict}${detail ? ` (${detail})` : ''}${baseline.has(r.strategy) ? '  [baseline]' : ''}`);
      }
      if (f.check.disagreements.length) lines.push(`  disagree: ${f.check.disagreements.map((d) => d.join('/')).join(' ')}`);
      const failing = (r: StrategyCheck): boolean => !GOOD_VERDICTS.has(r.verdict) || r.falseReliable;
      const shown = f.check.results.find((r) => failing(r) && !baseline.has(r.strategy)) ?? f.check.results.find(failing) ?? f.check.results[0];
      const p = profileOf(s);
      if (shown && p) {
        lines.push(`  ${shown.strategy} trace:`);
        for (const l of renderKernelTrace(s, p, shown.unwind).trimEnd().split('\n')) lines.push(`    ${l}`);
      }
    }
  }
  io.out(lines.join('\n') + '\n');
}

function printJson(sm: CheckSummary, io: Io, profileOf: (s: Sample) => KernelProfile | undefined, host: HostChainSummary, findings: readonly Finding[], known?: ReadonlySet<string>, kt?: KernelTraceSummary): void {
  const obj = {
    profile: profileJson(profileOf({} as Sample)),
    samples: sm.samples,
    callchain_only: sm.callchainOnly,
    rejected: Object.fromEntries(sm.rejected),
    rejections: sm.rejections,
    verdicts: Object.fromEntries([...sm.verdicts].map(([k, m]) => [k, Object.fromEntries(m)])),
    reasons: Object.fromEntries([...sm.reasons].map(([k, m]) => [k, Object.fromEntries(m)])),
    disagreeing_samples: sm.disagreements,
    false_reliable: sm.falseReliable,
    failing_samples: sm.failingSamples,
    findings: findingsDocument(findings, sm.samples, known).findings,
    failures: sm.failures.flatMap((f) => {
      const p = profileOf(f.sample);
      return p ? [{ index: f.index, source: f.sample.source, ...sampleCheckToJson(f.check, p) }] : [];
    }),
    kernel_traces: kt && kt.samples > 0 ? {
      samples: kt.samples, frames: kt.frames, compared_to_orc: kt.comparedToOrc, equal_to_orc: kt.equalToOrc, on_stack: kt.onStack,
      after_call: kt.afterCall, call_unchecked: kt.callUnchecked, failing: kt.failing, reasons: Object.fromEntries(kt.reasons),
      failures: kt.examples.map((x) => ({ index: x.index, source: x.sample.source, problems: x.messages })),
    } : null,
    host_callchains: {
      checked: host.checked,
      user_only: host.userOnly,
      failing: host.failing,
      unresolved_frames: host.unresolvedFrames,
      verdicts: Object.fromEntries(host.verdicts),
      reasons: Object.fromEntries(host.reasons),
      bottoms: Object.fromEntries(host.bottoms),
      failures: host.examples.map((x) => ({ index: x.index, source: x.sample.source, verdict: x.check.verdict, reason: x.check.reason, findings: x.check.findings })),
    },
  };
  io.out(JSON.stringify(obj, null, 2) + '\n');
}

/** The host callchain section: the host's own unwinder judged by the kernel's rules. */
function hostChainLines(h: HostChainSummary, profile: KernelProfile | undefined): string[] {
  const count = <K>(m: Map<K, number>): string => [...m].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${String(k)} ${n}`).join(', ');
  const out = ['', `host callchains: ${h.checked} with a kernel part${h.userOnly ? `, ${h.userOnly} without kernel frames (not judged)` : ''}`];
  if (h.checked > 0) {
    out.push(`  verdicts: ${count(h.verdicts)}`);
    if (h.reasons.size > 0) out.push(`  reasons: ${count(h.reasons)}`);
    out.push(`  bottoms: ${count(h.bottoms)}`);
  }
  if (h.unresolvedFrames > 0) out.push(`  unresolved kernel frames: ${h.unresolvedFrames}${profile ? ' (no runtime address to check)' : ' (pass --kallsyms to check them against kernel text)'}`);
  for (const x of h.examples.slice(0, 10)) {
    const s = x.sample;
    out.push(`  --- sample ${x.index}${s.source ? ` (${s.source.file}:${s.source.line})` : ''} ${s.comm ?? ''} ${s.tid ?? s.pid ?? ''}: ${x.check.verdict} (${x.check.reason})`);
    for (const f of x.check.findings.slice(0, 3)) out.push(`      ${f.message}`);
  }
  return out;
}
