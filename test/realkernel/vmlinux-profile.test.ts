// What `check --vmlinux` learns from a kernel image: frame pointers (embedded config, else the ORC
// table, else function prologues), the ORC layout (banner, else --orc-layout) and which evidence
// was used. Images are written by hand (test/support/elf-image.ts) so that each piece of evidence
// can be present or absent and say yes or no; expectations follow from what was written: the
// objtool rows of a framed function (orc_types.h CFA rules), the x86 prologue bytes, the config lines.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decideFramePointers, framePointersFromCode, framePointersFromConfig, framePointersFromOrc, startsWithFrame,
} from '../../services/core/symbols/frame-pointer-evidence.ts';
import { guessOrcLayout, orcLayoutFromName, OrcTable } from '../../services/core/unwind/orc-table.ts';
import { parseKallsyms } from '../../services/core/symbols/kallsyms.ts';
import { embeddedConfig } from '../../services/realkernel/ikconfig.ts';
import { buildId, elfSections, extractVmlinux, kernelRelease } from '../../services/realkernel/vmlinux.ts';
import { DEFAULT_CACHE, kernelFiles } from '../../services/realkernel/guest.ts';
import { vmlinuxProfile, VmlinuxError } from '../../services/realkernel/vmlinux-profile.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import { main } from '../../services/cli/main.ts';
import { fnCode, ikconfigBlob, kernelImage, orcSections, TEXT_BASE } from '../support/elf-image.ts';
import { ORC_KALLSYMS, ORC_ROWS, pageFaultStack } from '../support/orc-kernel.ts';

const BANNER = 'Linux version 6.1.0-99-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2026-11-26)';
const ORC_CONFIG = 'CONFIG_X86_64=y\nCONFIG_UNWINDER_ORC=y\n# CONFIG_UNWINDER_FRAME_POINTER is not set\n# CONFIG_UNWINDER_GUESS is not set\n';
const FP_CONFIG = 'CONFIG_X86_64=y\n# CONFIG_UNWINDER_ORC is not set\nCONFIG_UNWINDER_FRAME_POINTER=y\nCONFIG_FRAME_POINTER=y\n';

const many = (n: number, framed: (i: number) => boolean): boolean[] => Array.from({ length: n }, (_x, i) => framed(i));
const symbolsOf = (text: string) => parseKallsyms(text).symbols;

describe('frame-pointer evidence, one kind at a time', () => {
  test('the kernel config: CONFIG_FRAME_POINTER, or the unwinder choice that decides it on x86', () => {
    assert.equal(framePointersFromConfig(FP_CONFIG).framePointers, true);
    assert.equal(framePointersFromConfig('CONFIG_UNWINDER_FRAME_POINTER=y\n').framePointers, true);
    assert.equal(framePointersFromConfig(ORC_CONFIG).framePointers, false);
    assert.equal(framePointersFromConfig('# CONFIG_FRAME_POINTER is not set\n').framePointers, false);
    // CONFIG_SCHED_OMIT_FRAME_POINTER is another option (Debian sets it) and says nothing.
    assert.equal(framePointersFromConfig('CONFIG_SCHED_OMIT_FRAME_POINTER=y\nCONFIG_ARM64=y\n').framePointers, undefined);
  });

  test('prologues: push %rbp; mov %rsp,%rbp after endbr64 and the __fentry__ call or its nop', () => {
    assert.equal(startsWithFrame(Uint8Array.of(0x55, 0x48, 0x89, 0xe5)), true);
    assert.equal(startsWithFrame(Uint8Array.of(0x55, 0x48, 0x8b, 0xec)), true, 'the other encoding of mov %rsp,%rbp');
    assert.equal(startsWithFrame(Uint8Array.of(0xe8, 1, 2, 3, 4, 0x55, 0x48, 0x89, 0xe5)), true);
    assert.equal(startsWithFrame(Uint8Array.of(0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x1f, 0x44, 0, 0, 0x55, 0x48, 0x89, 0xe5)), true);
    assert.equal(startsWithFrame(Uint8Array.of(0x41, 0x54, 0x55, 0x48, 0x89, 0xe5)), false, 'push %r12 first: rbp is saved as a callee-saved register, not a frame');
    assert.equal(startsWithFrame(Uint8Array.of(0x55, 0x53, 0x48, 0x89, 0xe5)), false, 'push %rbp; push %rbx: no frame set up');
    assert.equal(startsWithFrame(fnCode(true, true).bytes), true);
    assert.equal(startsWithFrame(fnCode(false, true).bytes), false);
    const code = (framed: number, total: number) => framePointersFromCode(many(total, (i) => i < framed).map((f) => fnCode(f).bytes));
    assert.equal(code(95, 100).framePointers, true);
    assert.equal(code(3, 100).framePointers, false);
    assert.equal(code(30, 100).framePointers, undefined, '30 % is neither');
    assert.equal(code(10, 20).framePointers, undefined, 'too few functions');
  });

  test('the ORC table: a framed function has an rbp-based CFA row for its body, an unframed one none', () => {
    const table = (framed: (i: number) => boolean, n = 200): OrcTable => {
      const ips: number[] = [];
      const entries = [];
      for (let i = 0; i < n; i++) {
        for (const [off, e] of fnCode(framed(i)).rows) {
          ips.push(Number(BigInt.asIntN(64, TEXT_BASE + BigInt(i * 0x40 + off))));
          entries.push(e);
        }
      }
      return OrcTable.fromEntries('type2', ips, entries);
    };
    // Framed: 1 of 4 rows per function (25 %); unframed: 0 of 5. Every 50th framed: 4 of
    // 4×4 + 196×5 = 996 rows (0.4 %); every 3rd: 67 of 67×4 + 133×5 = 933 (7.2 %).
    const fp = framePointersFromOrc(table(() => true));
    assert.equal(fp.framePointers, true, fp.detail);
    assert.match(fp.detail, /^200 of 800 ORC call rows \(25 %\)/);
    assert.equal(framePointersFromOrc(table(() => false)).framePointers, false);
    const few = framePointersFromOrc(table((i) => i % 50 === 0));
    assert.equal(few.framePointers, false, 'a few functions that need a frame anyway');
    assert.match(few.detail, /^4 of 996 ORC call rows \(0\.4 %\)/);
    const mid = framePointersFromOrc(table((i) => i % 3 === 0));
    assert.equal(mid.framePointers, undefined, 'between the thresholds');
    assert.match(mid.detail, /^67 of 933 ORC call rows \(7\.2 %\)/);
    assert.equal(framePointersFromOrc(table(() => false, 20)).framePointers, undefined, '100 rows: too few');
  });

  test('the decision takes the first conclusive evidence in trust order and names the disagreeing ones', () => {
    const cfg = framePointersFromConfig(FP_CONFIG);
    const orc = { source: 'orc' as const, framePointers: false, detail: 'orc says no' };
    const code = { source: 'code' as const, framePointers: undefined, detail: 'cannot tell' };
    const d = decideFramePointers([code, orc, cfg]);
    assert.equal(d.framePointers, true);
    assert.equal(d.used, cfg);
    assert.deepEqual(d.disagreeing, [orc]);
    assert.equal(decideFramePointers([code, orc]).used, orc);
    assert.equal(decideFramePointers([code]).framePointers, undefined);
  });
});

describe('ORC layout names', () => {
  test('accepted: the layout names orc-table.ts uses, and kernel releases from v4.14 on', () => {
    assert.equal(orcLayoutFromName('type2'), 'type2');
    assert.equal(orcLayoutFromName('type3'), 'type3');
    assert.equal(orcLayoutFromName('6.1'), 'type2');
    assert.equal(orcLayoutFromName('6.3'), 'type2');
    assert.equal(orcLayoutFromName('6.4'), 'type3');
    assert.equal(orcLayoutFromName('6.12.9-amd64'), 'type3');
    assert.equal(orcLayoutFromName('4.14'), 'type2');
  });

  test('refused: other names, and releases without ORC', () => {
    for (const bad of ['type1', 'type4', 'TYPE2', '', '6', 'v6.1', '4.13', '3.10', '6.1 ', 'six']) assert.equal(orcLayoutFromName(bad), undefined, bad);
  });

  test('the flags byte of CALL rows tells the two layouts apart', () => {
    const rows = fnCode(false).rows.map(([o, e]) => [TEXT_BASE + BigInt(o), e] as const);
    assert.equal(guessOrcLayout(orcSections('type2', rows, 0xffffffff82c00000n).unwind), 'type2');
    assert.equal(guessOrcLayout(orcSections('type3', rows, 0xffffffff82c00000n).unwind), 'type3');
  });
});

describe('a hand-made vmlinux', () => {
  test('banner, build id and the embedded config are found where they were written', () => {
    const { elf } = kernelImage({ functions: many(4, () => false), banner: BANNER, config: ORC_CONFIG });
    assert.equal(kernelRelease(elf), '6.1.0-99-amd64', 'the "Linux version %s" format string before it is no banner');
    assert.equal(embeddedConfig(elf)?.text, ORC_CONFIG);
    assert.equal(embeddedConfig(kernelImage({ functions: [] }).elf), undefined);
    const corrupt = Buffer.concat([Buffer.from('xx'), Buffer.from(ikconfigBlob(ORC_CONFIG)).subarray(0, 20), Buffer.from('IKCFG_ED')]);
    assert.throws(() => embeddedConfig(corrupt), /does not decompress/);
  });

  test('no config: the ORC table decides, the code agrees, and the evidence is reported', () => {
    const img = kernelImage({ functions: many(300, () => false), banner: BANNER });
    const v = vmlinuxProfile(img.elf, { symbols: symbolsOf(img.kallsyms()) });
    assert.equal(v.options.framePointers, false);
    assert.equal(v.options.provenance?.framePointers?.source, 'orc');
    assert.deepEqual(v.options.provenance?.evidence?.map((e) => [e.source, e.framePointers]), [['orc', false], ['code', false]]);
    assert.equal(v.options.buildId, '00112233445566778899aabbccddeeff00112233');
    assert.deepEqual(v.options.provenance?.orc, { layout: 'type2', layoutSource: 'banner', release: '6.1.0-99-amd64', entries: 1500 });
    assert.ok(v.notes.some((n) => /^frame pointers: no, from the ORC table: 0 of 1500 ORC call rows/.test(n)), v.notes.join('\n'));
  });

  test('framed functions: the ORC table and the prologues both say yes', () => {
    const img = kernelImage({ functions: many(300, () => true), banner: BANNER, endbr: true });
    const v = vmlinuxProfile(img.elf, { symbols: symbolsOf(img.kallsyms()) });
    assert.equal(v.options.framePointers, true);
    assert.deepEqual(v.options.provenance?.evidence?.map((e) => [e.source, e.framePointers]), [['orc', true], ['code', true]]);
  });

  test('the embedded config comes first; evidence that disagrees is a warning', () => {
    const img = kernelImage({ functions: many(300, () => false), banner: BANNER, config: FP_CONFIG });
    const v = vmlinuxProfile(img.elf, { symbols: symbolsOf(img.kallsyms()) });
    assert.equal(v.options.framePointers, true);
    assert.equal(v.options.provenance?.framePointers?.source, 'config');
    assert.match(v.options.provenance!.framePointers!.detail, /CONFIG_FRAME_POINTER=y/);
    assert.ok(v.notes.some((n) => /^warning: the evidence from the ORC table says the opposite/.test(n)), v.notes.join('\n'));
    assert.ok(v.notes.some((n) => /^warning: the evidence from the function prologues says the opposite/.test(n)), v.notes.join('\n'));
  });

  test('no ORC sections: the prologues decide, under KASLR too (kallsyms slid against the link address)', () => {
    for (const slide of [0n, 0x1e600000n]) {
      const framed = kernelImage({ functions: many(120, (i) => i % 10 !== 0), orc: false });
      const v = vmlinuxProfile(framed.elf, { symbols: symbolsOf(framed.kallsyms(slide)) });
      assert.equal(v.options.orc, undefined);
      assert.equal(v.options.framePointers, true, v.notes.join('\n'));
      assert.equal(v.options.provenance?.framePointers?.source, 'code');
      assert.match(v.options.provenance!.framePointers!.detail, /^108 of 120 sampled text functions/);
      const plain = kernelImage({ functions: many(120, () => false), orc: false });
      assert.equal(vmlinuxProfile(plain.elf, { symbols: symbolsOf(plain.kallsyms(slide)) }).options.framePointers, false);
    }
  });

  test('nothing conclusive: framePointers stays unknown and the note says how to state it', () => {
    const img = kernelImage({ functions: many(10, () => false), orc: false, banner: BANNER });
    const v = vmlinuxProfile(img.elf, { symbols: symbolsOf(img.kallsyms()) });
    assert.equal(v.options.framePointers, undefined);
    assert.ok(v.notes.some((n) => /cannot tell .*--profile FILE with \{"framePointers": false\}/.test(n)), v.notes.join('\n'));
  });

  test('no banner: refused with the flag and its values named; --orc-layout reads the table', () => {
    for (const layout of ['type2', 'type3'] as const) {
      const img = kernelImage({ functions: many(300, () => false), orc: layout });
      assert.throws(() => vmlinuxProfile(img.elf), (e: Error) => {
        assert.ok(e instanceof VmlinuxError);
        assert.match(e.message, /no "Linux version" banner/);
        assert.match(e.message, /--orc-layout type2 \(v4\.14–v6\.3\), type3 \(v6\.4\+\)/);
        assert.match(e.message, new RegExp(`the entries look like ${layout}`));
        return true;
      });
      const v = vmlinuxProfile(img.elf, { orcLayout: layout });
      assert.equal(v.options.orc?.layout, layout);
      assert.equal(v.notes.filter((n) => n.startsWith('warning')).length, 0, v.notes.join('\n'));
      const other = layout === 'type2' ? 'type3' : 'type2';
      const wrong = vmlinuxProfile(img.elf, { orcLayout: other });
      assert.ok(wrong.notes.includes(`warning: the entries look like ${layout}, not ${other}: a wrong --orc-layout misreads every row`), wrong.notes.join('\n'));
      assert.equal(v.options.provenance?.orc?.layoutSource, 'flag');
      // Read in its own layout, every row is a CALL row: the statistic sees all 1500.
      assert.match(v.options.provenance!.evidence![0]!.detail, /^0 of 1500 ORC call rows/);
    }
  });

  test('a flag that contradicts the banner wins, with a warning', () => {
    const img = kernelImage({ functions: many(4, () => false), banner: BANNER });
    const v = vmlinuxProfile(img.elf, { orcLayout: 'type3' });
    assert.equal(v.options.orc?.layout, 'type3');
    assert.ok(v.notes.some((n) => /^warning: the banner's release 6\.1\.0-99-amd64 uses ORC layout type2; reading type3/.test(n)), v.notes.join('\n'));
  });
});

describe('stacksanity check --vmlinux on a hand-made ORC kernel (test/support/orc-kernel.ts)', () => {
  const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
    let out = '';
    let err = '';
    const code = await main(['check', ...args], { out: (s) => (out += s), err: (s) => (err += s) });
    return { code, out, err };
  };
  const setup = (spec: { banner?: string; config?: string }, profile?: object): { dir: string; args: string[] } => {
    const dir = mkdtempSync(join(tmpdir(), 'stacksanity-vmlinux-profile-'));
    const img = kernelImage({ functions: [], orcRows: ORC_ROWS, ...spec });
    writeFileSync(join(dir, 'vmlinux'), img.elf);
    writeFileSync(join(dir, 'kallsyms'), ORC_KALLSYMS);
    writeFileSync(join(dir, 'dump'), formatTextDump([pageFaultStack().sample]));
    const args = ['--kallsyms', join(dir, 'kallsyms'), '--vmlinux', join(dir, 'vmlinux'), '--format', 'json'];
    if (profile) {
      writeFileSync(join(dir, 'profile.json'), JSON.stringify(profile));
      args.push('--profile', join(dir, 'profile.json'));
    }
    return { dir, args };
  };
  type Json = { profile: { frame_pointers: boolean | null; frame_pointers_source: string | null; orc: { layout: string; layout_source: string } | null }; verdicts: Record<string, Record<string, number>>; };

  test('an embedded config without frame pointers: the FP strategies are not_applicable, orc consistent, exit 0', async () => {
    const { dir, args } = setup({ banner: BANNER, config: ORC_CONFIG });
    try {
      const r = await run([...args, join(dir, 'dump')]);
      assert.equal(r.code, 0, r.err + r.out);
      const j = JSON.parse(r.out) as Json;
      assert.deepEqual(j.verdicts, { fp: { not_applicable: 1 }, section: { not_applicable: 1 }, encoded_fp: { not_applicable: 1 }, orc: { consistent: 1 } });
      assert.equal(j.profile.frame_pointers, false);
      assert.equal(j.profile.frame_pointers_source, 'config');
      assert.deepEqual(j.profile.orc && [j.profile.orc.layout, j.profile.orc.layout_source], ['type2', 'banner']);
      assert.match(r.err, /frame pointers: no, from the embedded config: .*CONFIG_UNWINDER_ORC=y; the frame-pointer strategies answer not_applicable/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a profile\'s explicit framePointers wins over the image', async () => {
    const { dir, args } = setup({ banner: BANNER, config: ORC_CONFIG }, { framePointers: true });
    try {
      const r = await run([...args, join(dir, 'dump')]);
      const j = JSON.parse(r.out) as Json;
      assert.equal(j.profile.frame_pointers, true);
      assert.equal(j.profile.frame_pointers_source, 'profile');
      assert.equal(j.verdicts.section?.not_applicable, undefined, 'the FP strategies ran');
      assert.match(r.err, /says framePointers true; using it over the image's evidence/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without --vmlinux the JSON still says where framePointers came from', async () => {
    const { dir } = setup({ banner: BANNER }, { framePointers: false });
    try {
      const r = await run(['--kallsyms', join(dir, 'kallsyms'), '--profile', join(dir, 'profile.json'), '--format', 'json', join(dir, 'dump')]);
      const j = JSON.parse(r.out) as Json;
      assert.deepEqual([j.profile.frame_pointers, j.profile.frame_pointers_source, j.profile.orc], [false, 'profile', null]);
      assert.deepEqual(j.verdicts.fp, { not_applicable: 1 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('no evidence (a 15-row ORC table, no function bytes): unknown, the FP strategies run, and the note says how to state it', async () => {
    const { dir, args } = setup({ banner: BANNER });
    try {
      const r = await run([...args, join(dir, 'dump')]);
      const j = JSON.parse(r.out) as Json;
      assert.equal(j.profile.frame_pointers, null);
      assert.equal(j.verdicts.fp?.not_applicable, undefined);
      assert.match(r.err, /frame pointers: cannot tell .*\{"framePointers": false\}/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('no banner: exit 2 naming --orc-layout; with it the check runs; bad values are refused', async () => {
    const { dir, args } = setup({ config: ORC_CONFIG });
    try {
      const dump = join(dir, 'dump');
      const refused = await run([...args, dump]);
      assert.equal(refused.code, 2);
      assert.match(refused.err, /vmlinux: .*no "Linux version" banner.*Pass --orc-layout type2 \(v4\.14–v6\.3\), type3 \(v6\.4\+\), or a kernel release such as 6\.1 or 6\.4/);
      for (const ok of ['type2', '6.1', '5.15.0-91-generic']) {
        const r = await run([...args, '--orc-layout', ok, dump]);
        assert.equal(r.code, 0, `${ok}: ${r.err}`);
        const j = JSON.parse(r.out) as Json;
        assert.deepEqual(j.profile.orc && [j.profile.orc.layout, j.profile.orc.layout_source], ['type2', 'flag']);
        assert.equal(j.verdicts.orc?.consistent, 1);
      }
      for (const bad of ['type9', '4.9', 'latest']) {
        const r = await run([...args, '--orc-layout', bad, dump]);
        assert.equal(r.code, 2);
        assert.match(r.err, new RegExp(`--orc-layout must be type2 \\(v4\\.14–v6\\.3\\), type3 \\(v6\\.4\\+\\), or a kernel release such as 6\\.1 or 6\\.4, not '${bad.replace('.', '\\.')}'`));
      }
      const alone = await run(['--kallsyms', join(dir, 'kallsyms'), '--orc-layout', 'type2', dump]);
      assert.equal(alone.code, 2);
      assert.match(alone.err, /--orc-layout names the layout of the ORC tables in --vmlinux FILE/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a file that is no kernel image: exit 2 naming the file', async () => {
    const { dir, args } = setup({ banner: BANNER });
    try {
      writeFileSync(join(dir, 'vmlinux'), 'not an image');
      const r = await run([...args, join(dir, 'dump')]);
      assert.equal(r.code, 2);
      assert.match(r.err, /not an ELF file/);
      assert.ok(r.err.includes(join(dir, 'vmlinux')), r.err);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Debian's kernel from the cache scripts/realkernel-setup.sh fills. The package's own config file
// is the independent evidence: CONFIG_UNWINDER_ORC=y, no CONFIG_FRAME_POINTER, no CONFIG_IKCONFIG.
const files = kernelFiles();
describe('Debian\'s kernel (bzImage from the package)', { skip: files ? false : `skipped: no cached kernel in ${DEFAULT_CACHE}: run scripts/realkernel-setup.sh first` }, () => {
  test('detected as ORC without frame pointers, from its ORC table, in the layout its banner names', (t) => {
    const f = files!;
    const config = readFileSync(f.config, 'utf8');
    assert.match(config, /^CONFIG_UNWINDER_ORC=y$/m);
    assert.doesNotMatch(config, /^CONFIG_FRAME_POINTER=y$/m);
    assert.match(config, /^# CONFIG_IKCONFIG is not set$/m, 'no embedded config: the ORC table is the first evidence');
    // The bzImage path itself is exercised by integration.test.ts's offline check.
    const elf = extractVmlinux(readFileSync(f.image));
    const kallsymsFile = join(f.cache, `${buildId(elf, elfSections(elf))}.kallsyms`);
    const symbols = existsSync(kallsymsFile) ? symbolsOf(readFileSync(kallsymsFile, 'utf8')) : undefined;
    if (!symbols) t.diagnostic(`no cached kallsyms at ${kallsymsFile} (a \`host qemu\` run dumps it): the code evidence is not checked`);
    const v = vmlinuxProfile(elf, symbols ? { symbols } : {});
    assert.equal(v.options.framePointers, false, v.notes.join('\n'));
    assert.equal(v.options.provenance?.framePointers?.source, 'orc');
    const orc = v.options.provenance!.evidence!.find((e) => e.source === 'orc')!;
    t.diagnostic(orc.detail);
    assert.equal(v.options.provenance?.orc?.release, f.release);
    assert.equal(v.options.provenance?.orc?.layout, 'type2', '6.1 predates the v6.4 layout');
    assert.ok(v.options.orc!.length > 100_000);
    if (symbols) {
      const code = v.options.provenance!.evidence!.find((e) => e.source === 'code')!;
      t.diagnostic(code.detail);
      assert.equal(code.framePointers, false, code.detail);
    }
    assert.equal(v.options.provenance!.evidence!.some((e) => e.source === 'config'), false);
  });
});
