/**
 * Rough throughput/latency figures of the client against the in-process test responder.
 * Skipped unless NETTLP_BENCH=1: `NETTLP_BENCH=1 npx vitest run --project unit packages/nettlp/test/client-bench`.
 * Client and responder share one Node event loop here, so these are lower bounds for the client.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readPhys } from '@pmi/core';
import { openNetTlp } from '../src/client/index.js';
import { prng, randomBytes, startPair, type ResponderOptions } from './client-responder.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SIZE = 64 << 20;
const src = randomBytes(SIZE, 5);

async function pair(params: string, extra: Partial<ResponderOptions> = {}) {
  const { client, responder } = await startPair({ tags: 64, regions: [{ start: 0, data: src }], ...extra }, (b) =>
    openNetTlp(`nettlp://127.0.0.2:${b}?ranges=0+64M&${params}`),
  );
  cleanups.push(() => responder.close());
  cleanups.push(() => client.close());
  return client;
}

describe.runIf(process.env.NETTLP_BENCH === '1')('NetTLP client benchmark (in-process responder)', () => {
  for (const [tags, mrrs, mb] of [
    [1, 512, 8],
    [16, 512, 64],
    [64, 512, 64],
    [16, 4096, 64],
  ] as const) {
    it(`sequential read, tags=${tags} mrrs=${mrrs}`, async () => {
      const c = await pair(`tags=${tags}&mrrs=${mrrs}`, { mps: mrrs > 256 ? 4096 : 256 });
      const n = mb << 20;
      const t0 = performance.now();
      const got = await readPhys(c, 0, n);
      const s = (performance.now() - t0) / 1000;
      expect(Buffer.compare(got, src.subarray(0, n))).toBe(0);
      console.log(
        `seq tags=${tags} mrrs=${mrrs}${mrrs > 256 ? ' (responder MPS 4096)' : ''}: ${(n / 1e6 / s).toFixed(1)} MB/s, ` +
          `${(c.metrics.requests / s / 1000).toFixed(1)}k req/s, ${(c.metrics.completions / s / 1000).toFixed(1)}k cpl/s ` +
          `timeouts ${c.metrics.timeouts} srtt ${c.metrics.srtt_ms.toFixed(2)} ms`,
      );
    }, 120_000);
  }

  it('4 KiB random reads/s (batches of 64, tags=16)', async () => {
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
      `random 4 KiB: ${(reads / s).toFixed(0)} reads/s (${((reads * 4096) / 1e6 / s).toFixed(1)} MB/s) ${JSON.stringify(c.metrics)}`,
    );
  }, 60_000);

  it('single-read latency (8 B and 512 B), one outstanding', async () => {
    const c = await pair('tags=16');
    for (const n of [8, 512]) {
      const lat: number[] = [];
      for (let i = 0; i < 5000; i++) {
        const t0 = performance.now();
        await readPhys(c, (i * 4096) % SIZE, n);
        lat.push(performance.now() - t0);
      }
      lat.sort((a, b) => a - b);
      const q = (p: number) => (lat[Math.floor(p * lat.length)] * 1000).toFixed(0);
      console.log(`latency ${n} B: median ${q(0.5)} µs, p99 ${q(0.99)} µs`);
    }
  }, 60_000);

  it('lossy link 64 MiB (loss 5 %, reorder 5 %, dup 1 %)', async () => {
    const c = await pair('tags=16', { seed: 77, loss: 0.05, reorder: 0.05, dup: 0.01 });
    const t0 = performance.now();
    const got = await readPhys(c, 0, SIZE);
    const s = (performance.now() - t0) / 1000;
    expect(Buffer.compare(got, src)).toBe(0);
    console.log(`lossy 64 MiB: ${s.toFixed(2)} s, ${JSON.stringify(c.metrics)}`);
  }, 120_000);
});
