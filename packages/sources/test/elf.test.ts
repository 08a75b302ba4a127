import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { ElfCoreSource } from '@pmi/sources';
import { expectSameBytes, fileBytes, hx, pmiError, randInt, randomBytes, rng, tmpDir } from './helpers.js';

let dir: string;
beforeAll(() => {
  dir = tmpDir();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Load {
  paddr: number;
  filesz: number;
  memsz?: number;
  vaddr?: bigint;
}
interface Note {
  name: string;
  type: number;
  desc: Uint8Array;
}
interface BuildOpts {
  cls?: number;
  data?: number;
  type?: number;
  phentsize?: number;
  xnum?: boolean;
  truncate?: number;
}

/** Hand-built ELF64 core, written from the ELF spec; returns where each PT_LOAD's bytes went. */
function buildCore(name: string, loads: Load[], notes: Note[] = [], o: BuildOpts = {}) {
  const pad4 = (n: number) => (n + 3) & ~3;
  const noteParts: Buffer[] = [];
  for (const n of notes) {
    const nm = Buffer.from(n.name + '\0');
    const h = Buffer.alloc(12);
    h.writeUInt32LE(nm.length, 0);
    h.writeUInt32LE(n.desc.length, 4);
    h.writeUInt32LE(n.type, 8);
    noteParts.push(h, Buffer.concat([nm], pad4(nm.length)), Buffer.concat([Buffer.from(n.desc)], pad4(n.desc.length)));
  }
  const noteBuf = Buffer.concat(noteParts);
  const phnum = loads.length + (notes.length ? 1 : 0);
  const phoff = 64;
  const shoff = o.xnum ? phoff + phnum * 56 : 0;
  let off = phoff + phnum * 56 + (o.xnum ? 64 : 0);
  const eh = Buffer.alloc(64);
  eh.set([0x7f, 0x45, 0x4c, 0x46, o.cls ?? 2, o.data ?? 1, 1], 0);
  eh.writeUInt16LE(o.type ?? 4, 16);
  eh.writeUInt16LE(62, 18);
  eh.writeUInt32LE(1, 20);
  eh.writeBigUInt64LE(BigInt(phoff), 32);
  eh.writeBigUInt64LE(BigInt(shoff), 40);
  eh.writeUInt16LE(64, 52);
  eh.writeUInt16LE(o.phentsize ?? 56, 54);
  eh.writeUInt16LE(o.xnum ? 0xffff : phnum, 56);
  eh.writeUInt16LE(o.xnum ? 64 : 0, 58);
  eh.writeUInt16LE(o.xnum ? 1 : 0, 60);
  const ph: Buffer[] = [];
  const body: Buffer[] = [];
  if (notes.length) {
    const p = Buffer.alloc(56);
    p.writeUInt32LE(4, 0);
    p.writeBigUInt64LE(BigInt(off), 8);
    p.writeBigUInt64LE(BigInt(noteBuf.length), 32);
    p.writeBigUInt64LE(BigInt(noteBuf.length), 40);
    ph.push(p);
    body.push(noteBuf);
    off += noteBuf.length;
  }
  const placed: { paddr: number; filesz: number; offset: number; data: Uint8Array }[] = [];
  for (const [i, l] of loads.entries()) {
    const p = Buffer.alloc(56);
    p.writeUInt32LE(1, 0);
    p.writeUInt32LE(7, 4);
    p.writeBigUInt64LE(BigInt(off), 8);
    p.writeBigUInt64LE(l.vaddr ?? BigInt(l.paddr), 16);
    p.writeBigUInt64LE(BigInt(l.paddr), 24);
    p.writeBigUInt64LE(BigInt(l.filesz), 32);
    p.writeBigUInt64LE(BigInt(l.memsz ?? l.filesz), 40);
    ph.push(p);
    const data = randomBytes(500 + i, l.filesz);
    body.push(Buffer.from(data));
    placed.push({ paddr: l.paddr, filesz: l.filesz, offset: off, data });
    off += l.filesz;
  }
  const sh: Buffer[] = [];
  if (o.xnum) {
    const s = Buffer.alloc(64);
    s.writeUInt32LE(phnum, 44); // sh_info = real phnum
    sh.push(s);
  }
  let file = Buffer.concat([eh, ...ph, ...sh, ...body]);
  if (o.truncate !== undefined) file = file.subarray(0, file.length - o.truncate);
  const f = path.join(dir, name);
  fs.writeFileSync(f, file);
  return { file: f, placed };
}

const LOADS: Load[] = [
  { paddr: 0, filesz: 0xa0000 },
  { paddr: 0x100000, filesz: 0x10000 },
  { paddr: 0x110000, filesz: 0x1234 }, // adjacent in physical memory, separate in the file
  { paddr: 0x100000000, filesz: 0x5000 },
];
const NOTES: Note[] = [
  { name: 'CORE', type: 1, desc: randomBytes(9, 5) }, // odd sizes exercise the 4-byte padding
  { name: 'VMCOREINFO', type: 0, desc: Buffer.from('OSRELEASE=6.1.0\nPAGESIZE=4096\n') },
  { name: 'QEMU', type: 0, desc: randomBytes(10, 440) },
];

describe('elf:', () => {
  it('maps PT_LOADs by p_paddr byte-exactly and parses notes', async () => {
    const { file, placed } = buildCore('core.elf', LOADS, NOTES);
    const mem = await openSource(`elf:${file}`);
    try {
      expect(mem).toBeInstanceOf(ElfCoreSource);
      const elf = mem as ElfCoreSource;
      expect(mem.info).toMatchObject({ kind: 'elf', live: false, readOnly: true });
      expect(mem.info.ranges).toEqual([
        { start: 0, end: 0xa0000 },
        { start: 0x100000, end: 0x111234 },
        { start: 0x100000000, end: 0x100005000 },
      ]);
      expect(elf.notes.map((n) => [n.name, n.type, Buffer.from(n.desc).toString('hex')])).toEqual(
        NOTES.map((n) => [n.name, n.type, Buffer.from(n.desc).toString('hex')]),
      );
      expect(elf.vmcoreinfo()).toBe('OSRELEASE=6.1.0\nPAGESIZE=4096\n');
      expect(elf.findNote('CORE', 1)?.desc.length).toBe(5);
      expect(elf.loads.map((l) => l.paddr)).toEqual(LOADS.map((l) => l.paddr));

      const fileOf = (phys: number) => {
        const p = placed.find((x) => phys >= x.paddr && phys < x.paddr + x.filesz);
        return p ? p.offset + (phys - p.paddr) : -1;
      };
      const r = rng(3);
      const probes: [number, number][] = [
        [0, 0],
        [0, 1],
        [0x10f000, 0x2000], // crosses 0x110000
        [0x100000, 0x11234],
        [0x100004fff, 1],
      ];
      for (let i = 0; i < 300; i++) {
        const p = placed[i % placed.length];
        const len = randInt(r, 0, Math.min(p.filesz, 12000));
        probes.push([randInt(r, p.paddr, p.paddr + p.filesz - len + 1), len]);
      }
      for (const [addr, len] of probes) {
        const buf = new Uint8Array(len);
        mem.readSync!(addr, buf);
        const want = new Uint8Array(len);
        for (let i = 0; i < len;) {
          const fo = fileOf(addr + i);
          const p = placed.find((x) => addr + i >= x.paddr && addr + i < x.paddr + x.filesz)!;
          const n = Math.min(len - i, p.paddr + p.filesz - (addr + i));
          want.set(fileBytes(file, fo, n), i);
          i += n;
        }
        expectSameBytes(buf, want, `elf ${hx(addr)}+${len}`);
      }
      const e = await pmiError(() => mem.readSync!(0x9fff0, new Uint8Array(0x20)));
      expect(e.code).toBe('E_OUT_OF_RANGE');
      expect(e.data.address).toBe(hx(0xa0000));
    } finally {
      await mem.close();
    }
  });

  it('treats p_memsz beyond p_filesz as missing by default, zeros with zerofill=1', async () => {
    const { file, placed } = buildCore('bss.elf', [
      { paddr: 0x1000, filesz: 0x1000, memsz: 0x3000 },
      { paddr: 0x10000, filesz: 0x800 },
    ]);
    const mem = await openSource(`elf:${file}`);
    expect(mem.info.ranges).toEqual([
      { start: 0x1000, end: 0x2000 },
      { start: 0x10000, end: 0x10800 },
    ]);
    const e = await pmiError(() => mem.readSync!(0x1ff0, new Uint8Array(0x20)));
    expect(e.code).toBe('E_OUT_OF_RANGE');
    expect(e.data.address).toBe(hx(0x2000));
    await mem.close();

    const z = await openSource(`elf:${file}?zerofill=1&writable=1`);
    expect(z.info.ranges).toEqual([
      { start: 0x1000, end: 0x4000 },
      { start: 0x10000, end: 0x10800 },
    ]);
    const buf = new Uint8Array(0x20).fill(0xcc);
    z.readSync!(0x1ff0, buf);
    expectSameBytes(buf.subarray(0, 16), placed[0].data.subarray(0xff0), 'file part');
    expect(buf.subarray(16).every((b) => b === 0)).toBe(true);
    const we = await pmiError(() => z.writeBatch([{ addr: 0x2000, buf: new Uint8Array(4) }]));
    expect(we.code).toBe('E_READ_ONLY');
    await z.writeBatch([{ addr: 0x1000, buf: new Uint8Array([1, 2, 3, 4]) }]);
    expectSameBytes(fileBytes(file, placed[0].offset, 4), new Uint8Array([1, 2, 3, 4]), 'write landed');
    await z.close();
  });

  it('accepts overlapping PT_LOADs (kdump kernel-text style): lower p_paddr wins', async () => {
    const { file, placed } = buildCore('overlap.elf', [
      { paddr: 0x1000000, filesz: 0x2000, vaddr: 0xffffffff81000000n },
      { paddr: 0x0, filesz: 0x1800000 },
    ]);
    const mem = (await openSource(`elf:${file}`)) as ElfCoreSource;
    expect(mem.info.ranges).toEqual([{ start: 0, end: 0x1800000 }]);
    expect(mem.loads[0].vaddr).toBe(0xffffffff81000000n);
    const b = new Uint8Array(16);
    mem.readSync!(0x1000000, b);
    expectSameBytes(b, placed[1].data.subarray(0x1000000, 0x1000010), 'RAM segment content');
    await mem.close();
  });

  it('reads PN_XNUM program header counts from section header 0', async () => {
    const { file } = buildCore('xnum.elf', LOADS, NOTES, { xnum: true });
    const mem = (await openSource(`elf:${file}`)) as ElfCoreSource;
    expect(mem.loads.length).toBe(4);
    expect(mem.notes.length).toBe(3);
    await mem.close();
  });

  describe('rejects bad headers with E_SOURCE_FORMAT', () => {
    const cases: [string, () => string, RegExp][] = [
      [
        'not ELF',
        () => (fs.writeFileSync(path.join(dir, 'x.bin'), 'hello world'), path.join(dir, 'x.bin')),
        /not an ELF/,
      ],
      ['ELFCLASS32', () => buildCore('c32.elf', LOADS, [], { cls: 1 }).file, /ELFCLASS64/],
      ['big-endian', () => buildCore('be.elf', LOADS, [], { data: 2 }).file, /little-endian/],
      ['ET_EXEC', () => buildCore('exec.elf', LOADS, [], { type: 2 }).file, /ET_CORE/],
      ['phentsize', () => buildCore('phe.elf', LOADS, [], { phentsize: 32 }).file, /e_phentsize/],
      ['truncated PT_LOAD', () => buildCore('trunc.elf', LOADS, [], { truncate: 100 }).file, /truncated dump/],
      [
        'truncated header',
        () => (
          fs.writeFileSync(path.join(dir, 'th.elf'), Buffer.from('\x7fELF\x02\x01\x01')),
          path.join(dir, 'th.elf')
        ),
        /truncated ELF header/,
      ],
    ];
    for (const [name, make, msg] of cases) {
      it(name, async () => {
        const f = make();
        const e = await pmiError(() => openSource(`elf:${f}`));
        expect(e.code).toBe('E_SOURCE_FORMAT');
        expect(e.message).toMatch(msg);
        expect(e.message).toContain(f);
      });
    }
    it('note running past PT_NOTE', async () => {
      const { file } = buildCore('badnote.elf', LOADS, NOTES);
      // Corrupt the first note's descsz (note segment starts right after the program headers).
      const fd = fs.openSync(file, 'r+');
      const b = Buffer.alloc(4);
      b.writeUInt32LE(0x100000, 0);
      fs.writeSync(fd, b, 0, 4, 64 + 5 * 56 + 4);
      fs.closeSync(fd);
      const e = await pmiError(() => openSource(`elf:${file}`));
      expect(e.code).toBe('E_SOURCE_FORMAT');
      expect(e.message).toMatch(/runs past the end of PT_NOTE/);
    });
  });
});
