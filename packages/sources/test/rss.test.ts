import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { randomBytes, tmpDir } from './helpers.js';

const G = 2 ** 30;
const M = 2 ** 20;
const RSS_LIMIT = 64 * M;

let dir: string;
let file: string;

beforeAll(() => {
  // tmpfs reads holes from the shared zero page (no page-cache growth, fast); disk is the fallback.
  dir = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/pmi-rss-') : tmpDir();
  file = path.join(dir, 'big.ram'); // 4 GiB, sparse: a few real pages, holes elsewhere
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, 4 * G);
  for (const off of [0, 3 * G - 4096, 3 * G, 4 * G - 4096])
    fs.writeSync(fd, randomBytes(off / 4096, 4096), 0, 4096, off);
  fs.closeSync(fd);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Read every byte of every range in 4 MiB chunks into one reused buffer; returns RSS growth. */
async function sweep(
  mem: PhysicalMemory,
  batch: boolean,
): Promise<{ growth: number; bytes: number; checksum: number }> {
  globalThis.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const buf = new Uint8Array(4 * M);
  let bytes = 0;
  let checksum = 0;
  for (const r of mem.info.ranges) {
    for (let a = r.start; a < r.end; a += buf.length) {
      const view = buf.subarray(0, Math.min(buf.length, r.end - a));
      if (batch) expect(await mem.readBatch([{ addr: a, buf: view }])).toEqual([]);
      else mem.readSync!(a, view);
      bytes += view.length;
      checksum = (checksum + view[0] + view[view.length - 1]) >>> 0;
      if ((bytes & (256 * M - 1)) === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  return { growth: peak - before, bytes, checksum };
}

describe('RSS stays flat for a 4 GiB image', () => {
  it('raw: readSync over all 4 GiB', async () => {
    const mem = await openSource(`raw:${file}`);
    const r = await sweep(mem, false);
    await mem.close();
    expect(r.bytes).toBe(4 * G);
    expect(r.growth).toBeLessThan(RSS_LIMIT);
  });

  it('qemu: readBatch over all 4 GiB (split at 3 GiB)', async () => {
    const mem = await openSource(`qemu:${file}`);
    expect(mem.info.ranges).toEqual([
      { start: 0, end: 3 * G },
      { start: 4 * G, end: 5 * G },
    ]);
    const r = await sweep(mem, true);
    await mem.close();
    expect(r.bytes).toBe(4 * G);
    expect(r.growth).toBeLessThan(RSS_LIMIT);
  });
});
