import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, readPhys, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { describeSource, RawSource } from '@pmi/sources';
import { expectSameBytes, fileBytes, hx, pmiError, randInt, randomBytes, rng, tmpDir } from './helpers.js';

const SIZE = 1024 * 1024 + 123; // deliberately not page-aligned

let dir: string;
let file: string;

beforeAll(() => {
  dir = tmpDir();
  file = path.join(dir, 'image.bin');
  fs.writeFileSync(file, randomBytes(1, SIZE));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('raw:', () => {
  it('reports metadata', async () => {
    const mem = await openSource(`raw:${file}`);
    try {
      expect(mem).toBeInstanceOf(RawSource);
      expect(mem.info).toMatchObject({
        kind: 'raw',
        uri: `raw:${file}`,
        readOnly: true,
        live: false,
        maxInFlight: 1,
        ranges: [{ start: 0, end: SIZE }],
      });
      expect(mem.info.idealBatchSize).toBeGreaterThan(1);
      expect(describeSource(mem)).toMatchObject({
        uri: `raw:${file}`,
        kind: 'raw',
        read_only: true,
        live: false,
        ranges: [{ start: '0x0', end: hx(SIZE), size: SIZE }],
        total_bytes: SIZE,
      });
      expect(JSON.parse(JSON.stringify(describeSource(mem))).total_bytes).toBe(SIZE);
    } finally {
      await mem.close();
    }
  });

  it('reads random ranges byte-exactly (readSync, readBatch, readPhys)', async () => {
    const mem = await openSource(`raw:${file}`);
    const r = rng(42);
    const cases: [number, number][] = [
      [0, 0],
      [SIZE, 0],
      [0, 1],
      [SIZE - 1, 1],
      [0, SIZE],
      [4095, 2],
      [SIZE - 4096, 4096],
    ];
    for (let i = 0; i < 300; i++) {
      const len = [0, 1, 7, 4096, 65536, 300_000][i % 6];
      cases.push([randInt(r, 0, SIZE - len + 1), len]);
    }
    try {
      for (const [addr, len] of cases) {
        const buf = new Uint8Array(len);
        mem.readSync!(addr, buf);
        expectSameBytes(buf, fileBytes(file, addr, len), `readSync ${hx(addr)}+${len}`);
      }
      const ops = cases.map(([addr, len]) => ({ addr, buf: new Uint8Array(len) }));
      expect(await mem.readBatch(ops)).toEqual([]);
      for (const op of ops)
        expectSameBytes(op.buf, fileBytes(file, op.addr, op.buf.length), `readBatch ${hx(op.addr)}`);
      expectSameBytes(await readPhys(mem, 12345, 777), fileBytes(file, 12345, 777), 'readPhys');
      // readSync works detached from the object (callers may pass it around).
      const rs = mem.readSync!;
      const b = new Uint8Array(16);
      rs(100, b);
      expectSameBytes(b, fileBytes(file, 100, 16), 'detached readSync');
      // Reading into a view at an offset of a larger buffer writes only the view.
      const big = new Uint8Array(64).fill(0xee);
      mem.readSync!(7, big.subarray(8, 24));
      expect(big.subarray(0, 8).every((x) => x === 0xee)).toBe(true);
      expect(big.subarray(24).every((x) => x === 0xee)).toBe(true);
      expectSameBytes(big.subarray(8, 24), fileBytes(file, 7, 16), 'subarray read');
    } finally {
      await mem.close();
    }
  });

  it('raises E_OUT_OF_RANGE naming the first missing address', async () => {
    const mem = await openSource(`raw:${file}`);
    try {
      let e = await pmiError(() => mem.readSync!(SIZE - 10, new Uint8Array(20)));
      expect(e.code).toBe('E_OUT_OF_RANGE');
      expect(e.data.address).toBe(hx(SIZE));
      e = await pmiError(() => mem.readSync!(SIZE + 4096, new Uint8Array(1)));
      expect(e.data.address).toBe(hx(SIZE + 4096));
      e = await pmiError(() => mem.readSync!(-1, new Uint8Array(1)));
      expect(e.code).toBe('E_OUT_OF_RANGE');
      e = await pmiError(() => mem.readSync!(0.5, new Uint8Array(1)));
      expect(e.code).toBe('E_OUT_OF_RANGE');
      const ops = [
        { addr: 0, buf: new Uint8Array(8) },
        { addr: SIZE - 1, buf: new Uint8Array(2) },
        { addr: 10, buf: new Uint8Array(8) },
        { addr: 2 ** 40, buf: new Uint8Array(8) },
      ];
      const failures = await mem.readBatch(ops);
      expect(failures.map((f) => [f.index, f.error.code, f.error.data.address])).toEqual([
        [1, 'E_OUT_OF_RANGE', hx(SIZE)],
        [3, 'E_OUT_OF_RANGE', hx(2 ** 40)],
      ]);
      expectSameBytes(ops[2].buf, fileBytes(file, 10, 8), 'ok op in a failing batch');
    } finally {
      await mem.close();
    }
  });

  it('is read-only by default; writable=1 and {writable:true} write to the file', async () => {
    const w = path.join(dir, 'writable.bin');
    fs.writeFileSync(w, randomBytes(2, 65536));
    const ro = await openSource(`raw:${w}`);
    const e = await pmiError(() => ro.writeBatch([{ addr: 0, buf: new Uint8Array([1]) }]));
    expect(e.code).toBe('E_READ_ONLY');
    expect(e.message).toContain(`raw:${w}`);
    await ro.close();

    for (const [uri, opts] of [
      [`raw:${w}?writable=1`, {}],
      [`raw:${w}`, { writable: true }],
    ] as const) {
      const mem: PhysicalMemory = await openSource(uri, opts);
      expect(mem.info.readOnly).toBe(false);
      const data = randomBytes(3 + uri.length, 5000);
      await mem.writeBatch([
        { addr: 1000, buf: data },
        { addr: 65530, buf: new Uint8Array([9, 8, 7, 6, 5, 4]) },
      ]);
      expectSameBytes(fileBytes(w, 1000, 5000), data, 'written bytes in file');
      expectSameBytes(fileBytes(w, 65530, 6), new Uint8Array([9, 8, 7, 6, 5, 4]), 'write at end');
      // A batch with one bad op writes nothing.
      const before = fileBytes(w, 0, 16);
      const oor = await pmiError(() =>
        mem.writeBatch([
          { addr: 0, buf: new Uint8Array(16).fill(0xaa) },
          { addr: 65535, buf: new Uint8Array(2) },
        ]),
      );
      expect(oor.code).toBe('E_OUT_OF_RANGE');
      expect(oor.data.address).toBe(hx(65536));
      expectSameBytes(fileBytes(w, 0, 16), before, 'nothing written by a rejected batch');
      expect(fs.statSync(w).size).toBe(65536);
      await mem.close();
    }
  });

  it('fails with E_CLOSED after close (close is idempotent)', async () => {
    const mem = await openSource(`raw:${file}`);
    await mem.close();
    await mem.close();
    expect((await pmiError(() => mem.readSync!(0, new Uint8Array(1)))).code).toBe('E_CLOSED');
    expect((await pmiError(() => mem.readBatch([{ addr: 0, buf: new Uint8Array(1) }]))).code).toBe('E_CLOSED');
    expect((await pmiError(() => mem.writeBatch([]))).code).toBe('E_CLOSED');
  });

  it('reports a file shrinking underneath as E_SOURCE_IO, not zeros', async () => {
    const s = path.join(dir, 'shrink.bin');
    fs.writeFileSync(s, randomBytes(4, 16384));
    const mem = await openSource(`raw:${s}`);
    try {
      fs.truncateSync(s, 8192);
      const buf = new Uint8Array(4096);
      mem.readSync!(0, buf); // still there
      const e = await pmiError(() => mem.readSync!(6144, new Uint8Array(4096)));
      expect(e.code).toBe('E_SOURCE_IO');
      expect(e.message).toMatch(/short read/);
      const f = await mem.readBatch([{ addr: 12288, buf: new Uint8Array(16) }]);
      expect(f[0].error.code).toBe('E_SOURCE_IO');
    } finally {
      await mem.close();
    }
  });

  it('parses size= and rejects bad URIs', async () => {
    const mem = await openSource(`raw:${file}?size=64K`);
    expect(mem.info.ranges).toEqual([{ start: 0, end: 65536 }]);
    expect(mem.info.uri).toBe(`raw:${file}?size=0x10000`);
    await mem.close();
    expect((await pmiError(() => openSource(`raw:${file}?size=2G`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource(`raw:${file}?bogus=1`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource(`raw:${file}?writable=maybe`))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource('raw:'))).code).toBe('E_SOURCE_URI');
    expect((await pmiError(() => openSource('nosuchscheme:/x'))).code).toBe('E_SOURCE_URI');
    const missing = await pmiError(() => openSource(`raw:${dir}/does-not-exist`));
    expect(missing.code).toBe('E_SOURCE_IO');
    expect(missing.message).toContain('does-not-exist');
    expect((await pmiError(() => openSource(`raw:${dir}`))).code).toBe('E_SOURCE_IO');
  });

  it('normalises relative paths to absolute URIs', async () => {
    const rel = path.relative(process.cwd(), file);
    const mem = await openSource(`raw:${rel}`);
    expect(mem.info.uri).toBe(`raw:${path.resolve(rel)}`);
    await mem.close();
  });
});
