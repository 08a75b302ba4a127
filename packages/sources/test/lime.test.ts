import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { LimeSource, LimeWriter, writeLimeFile } from '@pmi/sources';
import { expectSameBytes, fileBytes, hx, pmiError, randInt, randomBytes, rng, tmpDir } from './helpers.js';

let dir: string;
beforeAll(() => {
  dir = tmpDir();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Hand-built LiME header straight from the format definition (independent of the writer). */
function header(start: number, endInclusive: number, magic = 0x4c694d45, version = 1): Buffer {
  const h = Buffer.alloc(32);
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(version, 4);
  h.writeBigUInt64LE(BigInt(start), 8);
  h.writeBigUInt64LE(BigInt(endInclusive), 16);
  return h;
}

interface Layout {
  start: number;
  len: number;
  dataOffset: number;
}

/** Build a LiME file by hand; returns the layout computed while building. */
function handBuilt(name: string, ranges: { start: number; len: number }[]): { file: string; layout: Layout[] } {
  const parts: Buffer[] = [];
  const layout: Layout[] = [];
  let off = 0;
  for (const [i, r] of ranges.entries()) {
    parts.push(header(r.start, r.start + r.len - 1));
    off += 32;
    parts.push(Buffer.from(randomBytes(1000 + i, r.len)));
    layout.push({ start: r.start, len: r.len, dataOffset: off });
    off += r.len;
  }
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat(parts));
  return { file, layout };
}

function physToFile(layout: Layout[], phys: number): number {
  for (const l of layout) if (phys >= l.start && phys < l.start + l.len) return l.dataOffset + (phys - l.start);
  return -1;
}

/** Independent truth: assemble [addr, addr+len) from the file via the hand-computed layout. */
function truth(file: string, layout: Layout[], addr: number, len: number): Uint8Array | number {
  const out = new Uint8Array(len);
  for (let i = 0; i < len;) {
    const fo = physToFile(layout, addr + i);
    if (fo < 0) return addr + i; // first missing byte
    const l = layout.find((x) => addr + i >= x.start && addr + i < x.start + x.len)!;
    const n = Math.min(len - i, l.start + l.len - (addr + i));
    out.set(fileBytes(file, fo, n), i);
    i += n;
  }
  return out;
}

const RANGES = [
  { start: 0x1000, len: 0x9f000 - 0x1000 }, // typical low RAM
  { start: 0x100000, len: 0x20000 },
  { start: 0x120000, len: 0x3123 }, // physically adjacent to the previous one, unaligned length
  { start: 0x100000000, len: 0x8000 }, // above 4 GiB
];

describe('lime:', () => {
  it('reads a hand-built LiME file byte-exactly, across adjacent ranges', async () => {
    const { file, layout } = handBuilt('hand.lime', RANGES);
    const mem = await openSource(`lime:${file}`);
    try {
      expect(mem).toBeInstanceOf(LimeSource);
      expect(mem.info.kind).toBe('lime');
      expect(mem.info.ranges).toEqual([
        { start: 0x1000, end: 0x9f000 },
        { start: 0x100000, end: 0x123123 },
        { start: 0x100000000, end: 0x100008000 },
      ]);
      const r = rng(5);
      const probes: [number, number][] = [
        [0x1000, 0],
        [0x1000, 1],
        [0x9f000 - 1, 1],
        [0x11f000, 0x2000], // crosses the adjacent-range boundary at 0x120000
        [0x100000, 0x23123], // both adjacent ranges entirely
        [0x100000000, 0x8000],
      ];
      for (let i = 0; i < 300; i++) {
        const l = RANGES[i % RANGES.length];
        const len = randInt(r, 0, Math.min(l.len, 20000));
        probes.push([randInt(r, l.start, l.start + l.len - len + 1), len]);
      }
      for (const [addr, len] of probes) {
        const want = truth(file, layout, addr, len);
        expect(typeof want).not.toBe('number');
        const buf = new Uint8Array(len);
        mem.readSync!(addr, buf);
        expectSameBytes(buf, want as Uint8Array, `lime ${hx(addr)}+${len}`);
      }
      for (const [addr, len] of [
        [0, 16],
        [0x9f000 - 8, 16],
        [0x123123 - 4, 8],
        [0x100008000, 1],
      ]) {
        const e = await pmiError(() => mem.readSync!(addr, new Uint8Array(len)));
        expect(e.code).toBe('E_OUT_OF_RANGE');
        expect(e.data.address).toBe(hx(truth(file, layout, addr, len) as number));
      }
    } finally {
      await mem.close();
    }
  });

  it('accepts ranges listed out of physical order', async () => {
    const { file, layout } = handBuilt('unordered.lime', [
      { start: 0x200000, len: 0x1000 },
      { start: 0x1000, len: 0x1000 },
    ]);
    const mem = await openSource(`lime:${file}`);
    expect(mem.info.ranges).toEqual([
      { start: 0x1000, end: 0x2000 },
      { start: 0x200000, end: 0x201000 },
    ]);
    const b = new Uint8Array(0x1000);
    mem.readSync!(0x1000, b);
    expectSameBytes(b, truth(file, layout, 0x1000, 0x1000) as Uint8Array, 'second range');
    await mem.close();
  });

  it('writer output equals the format definition and reads back', async () => {
    const data = RANGES.map((r, i) => ({ start: r.start, data: randomBytes(1000 + i, r.len) }));
    const w = path.join(dir, 'writer.lime');
    writeLimeFile(w, data);
    const { file: hand } = handBuilt('hand2.lime', RANGES);
    expectSameBytes(fs.readFileSync(w), fs.readFileSync(hand), 'writer vs hand-built');

    // Streaming: a range written in chunks.
    const s = path.join(dir, 'stream.lime');
    const lw = LimeWriter.create(s);
    lw.writeRange(0, data[0].data.subarray(0, 4096));
    lw.beginRange(0x100000, 10000);
    lw.write(randomBytes(77, 4000));
    lw.write(randomBytes(78, 6000));
    expect((await pmiError(() => lw.beginRange(0x50000, 10))).code).toBe('E_USAGE'); // below previous end
    lw.close();
    const mem = await openSource(`lime:${s}`);
    expect(mem.info.ranges).toEqual([
      { start: 0, end: 4096 },
      { start: 0x100000, end: 0x100000 + 10000 },
    ]);
    const b = new Uint8Array(6000);
    mem.readSync!(0x100000 + 4000, b);
    expectSameBytes(b, randomBytes(78, 6000), 'second chunk');
    await mem.close();

    const bad = LimeWriter.create(path.join(dir, 'short.lime'));
    bad.beginRange(0, 100);
    bad.write(new Uint8Array(50));
    expect((await pmiError(() => bad.write(new Uint8Array(51)))).code).toBe('E_USAGE');
    expect((await pmiError(() => bad.close())).code).toBe('E_USAGE'); // 50 bytes short
  });

  it('writes through lime: land in the range data', async () => {
    const { file, layout } = handBuilt('w.lime', RANGES);
    const mem = await openSource(`lime:${file}?writable=1`);
    const data = randomBytes(5, 0x3000);
    await mem.writeBatch([{ addr: 0x11f000, buf: data }]); // crosses into the adjacent range
    await mem.close();
    expectSameBytes(truth(file, layout, 0x11f000, 0x3000) as Uint8Array, data, 'written');
    expectSameBytes(fileBytes(file, layout[2].dataOffset - 32, 4), Buffer.from('EMiL'), 'header intact');
  });

  describe('rejects malformed files with E_SOURCE_FORMAT naming the file offset', () => {
    const cases: [string, () => Buffer, string, RegExp][] = [
      ['bad magic', () => Buffer.concat([header(0, 15, 0x12345678), Buffer.alloc(16)]), '0x0', /magic/],
      [
        'bad magic in the second header',
        () => Buffer.concat([header(0, 15), Buffer.alloc(16), header(0x100, 0x10f, 0x4c694d46), Buffer.alloc(16)]),
        '0x30',
        /magic/,
      ],
      ['version 2', () => Buffer.concat([header(0, 15, undefined, 2), Buffer.alloc(16)]), '0x0', /version/],
      ['truncated range data', () => Buffer.concat([header(0, 4095), Buffer.alloc(4000)]), '0x0', /needs 4096 bytes/],
      [
        'trailing partial header',
        () => Buffer.concat([header(0, 15), Buffer.alloc(16), Buffer.alloc(10)]),
        '0x30',
        /truncated header/,
      ],
      [
        'overlapping ranges',
        () =>
          Buffer.concat([header(0x1000, 0x1fff), Buffer.alloc(0x1000), header(0x1800, 0x27ff), Buffer.alloc(0x1000)]),
        '0x1020',
        /overlaps/,
      ],
      ['end below start', () => Buffer.concat([header(0x2000, 0x1000), Buffer.alloc(16)]), '0x0', /below its start/],
      ['empty file', () => Buffer.alloc(0), '0x0', /empty/],
    ];
    for (const [name, build, offset, msg] of cases) {
      it(name, async () => {
        const f = path.join(dir, `bad-${name.replace(/\W+/g, '-')}.lime`);
        fs.writeFileSync(f, build());
        const e = await pmiError(() => openSource(`lime:${f}`));
        expect(e.code).toBe('E_SOURCE_FORMAT');
        expect(e.data.file_offset).toBe(offset);
        expect(e.message).toMatch(msg);
        expect(e.message).toContain(f);
      });
    }
  });
});
