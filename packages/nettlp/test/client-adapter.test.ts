/** End-to-end: the client against the software adapter (packages/nettlp/src/adapter) serving a buffer. */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  readPhys,
  writePhys,
  type MemOp,
  type OpFailure,
  type PhysicalMemory,
  type SourceInfo,
  PmiError,
} from '@pmi/core';
import { openNetTlp } from '../src/client/index.js';
import { portBase, randomBytes } from './client-responder.js';

type AdapterModule = {
  startAdapter(o: Record<string, unknown>): Promise<{ close(): Promise<void> }>;
};
let adapterMod: AdapterModule | undefined;
try {
  adapterMod = (await import('../src/adapter/index.js')) as unknown as AdapterModule;
} catch {
  adapterMod = undefined; // the adapter has not landed in this checkout
}

const G4 = 2 ** 32;
/** A minimal in-memory PhysicalMemory with a hole between low and high RAM (test-local, no dependency). */
function bufferMemory(low: Uint8Array, high: Uint8Array): PhysicalMemory {
  const ranges = [
    { start: 0, end: low.length },
    { start: G4, end: G4 + high.length },
  ];
  const find = (a: number, n: number) =>
    a + n <= low.length ? { b: low, o: a } : a >= G4 && a - G4 + n <= high.length ? { b: high, o: a - G4 } : undefined;
  const info: SourceInfo = {
    uri: 'mem:',
    kind: 'mem',
    readOnly: false,
    live: false,
    idealBatchSize: 64,
    maxInFlight: 1,
    ranges,
  };
  return {
    info,
    async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
      const f: OpFailure[] = [];
      ops.forEach((op, index) => {
        const h = find(op.addr, op.buf.length);
        if (h) op.buf.set(h.b.subarray(h.o, h.o + op.buf.length));
        else f.push({ index, error: new PmiError('E_OUT_OF_RANGE', 'mem', `no ${op.addr}`, {}) });
      });
      return f;
    },
    async writeBatch(ops: readonly MemOp[]): Promise<void> {
      for (const op of ops) {
        const h = find(op.addr, op.buf.length);
        if (!h) throw new PmiError('E_OUT_OF_RANGE', 'mem', `no ${op.addr}`, {});
        h.b.set(op.buf, h.o);
      }
    },
    async close() {},
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(low: Uint8Array, high: Uint8Array, extra: Record<string, unknown> = {}) {
  for (let attempt = 0; ; attempt++) {
    const base = portBase();
    try {
      const a = await adapterMod!.startAdapter({
        source: bufferMemory(low, high),
        listen: '127.0.0.2',
        portBase: base,
        tags: 32,
        writable: true,
        ...extra,
      });
      cleanups.push(() => a.close());
      return { adapter: a, base };
    } catch (e) {
      if (attempt < 10 && /EADDRINUSE/.test(String((e as Error).message))) continue;
      throw e;
    }
  }
}

describe.runIf(adapterMod !== undefined)('NetTLP client ↔ software adapter (end to end)', () => {
  it('probes the ranges, reads low and high memory, gets UR in the hole, writes land', async () => {
    const low = randomBytes(6 << 20, 1);
    const high = randomBytes(2 << 20, 2);
    const { base, adapter } = await start(low, high);
    const c = await openNetTlp(`nettlp://127.0.0.2:${base}?tags=16&writable=1`);
    cleanups.push(() => c.close());
    expect(c.info.ranges).toEqual([
      { start: 0, end: low.length },
      { start: G4, end: G4 + high.length },
    ]);
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    expect(sha(await readPhys(c, 0, low.length))).toBe(sha(low));
    expect(Buffer.compare(await readPhys(c, G4 + 0x1003, 10_000), high.subarray(0x1003, 0x1003 + 10_000))).toBe(0);
    c.setRanges([{ start: 0, end: 8 << 20 }]);
    await expect(readPhys(c, low.length + 0x100, 8)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    const data = randomBytes(5000, 3).subarray(1, 4998);
    await writePhys(c, 0x2001, data);
    const stats = JSON.stringify((adapter as unknown as { stats(): unknown }).stats());
    expect(Buffer.compare(low.subarray(0x2001, 0x2001 + data.length), data), stats).toBe(0);
  });

  // Loss, reorder and duplication together, as the issue asks: the fault injector then also sends a
  // duplicate at once and holds the original back until the next completion on that port (or ~2 ms),
  // so the original lands inside the *next* request on the tag — with the old matching (tag,
  // LowerAddress, ByteCount only) it was accepted whenever both requests ended at the same address
  // mod 128. The client's drain-window quarantine must make that impossible (README-client.md).
  // NETTLP_E2E_SEED varies the fault seed for repeated local runs.
  const seed = Number(process.env.NETTLP_E2E_SEED ?? 3);
  const fault = `loss=0.05,reorder=0.05,dup=0.01,seed=${seed}`;
  it(`a 64 MiB read through the adapter with faults ${fault} equals the source (sha256)`, async () => {
    const low = randomBytes(64 << 20, 4 + seed);
    const { base, adapter } = await start(low, new Uint8Array(0), { fault, tags: 64 });
    const c = await openNetTlp(`nettlp://127.0.0.2:${base}?ranges=0+64M&tags=64`);
    cleanups.push(() => c.close());
    const t0 = performance.now();
    const got = await readPhys(c, 0, low.length);
    const ms = performance.now() - t0;
    const stats = (adapter as unknown as { stats(): { fault: Record<string, number> } }).stats();
    console.log(`adapter ${fault} 64 MiB: ${ms.toFixed(0)} ms ${JSON.stringify(c.metrics)} ${JSON.stringify(stats)}`);
    if (Buffer.compare(got, low) !== 0) {
      let first = 0;
      while (got[first] === low[first]) first++;
      console.log(`mismatch from 0x${first.toString(16)}`);
    }
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(low).digest('hex'));
    // All three faults really happened, and the reads were retried.
    expect(stats.fault.lost).toBeGreaterThan(0);
    expect(stats.fault.reordered).toBeGreaterThan(0);
    expect(stats.fault.duplicated).toBeGreaterThan(0);
    expect(c.metrics.retries).toBeGreaterThan(0);
    expect(ms).toBeLessThan(60_000);
  }, 120_000);
});
