import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { QemuRamSource, qemuBelow4g } from '@pmi/sources';
import { expectSameBytes, fileBytes, hx, pmiError, randInt, randomBytes, rng, tmpDir } from './helpers.js';

const G = 2 ** 30;
const M = 2 ** 20;

let dir: string;

/** A sparse file of `size` bytes with random data written at the given offsets. */
function sparse(name: string, size: number, patches: [number, number][] = []): string {
  const f = path.join(dir, name);
  const fd = fs.openSync(f, 'w');
  fs.ftruncateSync(fd, size);
  for (const [off, len] of patches) fs.writeSync(fd, randomBytes(off % 9973, len), 0, len, off);
  fs.closeSync(fd);
  return f;
}

beforeAll(() => {
  dir = tmpDir();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('QEMU split rules', () => {
  it('follows pc_piix / pc_q35 thresholds', () => {
    expect(qemuBelow4g('pc', 64 * M)).toBe(64 * M);
    expect(qemuBelow4g('pc', 0xe0000000 - 4096)).toBe(0xe0000000 - 4096);
    expect(qemuBelow4g('pc', 0xe0000000)).toBe(0xc0000000);
    expect(qemuBelow4g('pc', 16 * G)).toBe(0xc0000000);
    expect(qemuBelow4g('q35', 0xb0000000 - 4096)).toBe(0xb0000000 - 4096);
    expect(qemuBelow4g('q35', 0xb0000000)).toBe(0x80000000);
    expect(qemuBelow4g('q35', 8 * G)).toBe(0x80000000);
  });

  const table: [string, number, string, { start: number; end: number }[]][] = [
    ['small pc', 64 * M, '', [{ start: 0, end: 64 * M }]],
    ['pc just below 3.5G', 0xe0000000 - 4096, '', [{ start: 0, end: 0xe0000000 - 4096 }]],
    [
      'pc 3.5G',
      0xe0000000,
      '',
      [
        { start: 0, end: 0xc0000000 },
        { start: 4 * G, end: 4 * G + 0x20000000 },
      ],
    ],
    [
      'pc 4G',
      4 * G,
      '?machine=pc',
      [
        { start: 0, end: 3 * G },
        { start: 4 * G, end: 5 * G },
      ],
    ],
    ['q35 just below 2.75G', 0xb0000000 - 4096, '?machine=q35', [{ start: 0, end: 0xb0000000 - 4096 }]],
    [
      'q35 2.75G',
      0xb0000000,
      '?machine=q35',
      [
        { start: 0, end: 2 * G },
        { start: 4 * G, end: 4 * G + 0x30000000 },
      ],
    ],
    [
      'versioned machine name',
      3 * G,
      '?machine=pc-q35-7.2',
      [
        { start: 0, end: 2 * G },
        { start: 4 * G, end: 5 * G },
      ],
    ],
    [
      'explicit below4g hex',
      2 * G,
      '?below4g=0x40000000',
      [
        { start: 0, end: G },
        { start: 4 * G, end: 5 * G },
      ],
    ],
    [
      'explicit below4g decimal',
      2 * G,
      '?below4g=1073741824',
      [
        { start: 0, end: G },
        { start: 4 * G, end: 5 * G },
      ],
    ],
    [
      'explicit below4g 1G',
      2 * G,
      '?below4g=1G',
      [
        { start: 0, end: G },
        { start: 4 * G, end: 5 * G },
      ],
    ],
    ['below4g above the size', 64 * M, '?below4g=3G', [{ start: 0, end: 64 * M }]],
  ];
  for (const [name, size, query, ranges] of table) {
    it(`maps ${name}`, async () => {
      const f = sparse(`split-${size}.ram`, size);
      const mem = await openSource(`qemu:${f}${query}`);
      try {
        expect(mem).toBeInstanceOf(QemuRamSource);
        expect(mem.info.ranges).toEqual(ranges);
        expect(mem.info.live).toBe(true);
        expect(mem.info.kind).toBe('qemu');
      } finally {
        await mem.close();
      }
    });
  }

  it('rejects bad parameters', async () => {
    const f = sparse('bad.ram', 4 * M);
    expect((await pmiError(() => openSource(`qemu:${f}?machine=virt`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource(`qemu:${f}?below4g=5G`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource(`qemu:${f}?below4g=lots`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource(`qemu:${f}?size=1`))).code).toBe('E_SOURCE_URI');
  });
});

describe('qemu: reads (4 GiB sparse RAM file, pc layout)', () => {
  let f: string;
  // Data near 0, around the legacy hole, straddling file offset 3G (= physical 3G / 4G), and at the end.
  const patches: [number, number][] = [
    [0, 2 * M],
    [3 * G - M, 2 * M],
    [4 * G - M, M],
  ];
  beforeAll(() => {
    f = sparse('guest.ram', 4 * G, patches);
  });

  /** The pc rule written out independently: physical → file offset. */
  const fileOffset = (phys: number) => (phys < 3 * G ? phys : phys >= 4 * G && phys < 5 * G ? phys - G : -1);

  it('maps physical 4 GiB + x to file offset 3 GiB + x, byte-exactly', async () => {
    const mem = await openSource(`qemu:${f}`);
    const r = rng(7);
    try {
      const probes: [number, number][] = [
        [0, 1],
        [0x9f000, 0x62000], // across the legacy VGA/BIOS window: backed by the file
        [3 * G - 4096, 4096],
        [4 * G, 4096],
        [4 * G + 12345, 70000],
        [5 * G - 1, 1],
        [5 * G - 4096, 4096],
      ];
      for (let i = 0; i < 200; i++) {
        const [off, len] = patches[i % patches.length];
        const l = randInt(r, 0, 9000);
        const fo = randInt(r, off, off + len - l);
        const phys = fo < 3 * G ? fo : fo + G;
        probes.push([phys, l]);
      }
      for (const [phys, len] of probes) {
        const fo = fileOffset(phys);
        expect(fo).toBeGreaterThanOrEqual(0);
        const buf = new Uint8Array(len);
        mem.readSync!(phys, buf);
        expectSameBytes(buf, fileBytes(f, fo, len), `phys ${hx(phys)}+${len}`);
      }
    } finally {
      await mem.close();
    }
  });

  it('has no memory between 3 GiB and 4 GiB', async () => {
    const mem = await openSource(`qemu:${f}`);
    try {
      let e = await pmiError(() => mem.readSync!(3 * G - 16, new Uint8Array(32)));
      expect(e.code).toBe('E_OUT_OF_RANGE');
      expect(e.data.address).toBe(hx(3 * G));
      e = await pmiError(() => mem.readSync!(4 * G - 8, new Uint8Array(16)));
      expect(e.data.address).toBe(hx(4 * G - 8));
      e = await pmiError(() => mem.readSync!(5 * G - 8, new Uint8Array(16)));
      expect(e.data.address).toBe(hx(5 * G));
    } finally {
      await mem.close();
    }
  });

  it('writes land at the split file offset when writable', async () => {
    const mem = await openSource(`qemu:${f}?writable=1`);
    try {
      const data = randomBytes(99, 8192);
      await mem.writeBatch([{ addr: 4 * G + 3 * M, buf: data }]);
      expectSameBytes(fileBytes(f, 3 * G + 3 * M, 8192), data, 'written at 3G+3M');
      expect(fs.statSync(f).size).toBe(4 * G);
    } finally {
      await mem.close();
    }
    const ro = await openSource(`qemu:${f}`);
    expect((await pmiError(() => ro.writeBatch([{ addr: 0, buf: new Uint8Array(1) }]))).code).toBe('E_READ_ONLY');
    await ro.close();
  });
});
