/**
 * The adapter's I/O back ends (node:dgram and the optional native addon) and the 'mps' split mode:
 * same bytes, same splitting rules, same stats. The native cases run only when the addon is built
 * (`npm run build:native -w @pmi/nettlp`); PMI_NETTLP_IO=dgram forces the fallback everywhere.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { CPL_SC, CPL_UR } from '../src/codec/tlp.js';
import { loadNativeIo } from '../src/adapter/index.js';
import { CLIENT_IP, Requester, randomData, readVia, startTestAdapter, tmpDir, type Cpl } from './adapter-helpers.js';

const SIZE = 1 << 20;
const image = randomData(11, SIZE);
let rawPath: string;
let src: PhysicalMemory;
beforeAll(async () => {
  rawPath = path.join(tmpDir(), 'io.raw');
  fs.writeFileSync(rawPath, image);
  src = await openSource(`raw:${rawPath}`);
});
afterAll(() => src.close());

/** 'mps' split, from the rules: pieces end on RCB boundaries, each ≤ MPS counted from its DW-aligned start. */
function checkMpsSplit(addr: number, count: number, cpls: Cpl[], mps: number, rcb: number): string[] {
  const problems: string[] = [];
  let cur = addr;
  const end = addr + count;
  cpls.forEach((c, i) => {
    const off = count - c.byteCount;
    if (addr + off !== cur) problems.push(`cpl ${i} starts at ${addr + off}, expected ${cur}`);
    const want = Math.min(end, Math.floor((cur - (cur & 3) + mps) / rcb) * rcb) - cur;
    if (c.data.length !== want) problems.push(`cpl ${i}: ${c.data.length} bytes, expected ${want}`);
    if (c.lengthDw * 4 > mps) problems.push(`cpl ${i}: payload ${c.lengthDw * 4} > MPS`);
    cur += c.data.length;
  });
  if (cur !== end) problems.push(`covered up to ${cur}, expected ${end}`);
  return problems;
}

const nativeBuilt = loadNativeIo() !== undefined;
const ios = nativeBuilt ? (['dgram', 'native'] as const) : (['dgram'] as const);

describe.each(ios)('adapter I/O %s', (io) => {
  for (const split of ['rcb', 'mps'] as const) {
    for (const [mps, rcb] of [
      [256, 64],
      [4096, 128],
    ]) {
      it(`split ${split}, MPS ${mps} / RCB ${rcb}: bytes and splitting`, async () => {
        const a = await startTestAdapter({ source: src, tags: 4, mps, rcb, io, split });
        expect(a.io).toBe(io);
        const reqs = [
          await Requester.open(CLIENT_IP, a.ports.first + 1),
          await Requester.open(CLIENT_IP, a.ports.first + 3),
        ];
        try {
          let seed = 5;
          const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
          for (let i = 0; i < 200; i++) {
            const addr = i < 4 ? [0, 0x1000, 0x1002, 0x203f][i] : Math.floor(rnd() * (SIZE - 4096));
            const count = i < 4 ? [4096, 512, 510, 300][i] : 1 + Math.floor(rnd() * (4096 - (addr % 4096)));
            const res = await readVia(reqs[i & 1], addr, count, i & 1 ? 3 : 1);
            expect(res.status).toBe(CPL_SC);
            expect(Buffer.from(res.data).equals(Buffer.from(image.subarray(addr, addr + count)))).toBe(true);
            if (split === 'mps') expect(checkMpsSplit(addr, count, res.cpls, mps, rcb)).toEqual([]);
          }
          if (split === 'mps') {
            expect((await readVia(reqs[0], 0, 512, 1)).cpls.length).toBe(mps === 256 ? 2 : 1);
            expect((await readVia(reqs[0], 0x3000, 4096, 1)).cpls.length).toBe(mps === 256 ? 16 : 1);
          }
          const ur = await readVia(reqs[1], SIZE, 4, 3);
          expect(ur.status).toBe(CPL_UR);
          const s = a.stats();
          expect(s.requests_read).toBe(split === 'mps' ? 203 : 201);
          expect(s.unsupported_request).toBe(1);
          expect(s.send_errors).toBe(0);
        } finally {
          for (const r of reqs) await r.close();
          await a.close();
        }
      });
    }
  }

  it('many tags in flight at once: every request answered, replies from the right port', async () => {
    const a = await startTestAdapter({ source: src, tags: 32, mps: 256, io });
    const reqs = await Promise.all(Array.from({ length: 32 }, (_, t) => Requester.open(CLIENT_IP, a.ports.first + t)));
    try {
      for (let round = 0; round < 20; round++) {
        const res = await Promise.all(reqs.map((r, t) => readVia(r, (round * 32 + t) * 512, 512, t)));
        res.forEach((x, t) => {
          const addr = (round * 32 + t) * 512;
          expect(x.status).toBe(CPL_SC);
          expect(Buffer.from(x.data).equals(Buffer.from(image.subarray(addr, addr + 512)))).toBe(true);
        });
      }
      expect(a.stats().requests_read).toBe(640);
    } finally {
      for (const r of reqs) await r.close();
      await a.close();
    }
  });
});

describe('adapter I/O selection', () => {
  it('io=native without the addon is a usage error; faults and pcap fall back to dgram', async () => {
    if (!nativeBuilt) {
      await expect(startTestAdapter({ source: src, tags: 1, io: 'native' })).rejects.toMatchObject({ code: 'E_USAGE' });
    }
    const a = await startTestAdapter({ source: src, tags: 1, fault: 'loss=0.1,seed=1' });
    expect(a.io).toBe('dgram');
    await a.close();
  });
  it('rejects an unknown split mode', async () => {
    await expect(startTestAdapter({ source: src, tags: 1, split: 'x' as 'rcb' })).rejects.toMatchObject({
      code: 'E_USAGE',
    });
  });
});
