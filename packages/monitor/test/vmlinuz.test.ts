/**
 * `--vmlinuz` building blocks on synthetic data: LZ4 legacy frames, the bzImage setup header and
 * payload, a vmlinux ELF with its appended KASLR relocation table (3-list and 2-list formats),
 * relocation as the decompressor does it, the x86 patterns the comparison recognises, and the
 * alt_instr layout detection.
 */
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { SymbolTableBuilder } from '@pmi/kernel';
import type { CheckContext } from '../src/checks/types.js';
import {
  Vmlinux,
  compareWithVmlinuz,
  detectAltLayout,
  detectCompression,
  lz4LegacyDecompress,
  parseBzImage,
  parseElf,
  readRelocTable,
} from '../src/vmlinuz/index.js';
import { decodeInsn, nopLen, padRun } from '../src/vmlinuz/x86.js';

const K = 0xffffffff80000000n;
const LOAD = 0x1000000;

/** A little vmlinux: .text (PT_LOAD at 16 MiB), a zero-based .data..percpu segment after it, an
 * .init.data segment, section headers, then the relocation lists (32, [inverse 32,] 64). */
function buildVmlinux(opts: { inverse: boolean }): { elf: Buffer; elfEnd: number; textOff: number } {
  const textOff = 0x1000;
  const textLen = 0x2000;
  const pcpuOff = 0x3000;
  const pcpuLen = 0x100;
  const initOff = 0x4000;
  const initLen = 0x800;
  const shoff = 0x5000;
  const shstr = Buffer.from('\0.text\0.data..percpu\0.init.data\0.shstrtab\0', 'latin1');
  const shstrOff = 0x4f00;
  const nsec = 5;
  const elfEnd = shoff + nsec * 64;
  const elf = Buffer.alloc(elfEnd);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2;
  elf[5] = 1;
  elf[6] = 1;
  elf.writeUInt16LE(2, 0x10);
  elf.writeUInt16LE(62, 0x12);
  elf.writeBigUInt64LE(0x40n, 0x20); // phoff
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(56, 0x36);
  elf.writeUInt16LE(3, 0x38);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(nsec, 0x3c);
  elf.writeUInt16LE(4, 0x3e);
  const ph = (i: number, flags: number, off: number, vaddr: bigint, paddr: number, len: number) => {
    const o = 0x40 + i * 56;
    elf.writeUInt32LE(1, o);
    elf.writeUInt32LE(flags, o + 4);
    elf.writeBigUInt64LE(BigInt(off), o + 8);
    elf.writeBigUInt64LE(vaddr, o + 16);
    elf.writeBigUInt64LE(BigInt(paddr), o + 24);
    elf.writeBigUInt64LE(BigInt(len), o + 32);
    elf.writeBigUInt64LE(BigInt(len), o + 40);
  };
  ph(0, 5, textOff, K + BigInt(LOAD), LOAD, textLen);
  ph(1, 6, pcpuOff, 0n, LOAD + 0x2000, pcpuLen); // zero-based per-CPU: vaddr 0, paddr after .text
  ph(2, 7, initOff, K + BigInt(LOAD + 0x3000), LOAD + 0x3000, initLen);
  shstr.copy(elf, shstrOff);
  const sh = (i: number, name: number, type: number, addr: bigint, off: number, size: number) => {
    const o = shoff + i * 64;
    elf.writeUInt32LE(name, o);
    elf.writeUInt32LE(type, o + 4);
    elf.writeBigUInt64LE(addr, o + 16);
    elf.writeBigUInt64LE(BigInt(off), o + 24);
    elf.writeBigUInt64LE(BigInt(size), o + 32);
  };
  sh(1, 1, 1, K + BigInt(LOAD), textOff, textLen);
  sh(2, 7, 1, 0n, pcpuOff, pcpuLen);
  sh(3, 21, 1, K + BigInt(LOAD + 0x3000), initOff, initLen);
  sh(4, 32, 3, 0n, shstrOff, shstr.length);
  // field contents (link values)
  elf.writeUInt32LE(0x81000100, textOff + 0x10); // R_X86_64_32S: &text+0x100
  elf.writeInt32LE(0x7effeffc, textOff + 0x20); // PC32 to a per-CPU symbol (inverse)
  elf.writeBigUInt64LE(0xffffffff81000200n, textOff + 0x30); // R_X86_64_64
  elf.writeBigUInt64LE(0xffffffff81000300n, pcpuOff + 0x8); // a 64-bit field inside .data..percpu
  elf.writeBigUInt64LE(0xffffffff81000400n, initOff + 0x10); // R_X86_64_64 in .init.data
  // bytes after .text's segment up to the next page: what the decompressor leaves there
  const va = (off: number) => 0x81000000 + off; // link VA truncated to 32 bits
  const words: number[] = [0]; // first: the 64-bit list's terminator (the table starts at elfEnd)
  words.push(va(0x30), va(0x3000 + 0x10), 0x81002000 + 0x8); // 64-bit (percpu: at __per_cpu_load)
  if (opts.inverse) words.push(0, va(0x20));
  words.push(0, va(0x10)); // 32-bit list, read first from the end
  const table = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => table.writeUInt32LE(w >>> 0, i * 4));
  return { elf: Buffer.concat([elf, table]), elfEnd, textOff };
}

describe('LZ4 legacy frames', () => {
  it('decodes literals, matches and overlapping (RLE) matches', () => {
    // "abcd" + match(offset 4, len 8) ; "a" + match(offset 1, len 6) ; last literals "xyz"
    const block = Buffer.from([
      0x44,
      ...Buffer.from('abcd'),
      0x04,
      0x00,
      0x12,
      0x61,
      0x01,
      0x00,
      0x30,
      ...Buffer.from('xyz'),
    ]);
    const frame = Buffer.alloc(8 + block.length);
    frame.writeUInt32LE(0x184c2102, 0);
    frame.writeUInt32LE(block.length, 4);
    block.copy(frame, 8);
    const want = 'abcdabcdabcd' + 'aaaaaaa' + 'xyz';
    expect(Buffer.from(lz4LegacyDecompress(frame, want.length)).toString()).toBe(want);
    expect(detectCompression(frame)).toBe('lz4');
  });

  it('rejects a match before the start of the output and a wrong size', () => {
    const frame = Buffer.from([0x02, 0x21, 0x4c, 0x18, 5, 0, 0, 0, 0x10, 0x61, 0x09, 0x00, 0x00]);
    expect(() => lz4LegacyDecompress(frame, 20)).toThrow(/offset/);
    const ok = Buffer.from([0x02, 0x21, 0x4c, 0x18, 2, 0, 0, 0, 0x10, 0x61]);
    expect(() => lz4LegacyDecompress(ok, 2)).toThrow(/expected 2/);
  });
});

describe('bzImage + vmlinux', () => {
  function bzImage(payload: Buffer, uncompressed: number): Buffer {
    const setupSects = 1;
    const pm = (setupSects + 1) * 512;
    const b = Buffer.alloc(pm + 0x40 + payload.length + 4);
    b[0x1f1] = setupSects;
    b.write('HdrS', 0x202, 'latin1');
    b.writeUInt16LE(0x20f, 0x206);
    b.writeUInt16LE(0x100, 0x20e); // kernel_version at 0x300
    b.write('9.9.9-test (pmi) #1 SMP', 0x300, 'latin1');
    b.writeUInt32LE(0x200000, 0x230);
    b[0x234] = 1;
    b.writeUInt32LE(0x40, 0x248);
    b.writeUInt32LE(payload.length + 4, 0x24c);
    b.writeBigUInt64LE(BigInt(LOAD), 0x258);
    b.writeUInt32LE(0x800000, 0x260);
    payload.copy(b, pm + 0x40);
    b.writeUInt32LE(uncompressed, pm + 0x40 + payload.length);
    return b;
  }

  it('reads the setup header, decompresses the payload and finds the ELF and its relocations', async () => {
    const { elf } = buildVmlinux({ inverse: true });
    const bz = bzImage(gzipSync(elf), elf.length);
    const h = parseBzImage(bz);
    expect(h).toMatchObject({ protocol: 0x20f, setupSects: 1, pmOffset: 1024, compression: 'gzip', relocatable: true });
    expect(h.prefAddress).toBe(BigInt(LOAD));
    expect(h.version).toBe('9.9.9-test (pmi) #1 SMP');
    expect(h.uncompressedSize).toBe(elf.length);
    const v = await Vmlinux.fromBzImage(bz);
    expect(v.loadPhys).toBe(LOAD);
    expect(v.segments).toHaveLength(3);
    expect(v.sections.map((s) => s.name)).toEqual(['', '.text', '.data..percpu', '.init.data', '.shstrtab']);
    expect(v.relocs.rel32.length).toBe(1);
    expect(v.relocs.inv32.length).toBe(1);
    expect(v.relocs.rel64.length).toBe(3);
  });

  it('relocates 32-bit, inverse 32-bit and 64-bit fields like handle_relocations, additively', () => {
    const { elf, textOff } = buildVmlinux({ inverse: true });
    const orig = Buffer.from(elf);
    const v = Vmlinux.fromElf(new Uint8Array(elf), undefined);
    const at = (va: bigint, n: number) => Buffer.from(v.read(va, n));
    const slide = 0x2e00000;
    v.relocateTo(slide);
    expect(v.slide).toBe(slide);
    expect(at(K + BigInt(LOAD) + 0x10n, 4).readUInt32LE(0)).toBe(0x81000100 + slide);
    expect(at(K + BigInt(LOAD) + 0x20n, 4).readInt32LE(0)).toBe(0x7effeffc - slide);
    expect(at(K + BigInt(LOAD) + 0x30n, 8).readBigUInt64LE(0)).toBe(0xffffffff81000200n + BigInt(slide));
    expect(at(K + BigInt(LOAD) + 0x3010n, 8).readBigUInt64LE(0)).toBe(0xffffffff81000400n + BigInt(slide));
    // the per-CPU segment is addressed by its load address (p_paddr), as the decompressor does
    expect(Buffer.from(v.data).readBigUInt64LE(0x3008)).toBe(0xffffffff81000300n + BigInt(slide));
    // a carry out of the low word (into, and here through, the high word: arithmetic mod 2^64)
    const big = 0x7ff00000;
    v.relocateTo(big);
    expect(at(K + BigInt(LOAD) + 0x30n, 8).readBigUInt64LE(0)).toBe(
      BigInt.asUintN(64, 0xffffffff81000200n + BigInt(big)),
    );
    v.relocateTo(0);
    expect(Buffer.from(v.data).equals(orig)).toBe(true);
    expect(textOff).toBe(0x1000);
  });

  it('reads the 2-list table of kernels without inverse per-CPU relocations (6.15+)', () => {
    const { elf, elfEnd } = buildVmlinux({ inverse: false });
    const r = readRelocTable(new Uint8Array(elf), elfEnd);
    expect(r.inv32.length).toBe(0);
    expect(r.rel32.length).toBe(1);
    expect(r.rel64.length).toBe(3);
    expect(r.start).toBe(elfEnd);
  });

  it('rejects a table that does not start at the end of the ELF image or has no terminator', () => {
    const { elf, elfEnd } = buildVmlinux({ inverse: true });
    expect(() => readRelocTable(new Uint8Array(elf), elfEnd - 4)).toThrow(/starts at/);
    const noZero = Buffer.concat([elf.subarray(0, elfEnd), Buffer.from([1, 0, 0, 0x81, 2, 0, 0, 0x81])]);
    expect(() => readRelocTable(new Uint8Array(noZero), elfEnd)).toThrow(/terminator/);
    expect(() => parseElf(new Uint8Array(16))).toThrow(/not an ELF/);
  });

  it('gives the decompressor leftover for bytes between segments, unrelocated', () => {
    const { elf } = buildVmlinux({ inverse: true });
    // output offset 0x2100..0x3000 is no segment's (per-CPU ends at 0x2100): parse_elf leaves the
    // decompressed bytes at that offset, which are the ELF's own bytes at file offset 0x2100
    elf[0x2100] = 0xab;
    const v = Vmlinux.fromElf(new Uint8Array(elf), undefined);
    v.relocateTo(0x200000);
    expect(v.covered(K + BigInt(LOAD) + 0x2100n)).toBe(false);
    expect(v.read(K + BigInt(LOAD) + 0x2100n, 1)[0]).toBe(0xab);
  });
});

describe('x86 patterns', () => {
  const b = (...x: number[]) => new Uint8Array(x);
  it('recognises every NOP encoding the kernel emits', () => {
    const nops = [
      [0x90],
      [0x66, 0x90],
      [0x0f, 0x1f, 0x00],
      [0x0f, 0x1f, 0x40, 0x00],
      [0x0f, 0x1f, 0x44, 0x00, 0x00],
      [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
      [0x0f, 0x1f, 0x80, 0, 0, 0, 0],
      [0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],
      [0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],
      [0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],
      [0x66, 0x0f, 0x1f, 0x00], // ENDBR poison (6.12)
      [0x0f, 0x1f, 0x40, 0xd6], // ENDBR poison (6.2)
    ];
    for (const n of nops) expect(nopLen(b(...n), 0, n.length), Buffer.from(n).toString('hex')).toBe(n.length);
    expect(nopLen(b(0xf3, 0x0f, 0x1e, 0xfa), 0, 4)).toBe(0); // endbr64 is not a NOP here
    expect(nopLen(b(0x0f, 0x1f, 0x48, 0x00), 0, 4)).toBe(0); // 0f 1f /1 is not NOP
  });

  it('treats JMP over INT3s (long NOP runs) as padding up to its target only', () => {
    expect(padRun(b(0xeb, 0x03, 0xcc, 0xcc, 0xcc), 0, 5)).toBe(5);
    expect(padRun(b(0xeb, 0x03, 0xcc, 0x90, 0xcc), 0, 5)).toBe(0);
    expect(padRun(b(0x90, 0x0f, 0x1f, 0x00, 0xc3), 0, 5)).toBe(4);
    expect(padRun(b(0xcc, 0xcc), 0, 2)).toBe(0);
    expect(padRun(b(0xcc, 0xcc), 0, 2, true)).toBe(2);
  });

  it('decodes direct and register-indirect branches, RET, INT3, LFENCE', () => {
    expect(decodeInsn(b(0xe8, 0x10, 0, 0, 0), 0, 5)).toEqual({ op: 'call', len: 5, target: 0x15 });
    expect(decodeInsn(b(0x2e, 0xe8, 0xfb, 0xff, 0xff, 0xff), 0, 6)).toEqual({ op: 'call', len: 6, target: 1 });
    expect(decodeInsn(b(0xeb, 0xfe), 0, 2)).toEqual({ op: 'jmp', len: 2, target: 0 });
    expect(decodeInsn(b(0x0f, 0x85, 1, 0, 0, 0), 0, 6)).toEqual({ op: 'jcc', len: 6, target: 7 });
    expect(decodeInsn(b(0x41, 0xff, 0xd3), 0, 3)).toEqual({ op: 'callr', len: 3, reg: 11 });
    expect(decodeInsn(b(0xff, 0xe0), 0, 2)).toEqual({ op: 'jmpr', len: 2, reg: 0 });
    expect(decodeInsn(b(0x0f, 0xae, 0xe8), 0, 3)).toEqual({ op: 'lfence', len: 3 });
    expect(decodeInsn(b(0xc3), 0, 1)).toEqual({ op: 'ret', len: 1 });
    expect(decodeInsn(b(0xcc), 0, 1)).toEqual({ op: 'int3', len: 1 });
    expect(decodeInsn(b(0x48, 0x89, 0xe5), 0, 3)).toBeUndefined();
  });
});

describe('alt_instr layout', () => {
  function table(size: number, entries: { instrLen: number; replLen: number; cpuid: number; flags?: number }[]) {
    const t = Buffer.alloc(size * entries.length);
    entries.forEach((e, i) => {
      const o = i * size;
      t.writeInt32LE(-0x100000 - o, o); // instruction far below
      t.writeInt32LE(0x1000 - o - 4 + i * 8, o + 4); // replacement at table start + 0x1000 + 8i
      if (size === 14) {
        t.writeUInt16LE(e.cpuid, o + 8);
        t.writeUInt16LE(e.flags ?? 0, o + 10);
        t[o + 12] = e.instrLen;
        t[o + 13] = e.replLen;
      } else {
        t.writeUInt16LE(e.cpuid | ((e.flags ?? 0) << 15), o + 8);
        t[o + 10] = e.instrLen;
        t[o + 11] = e.replLen;
      }
    });
    return new Uint8Array(t);
  }
  const entries = [
    { instrLen: 5, replLen: 5, cpuid: 3 * 32 + 7 },
    { instrLen: 6, replLen: 3, cpuid: 18 * 32 + 1, flags: 1 },
    { instrLen: 3, replLen: 0, cpuid: 7 * 32 + 12 },
  ];
  const repl = { start: 0x1000, end: 0x1100 };

  it('tells 12-, 13- and 14-byte entries apart and reads ALT_FLAG_NOT in the u16 layouts', () => {
    const l14 = detectAltLayout(table(14, entries), 0, repl);
    expect(l14.size).toBe(14);
    expect(l14.count).toBe(3);
    expect(l14.read(table(14, entries), 14)).toEqual({ instrLen: 6, replLen: 3, feature: 18 * 32 + 1, flags: 1 });
    const t12 = table(12, entries);
    const l12 = detectAltLayout(t12, 0, repl);
    expect(l12.size).toBe(12);
    expect(l12.read(t12, 12)).toEqual({ instrLen: 6, replLen: 3, feature: 18 * 32 + 1, flags: 1 });
    const t13 = Buffer.alloc(13 * 2);
    Buffer.from(table(12, entries.slice(0, 1))).copy(t13, 0);
    const e1 = Buffer.from(table(12, entries.slice(0, 1)));
    e1.writeInt32LE(0x1000 - 13 - 4 + 8, 4);
    e1.writeInt32LE(-0x100000 - 13, 0);
    e1.copy(t13, 13);
    expect(detectAltLayout(new Uint8Array(t13), 0, repl).size).toBe(13);
  });

  it('refuses a table no layout explains', () => {
    expect(() => detectAltLayout(new Uint8Array(11), 0, repl)).toThrow(/layout/);
    const bad = table(14, [{ instrLen: 2, replLen: 5, cpuid: 1 }]); // replacement longer than the original
    expect(() => detectAltLayout(bad, 0, repl)).toThrow(/layout/);
  });
});

/**
 * A whole pass on a tiny synthetic kernel: a vmlinux with a text+rodata segment and an init segment
 * holding the patch tables, and "memory" = that image relocated for a slide, patched at boot the
 * way the kernel does, plus one byte of tampering.
 */
describe('compareWithVmlinuz on a synthetic kernel', () => {
  const SLIDE = 0x1c000000n;
  const LINK = K + BigInt(LOAD); // 0xffffffff81000000
  const RT = LINK + SLIDE;
  // text layout (offsets from _text)
  const F1 = 0x100; // a function: [site: return thunk jmp] …
  const THUNK = 0x800; // __x86_return_thunk
  const HWEIGHT = 0x900; // __sw_hweight64
  const F2 = 0x200; // alternative: call __sw_hweight64 → popcnt
  const F3 = 0x300; // lock prefix
  const F4 = 0x400; // static key: nop5 → jmp F4+0x20
  const F5 = 0x500; // an innocent function the test tampers with
  const ETEXT = 0x1000;
  const RODATA = 0x1000; // .rodata: banner + a relocated pointer
  const ERODATA = 0x2000;
  const INIT = 0x3000; // .init.data: tables and .altinstr_replacement

  function kernel() {
    const segLen = 0x2000;
    const initLen = 0x200;
    const elfHdr = 0x1000;
    const initOff = elfHdr + segLen;
    const elfEnd = initOff + initLen;
    const elf = Buffer.alloc(elfEnd);
    elf.writeUInt32BE(0x7f454c46, 0);
    elf[4] = 2;
    elf[5] = 1;
    elf.writeUInt16LE(62, 0x12);
    elf.writeBigUInt64LE(0x40n, 0x20);
    elf.writeUInt16LE(56, 0x36);
    elf.writeUInt16LE(2, 0x38);
    const ph = (i: number, flags: number, off: number, at: number, len: number) => {
      const o = 0x40 + i * 56;
      elf.writeUInt32LE(1, o);
      elf.writeUInt32LE(flags, o + 4);
      elf.writeBigUInt64LE(BigInt(off), o + 8);
      elf.writeBigUInt64LE(LINK + BigInt(at), o + 16);
      elf.writeBigUInt64LE(BigInt(LOAD + at), o + 24);
      elf.writeBigUInt64LE(BigInt(len), o + 32);
      elf.writeBigUInt64LE(BigInt(len), o + 40);
    };
    ph(0, 5, elfHdr, 0, segLen);
    ph(1, 7, initOff, INIT, initLen);
    const t = elf.subarray(elfHdr, elfHdr + segLen);
    const init = elf.subarray(initOff, elfEnd);
    t.fill(0xcc, 0, ETEXT);
    const rel = (at: number, to: number, len: number) => to - (at + len);
    // F1: endbr-less body "xor eax,eax; jmp __x86_return_thunk"
    t.set([0x31, 0xc0, 0xe9], F1);
    t.writeInt32LE(rel(F1 + 2, THUNK, 5), F1 + 3);
    t[THUNK] = 0xc3;
    t[HWEIGHT] = 0xc3;
    // F2: call __sw_hweight64 (5 bytes) — alternative: popcnt %rdi,%rax (5 bytes)
    t[F2] = 0xe8;
    t.writeInt32LE(rel(F2, HWEIGHT, 5), F2 + 1);
    // F3: lock incl (%rdi)
    t.set([0xf0, 0xff, 0x07, 0xc3], F3);
    // F4: static key nop5, jump target F4+0x20
    t.set([0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3], F4);
    // F5: mov %rdi,%rax; ret
    t.set([0x48, 0x89, 0xf8, 0xc3], F5);
    t.write('Linux version 9.9.9-synthetic\0', RODATA, 'latin1');
    t.writeBigUInt64LE(LINK + BigInt(F5), RODATA + 0x100); // a pointer (R_X86_64_64)
    // init: .return_sites @0, .smp_locks @0x10, __jump_table @0x20, .altinstructions @0x40, replacement @0x80
    const tab = (off: number) => INIT + off; // position from _text
    init.writeInt32LE(F1 + 2 - tab(0), 0);
    init.writeInt32LE(F3 - tab(0x10), 0x10);
    init.writeInt32LE(F4 - tab(0x20), 0x20);
    init.writeInt32LE(F4 + 0x20 - tab(0x24), 0x24);
    init.writeInt32LE(F2 - tab(0x40), 0x40);
    init.writeInt32LE(tab(0x80) - tab(0x44), 0x44);
    init.writeUInt16LE(4 * 32 + 23, 0x48); // X86_FEATURE_POPCNT
    init[0x4c] = 5;
    init[0x4d] = 5;
    init.set([0xf3, 0x48, 0x0f, 0xb8, 0xc7], 0x80);
    // relocation table: 64-bit list with the rodata pointer; empty inverse and 32-bit lists
    const relocs = Buffer.alloc(20);
    relocs.writeUInt32LE(0, 0);
    relocs.writeUInt32LE((0x81000000 + RODATA + 0x100) >>> 0, 4);
    // words 2..4: 0 (inverse terminator), 0 (32-bit terminator) … read from the end: 32-bit list empty
    const vmlinux = Buffer.concat([elf, relocs.subarray(0, 16)]);
    // symbols as kallsyms would give them (runtime addresses)
    const b = new SymbolTableBuilder();
    const sym = (name: string, type: string, at: number) => b.add(name, type, RT + BigInt(at));
    sym('_text', 'T', 0);
    sym('_stext', 'T', 0);
    sym('f1', 'T', F1);
    sym('f2', 'T', F2);
    sym('f3', 'T', F3);
    sym('f4', 'T', F4);
    sym('__do_f5', 't', F5); // a local alias first in table order (like __do_sys_getppid)
    sym('f5', 'T', F5);
    sym('__x86_return_thunk', 'T', THUNK);
    sym('__sw_hweight64', 'T', HWEIGHT);
    sym('_etext', 'T', ETEXT);
    sym('__start_rodata', 'D', RODATA);
    sym('linux_banner', 'D', RODATA);
    sym('__end_rodata', 'D', ERODATA);
    sym('__return_sites', 'R', tab(0));
    sym('__return_sites_end', 'R', tab(4));
    sym('__smp_locks', 'R', tab(0x10));
    sym('__smp_locks_end', 'R', tab(0x14));
    sym('__start___jump_table', 'D', tab(0x20));
    sym('__stop___jump_table', 'D', tab(0x30));
    sym('__alt_instructions', 'R', tab(0x40));
    sym('__alt_instructions_end', 'R', tab(0x4e));
    sym('_end', 'B', 0x4000);
    return { vmlinux, symbols: b.build() };
  }

  async function pass(patch: (m: Buffer) => void) {
    const { vmlinux, symbols } = kernel();
    const image = Vmlinux.fromElf(new Uint8Array(Buffer.from(vmlinux)), undefined);
    // memory: the image relocated for the slide, then what the kernel writes at boot
    const booted = Vmlinux.fromElf(new Uint8Array(Buffer.from(vmlinux)), undefined);
    booted.relocateTo(SLIDE);
    const m = Buffer.from(booted.read(LINK, ERODATA));
    m.set([0xc3, 0xcc, 0xcc, 0xcc, 0xcc], F1 + 2); // apply_returns: no return thunk needed
    m.set([0xf3, 0x48, 0x0f, 0xb8, 0xc7], F2); // apply_alternatives: the CPU has POPCNT
    m[F3] = 0x3e; // uniprocessor: lock → ds
    m[F4] = 0xe9; // static key enabled: jmp F4+0x20
    m.writeInt32LE(0x20 - 5, F4 + 1);
    patch(m);
    const paging = {
      async readVirtualBatch(ops: { va: bigint; buf: Uint8Array }[]) {
        for (const op of ops) {
          const o = Number(op.va - RT);
          op.buf.set(m.subarray(o, o + op.buf.length));
        }
        return [];
      },
    };
    const d = { symbols, paging, facts: { kaslrSlide: SLIDE, release: '9.9.9-synthetic' } };
    return compareWithVmlinuz({ d, k: undefined, mem: undefined } as unknown as CheckContext, 'synthetic-vmlinuz', {
      image,
    });
  }

  it('explains relocation and every boot-time patch, and flags nothing', async () => {
    const out = await pass(() => {});
    expect(out.stats.flagged.list).toEqual([]);
    expect(out.findings).toEqual([]);
    expect(out.stats.slide).toBe('0x1c000000');
    expect(out.stats.kinds.return_sites).toMatchObject({ sites: 1, changed: 1, explained: 1 });
    expect(out.stats.kinds.altinstructions).toMatchObject({ sites: 1, changed: 1, explained: 1 });
    expect(out.stats.kinds.smp_locks).toMatchObject({ changed: 1, explained: 1 });
    expect(out.stats.kinds.jump_table).toMatchObject({ changed: 1, explained: 1 });
    expect(out.stats.tables.find((t) => t.kind === 'altinstructions')?.layout).toMatch(/14/);
  });

  it('flags a patched function with its symbol, and a patch site in a form the kernel never writes', async () => {
    const out = await pass((m) => {
      m.set([0xe9, 0x00, 0x01, 0x00, 0x00], F5); // jmp elsewhere
      m.set([0xe8, 0x11, 0x22, 0x33, 0x44], F1 + 2); // return site → a call somewhere
      m[F3] = 0x90; // lock prefix → nop: not a UP patch
    });
    const f = out.stats.flagged.list;
    expect(f.map((x) => [x.symbol, x.length, x.sites])).toEqual([
      ['f1+0x2', 5, ['return_sites']],
      ['f3', 1, ['smp_locks']],
      ['f5', 5, []],
    ]);
    expect(out.findings).toHaveLength(3);
    expect(out.findings[2]).toMatchObject({
      check: 'vmlinuz',
      kind: 'tampering',
      symbol: 'f5',
      old: '4889f8c3cc',
      new: 'e900010000',
    });
    expect(out.findings[2].evidence).toContain('not a patch site');
    expect(out.findings[2].evidence).toContain('(= __do_f5)');
  });

  it('refuses an image that is not the running kernel (banner) without flagging', async () => {
    const out = await pass((m) => m.write('Linux version 1.0.0-other  \0', RODATA, 'latin1'));
    expect(out.findings).toEqual([]);
    expect(out.partial).toBe(true);
    expect(out.warnings[0]).toMatch(/not the running kernel/);
  });
});
