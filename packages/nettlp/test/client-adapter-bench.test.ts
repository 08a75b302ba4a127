/**
 * Client throughput against the software adapter in-process (PCIe-like splits at RCB 64 / MPS 256,
 * NetTLP header timestamps), clean and with faults. Skipped unless NETTLP_BENCH=1:
 * `NETTLP_BENCH=1 npx vitest run --project unit packages/nettlp/test/client-adapter-bench`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readPhys, type MemOp, type OpFailure, type PhysicalMemory } from '@pmi/core';
import { openNetTlp } from '../src/client/index.js';
import { startAdapter } from '../src/adapter/index.js';
import { portBase, prng, randomBytes } from './client-responder.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SIZE = 64 << 20;
const src = randomBytes(SIZE, 5);
const mem: PhysicalMemory = {
  info: {
    uri: 'mem:',
    kind: 'mem',
    readOnly: true,
    live: false,
    idealBatchSize: 64,
    maxInFlight: 1,
    ranges: [{ start: 0, end: SIZE }],
  },
  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    for (const op of ops) op.buf.set(src.subarray(op.addr, op.addr + op.buf.length));
    return [];
  },
  async writeBatch() {},
  async close() {},
};

async function pair(params: string, fault?: string) {
  for (let attempt = 0; ; attempt++) {
    const base = portBase();
    try {
      const a = await startAdapter({ source: mem, listen: '127.0.0.2', portBase: base, tags: 64, fault });
      cleanups.push(() => a.close());
      const c = await openNetTlp(`nettlp://127.0.0.2:${base}?ranges=0+64M&${params}`);
      cleanups.push(() => c.close());
      return c;
    } catch (e) {
      if (attempt < 10 && /EADDRINUSE/.test(String(e))) continue;
      throw e;
    }
  }
}

describe.runIf(process.env.NETTLP_BENCH === '1')('NetTLP client benchmark (in-process software adapter)', () => {
  for (const [tags, mrrs, mb] of [
    [1, 512, 8],
    [16, 512, 32],
    [64, 512, 32],
    [16, 4096, 64],
  ] as const) {
    it(`adapter sequential read, tags=${tags} mrrs=${mrrs}`, async () => {
      const c = await pair(`tags=${tags}&mrrs=${mrrs}`);
      const n = mb << 20;
      const t0 = performance.now();
      const got = await readPhys(c, 0, n);
      const s = (performance.now() - t0) / 1000;
      expect(Buffer.compare(got, src.subarray(0, n))).toBe(0);
      const m = c.metrics;
      console.log(
        `adapter seq tags=${tags} mrrs=${mrrs}: ${(n / 1e6 / s).toFixed(1)} MB/s, ${(m.requests / s / 1000).toFixed(1)}k req/s ` +
          `shifted ${m.shifted_chunks} timeouts ${m.timeouts} fast ${m.fast_retries} stale_rejected ${m.stale_rejected} late ${m.late_completions} ts_mode ${m.ts_mode}`,
      );
    }, 120_000);
  }

  it('adapter 4 KiB random reads/s (batches of 64, tags=16)', async () => {
    const c = await pair('tags=16');
    const rnd = prng(3);
    const t0 = performance.now();
    let reads = 0;
    while (performance.now() - t0 < 3000) {
      const ops = Array.from({ length: 64 }, () => ({
        addr: Math.floor(rnd() * (SIZE / 4096)) * 4096,
        buf: new Uint8Array(4096),
      }));
      expect(await c.readBatch(ops)).toEqual([]);
      reads += ops.length;
    }
    const s = (performance.now() - t0) / 1000;
    console.log(
      `adapter random 4 KiB: ${(reads / s).toFixed(0)} reads/s, shifted ${c.metrics.shifted_chunks} ts_mode ${c.metrics.ts_mode}`,
    );
  }, 60_000);
});
