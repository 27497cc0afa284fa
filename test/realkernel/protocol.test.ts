// The gdbstub client's protocol layer, on packets recorded from QEMU 7.2's gdbstub
// (test/realkernel/fixtures: target.xml, i386-64bit.xml, a `g` reply, the raw wire of a stop,
// a `g` and two `m` reads). Expected values are read off the bytes by hand or taken from the
// protocol's definition (GDB manual, "Overview" and "Target Descriptions"), not from the client.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checksum, decodeBody, decodeRegisters, encodePacket, parseTargetXml, splitPackets, xmlIncludes } from '../../services/realkernel/gdbstub.ts';

const F = (n: string): string => readFileSync(fileURLToPath(new URL(`./fixtures/${n}`, import.meta.url)), 'latin1');

describe('RSP packets', () => {
  test('checksum is the byte sum mod 256, two lowercase hex digits', () => {
    assert.equal(checksum('g'), 0x67);
    assert.equal(encodePacket('g'), '$g#67');
    // "m0,4": 0x6d + 0x30 + 0x2c + 0x34 = 0x1fd, mod 256 = 0xfd
    assert.equal(encodePacket('m0,4'), '$m0,4#fd');
    assert.equal(encodePacket(''), '$#00');
  });

  test('run-length decoding: "0* " is four zeros (space = 32, 32 - 29 = 3 more)', () => {
    assert.equal(decodeBody('0* '), '0000');
    assert.equal(decodeBody('ab*"c'), 'abbbbbbc'); // '"' = 34 -> 5 more copies of b
    assert.equal(decodeBody('}]'), '}'); // ']' ^ 0x20 = '}'
    assert.equal(decodeBody('x}\x03y'), 'x#y'); // 0x03 ^ 0x20 = '#'
  });

  test('the recorded wire splits into the stop reply, the g reply and the two m replies', () => {
    const rec = JSON.parse(F('wire.txt')) as { wire: string; m40: string; m801: string };
    const { packets, rest } = splitPackets(rec.wire);
    assert.equal(rest, '');
    assert.ok(packets.every((p) => p.ok), 'every recorded checksum verifies');
    assert.deepEqual(packets.map((p) => p.body.slice(0, 9)), ['T02thread', packets[1]!.body.slice(0, 9), packets[2]!.body.slice(0, 9), 'E22']);
    assert.equal(packets[0]!.body, 'T02thread:01;');
    assert.equal(packets[1]!.body.length, 608 * 2, 'g: 608 bytes of registers');
    assert.equal(packets[2]!.body.length, 0x40 * 2, 'm…,40 returns 64 bytes');
    // QEMU 7.2 refuses a read of more than 2048 bytes (PacketSize=0x1000 hex digits).
    assert.equal(rec.m801, 'E22');
  });

  test('a packet split across reads waits for its checksum; a bad checksum is flagged', () => {
    const a = splitPackets('+$OK#9');
    assert.deepEqual(a.packets, []);
    assert.equal(a.rest, '$OK#9');
    const b = splitPackets(a.rest + 'a+$OK#00');
    assert.deepEqual(b.packets, [{ body: 'OK', ok: true }, { body: 'OK', ok: false }]);
  });
});

describe('target description', () => {
  const top = F('target.xml');
  const regs = parseTargetXml([top, F('i386-64bit.xml')]);

  test('target.xml includes i386-64bit.xml', () => {
    assert.deepEqual(xmlIncludes(top), ['i386-64bit.xml']);
  });

  test('registers inside XML comments are not registers', () => {
    const names = regs.map((r) => r.name);
    for (const hidden of ['cs_base', 'ss_base', 'ds_base', 'es_base']) assert.ok(!names.includes(hidden), hidden);
    assert.deepEqual(names.slice(0, 18), ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'eflags']);
    const i = names.indexOf('fs_base');
    assert.deepEqual(names.slice(i, i + 9), ['fs_base', 'gs_base', 'k_gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer']);
  });

  test('the g packet layout adds up to the 608 bytes QEMU sends', () => {
    const bytes = regs.reduce((n, r) => n + r.bits / 8, 0);
    assert.equal(bytes, 608);
  });

  test('the recorded g reply decodes at the offsets of the layout', () => {
    const hex = F('g-reply.txt').trim();
    const v = decodeRegisters(hex, regs);
    // rax = first 8 bytes, little-endian; rip at byte 128; eflags (4 bytes) then cs, ss.
    const le = (off: number, n: number): bigint => BigInt('0x' + (hex.slice(off * 2, (off + n) * 2).match(/../g) ?? []).reverse().join(''));
    assert.equal(v.get('rax'), le(0, 8));
    assert.equal(v.get('rsp'), le(56, 8));
    assert.equal(v.get('rip'), le(128, 8));
    assert.equal(v.get('cs'), le(140, 4));
    assert.equal(v.get('ss'), le(144, 4));
    assert.equal(v.get('cs'), 0x10n, 'stopped in the kernel: __KERNEL_CS');
    assert.equal(v.get('ss'), 0x18n, '__KERNEL_DS');
    assert.ok((v.get('rip')! >> 32n) === 0xffffffffn, 'rip is kernel text');
  });
});
