// The adapter's pure parts: the newc cpio writer, the bzImage setup header, the ELF reader, the
// sampler's stack bounds. Expectations from the formats' definitions (buffer-format.rst,
// boot.rst, the ELF spec) and hand-built inputs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpioNewc, readCpioNewc, S_IFDIR, S_IFREG } from '../../services/realkernel/cpio.ts';
import { bzImagePayload, buildId, elfSections } from '../../services/realkernel/vmlinux.ts';
import { seededRandom, taskStackOf } from '../../services/realkernel/sampler.ts';
import { buildInitramfs, cleanKallsyms, hasFramePointers, INIT_SCRIPT, KALLSYMS_END } from '../../services/realkernel/guest.ts';
import { gunzipSync } from 'node:zlib';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('newc cpio', () => {
  test('header fields, 4-byte padding and the trailer', () => {
    const b = cpioNewc([{ name: 'init', mode: S_IFREG | 0o755, data: new TextEncoder().encode('abc') }]);
    const text = new TextDecoder().decode(b);
    assert.ok(text.startsWith('070701'));
    // c_mode is the second field; c_filesize the seventh; c_namesize the twelfth
    assert.equal(text.slice(14, 22), (0o100755).toString(16).padStart(8, '0'));
    assert.equal(text.slice(54, 62), '00000003');
    assert.equal(text.slice(94, 102), '00000005'); // "init\0"
    // header 110 + name 5 = 115 -> padded to 116; data 3 -> padded to 4; next header at 120
    assert.equal(text.slice(116, 119), 'abc');
    assert.equal(text.slice(120, 126), '070701');
    assert.ok(text.includes('TRAILER!!!\0'));
    assert.equal(b.length % 4, 0);
  });

  test('round trip', () => {
    const e = [{ name: 'bin', mode: S_IFDIR | 0o755 }, { name: 'bin/x', mode: S_IFREG | 0o644, data: Uint8Array.of(1, 2, 3, 4, 5) }];
    const back = readCpioNewc(cpioNewc(e));
    assert.deepEqual(back.map((x) => [x.name, x.mode, [...(x.data ?? [])]]), [['bin', S_IFDIR | 0o755, []], ['bin/x', S_IFREG | 0o644, [1, 2, 3, 4, 5]]]);
  });

  test('the initramfs holds busybox and an executable /init', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ss-cpio-'));
    const fake = join(dir, 'busybox');
    writeFileSync(fake, 'not really busybox');
    const entries = readCpioNewc(gunzipSync(buildInitramfs(fake)));
    const init = entries.find((x) => x.name === 'init')!;
    assert.equal(init.mode, S_IFREG | 0o755);
    assert.equal(new TextDecoder().decode(init.data), INIT_SCRIPT);
    assert.equal(new TextDecoder().decode(entries.find((x) => x.name === 'bin/busybox')!.data), 'not really busybox');
  });
});

describe('bzImage and ELF', () => {
  test('the payload is where setup_sects and payload_offset put it', () => {
    const img = new Uint8Array(0x2000);
    const dv = new DataView(img.buffer);
    img[0x1f1] = 3; // setup_sects
    dv.setUint32(0x202, 0x53726448, true); // "HdrS"
    dv.setUint16(0x206, 0x020f, true); // boot protocol 2.15
    dv.setUint32(0x248, 0x10, true); // payload_offset
    dv.setUint32(0x24c, 6, true); // payload_length
    img.set([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 4 * 512 + 0x10);
    const p = bzImagePayload(img);
    assert.equal(p.setupSects, 3);
    assert.deepEqual([...p.payload], [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
    assert.throws(() => bzImagePayload(new Uint8Array(0x300)), /HdrS/);
  });

  test('section headers, names and the GNU build-id note of a hand-built ELF64', () => {
    // Layout: ELF header (64) | .note (24 + 4 desc) at 0x40 | shstrtab at 0x60 | 3 section headers at 0x80
    const b = new Uint8Array(0x80 + 3 * 64);
    const dv = new DataView(b.buffer);
    b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
    dv.setBigUint64(0x28, 0x80n, true); // e_shoff
    dv.setUint16(0x3a, 64, true); // e_shentsize
    dv.setUint16(0x3c, 3, true); // e_shnum
    dv.setUint16(0x3e, 2, true); // e_shstrndx
    dv.setUint32(0x40, 4, true); // namesz "GNU\0"
    dv.setUint32(0x44, 4, true); // descsz
    dv.setUint32(0x48, 3, true); // NT_GNU_BUILD_ID
    b.set([0x47, 0x4e, 0x55, 0, 0xde, 0xad, 0xbe, 0xef], 0x4c);
    const names = '\0.notes\0.shstrtab\0';
    b.set(new TextEncoder().encode(names), 0x60);
    const sh = (i: number, name: number, type: number, addr: bigint, off: number, size: number): void => {
      const o = 0x80 + i * 64;
      dv.setUint32(o, name, true);
      dv.setUint32(o + 4, type, true);
      dv.setBigUint64(o + 0x10, addr, true);
      dv.setBigUint64(o + 0x18, BigInt(off), true);
      dv.setBigUint64(o + 0x20, BigInt(size), true);
    };
    sh(0, 0, 0, 0n, 0, 0);
    sh(1, 1, 7, 0xffffffff81e00000n, 0x40, 20);
    sh(2, 8, 3, 0n, 0x60, names.length);
    const s = elfSections(b);
    assert.deepEqual(s.map((x) => x.name), ['', '.notes', '.shstrtab']);
    assert.equal(s[1]!.addr, 0xffffffff81e00000n);
    assert.equal(buildId(b, s), 'deadbeef');
  });
});

describe('guest helpers', () => {
  test('CONFIG_FRAME_POINTER from a kernel config', () => {
    assert.equal(hasFramePointers('CONFIG_UNWINDER_ORC=y\n# CONFIG_UNWINDER_FRAME_POINTER is not set\n'), false);
    assert.equal(hasFramePointers('CONFIG_FRAME_POINTER=y\n'), true);
  });

  test('the kallsyms dump loses its CRs and the end marker', () => {
    assert.equal(cleanKallsyms(`ffffffff81000000 T _stext\r\n${KALLSYMS_END}\r\n`), 'ffffffff81000000 T _stext\n');
  });
});

describe('sampler helpers', () => {
  test('the seeded generator replays', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const xs = [a(), a(), a()];
    assert.deepEqual(xs, [b(), b(), b()]);
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    assert.notDeepEqual(xs, [seededRandom(43)(), 0, 0].slice(0, 3));
  });

  test('task stack bounds: the per-CPU top when rsp is under it, else the THREAD_SIZE-aligned block', () => {
    const size = 0x4000n;
    assert.deepEqual(taskStackOf(0xffffc90000637c18n, 0xffffc90000638000n, size), [0xffffc90000634000n, 0xffffc90000638000n]);
    // Mid task switch: the per-CPU top already names the next task.
    assert.deepEqual(taskStackOf(0xffffc90000637c18n, 0xffffc90000010000n, size), [0xffffc90000634000n, 0xffffc90000638000n]);
    assert.equal(taskStackOf(0x7ffce7aa5a18n, 0xffffc90000638000n, size), undefined, 'a user rsp is on no task stack');
    // rsp at the very top: an empty stack (entry_SYSCALL_64 after `mov cpu_current_top_of_stack, %rsp`), not the block above it.
    assert.deepEqual(taskStackOf(0xffffc90000638000n, 0xffffc90000638000n, size), [0xffffc90000634000n, 0xffffc90000638000n]);
  });
});
