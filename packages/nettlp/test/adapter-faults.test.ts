/**
 * Fault injection: rates over ~10k completions roughly match the spec, a seed replays
 * exactly, and every completion not lost eventually arrives (reorder/delay flush).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources';
import { parseFaultSpec, type AdapterStats } from '../src/adapter/index.js';
import { CLIENT_IP, Requester, randomData, sleep, startTestAdapter, tmpDir } from './adapter-helpers.js';

const dir = tmpDir();
const rawPath = path.join(dir, 'mem.raw');
fs.writeFileSync(rawPath, randomData(5, 1 << 16));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const N = 10_000;
const TAGS = 8;
const SPEC = 'loss=0.05,reorder=0.05,dup=0.01,delay=2ms,delayrate=0.1,seed=42';

/** N single-completion reads (4 bytes) spread over TAGS sockets, paced; returns stats and arrivals per tag. */
async function run(spec: string): Promise<{ stats: AdapterStats; received: number; perTag: string[] }> {
  const src = await openSource(`raw:${rawPath}`);
  const a = await startTestAdapter({ source: src, tags: TAGS, fault: spec });
  const reqs: Requester[] = [];
  try {
    for (let t = 0; t < TAGS; t++) reqs.push(await Requester.open(CLIENT_IP, a.ports.first + t));
    for (let i = 0; i < N; i++) {
      const t = i % TAGS;
      reqs[t].sendRead((i * 4) % 0x10000, 4, t);
      if (i % 256 === 255) {
        // Pace: let the adapter catch up so no socket buffer overflows (loopback drops are not faults).
        for (let k = 0; k < 200 && a.stats().completions < i + 1; k++) await sleep(1);
      }
    }
    for (let k = 0; k < 2000 && a.stats().completions < N; k++) await sleep(1);
    const s = a.stats();
    const expected = s.completions - s.fault.lost + s.fault.duplicated;
    const total = () => reqs.reduce((n, r) => n + r.rawInbox.length, 0);
    for (let k = 0; k < 200 && total() < expected; k++) await sleep(5);
    await sleep(20);
    // Which request (LowerAddress/ByteCount identify it) arrived, in order, per tag.
    const perTag = reqs.map((r) => r.inbox.map((c) => c.lowerAddress.toString(16)).join(','));
    return { stats: a.stats(), received: total(), perTag };
  } finally {
    for (const r of reqs) await r.close();
    await a.close();
    await src.close();
  }
}

describe('fault injection', () => {
  it('parses the spec syntax', () => {
    expect(parseFaultSpec('loss=0.05,reorder=0.05,dup=0.01,delay=2ms,seed=42')).toMatchObject({
      loss: 0.05,
      reorder: 0.05,
      dup: 0.01,
      delayMs: 2,
      delayRate: 1,
      seed: 42,
    });
    expect(parseFaultSpec('loss=5%,delay=500us,delayrate=0.25')).toMatchObject({
      loss: 0.05,
      delayMs: 0.5,
      delayRate: 0.25,
    });
    expect(parseFaultSpec('')).toMatchObject({ loss: 0, dup: 0, reorder: 0, delayMs: 0 });
    for (const bad of ['loss=2', 'loss=x', 'jitter=1', 'delay=fast', 'seed=-1', 'loss']) {
      expect(() => parseFaultSpec(bad), bad).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
    }
  });

  it(`rates match over ${N} completions, a seed replays exactly, nothing is held forever`, async () => {
    const r1 = await run(SPEC);
    const r2 = await run(SPEC);
    const s = r1.stats;
    expect(s.completions).toBe(N);
    const f = s.fault;
    // Draw order per completion: loss, then (if not lost) reorder / dup / delay.
    const near = (x: number, p: number, tol: number) =>
      expect(Math.abs(x / N - p), `${x}/${N} vs ${p}`).toBeLessThan(tol);
    near(f.lost, 0.05, 0.012);
    near(f.reordered, 0.05 * 0.95, 0.012);
    near(f.duplicated, 0.01 * 0.95, 0.005);
    near(f.delayed, 0.1 * 0.95 * 0.95, 0.015);
    expect(r1.received).toBe(N - f.lost + f.duplicated);
    expect(r2.stats).toEqual(r1.stats);
    expect(r2.received).toBe(r1.received);
    expect(r2.perTag.map((x) => x.split(',').sort().join())).toEqual(r1.perTag.map((x) => x.split(',').sort().join()));
    // Reordering happened: some tag's arrival order differs from its request order.
    expect(
      r1.perTag.some(
        (x) =>
          x !==
          x
            .split(',')
            .sort((p, q) => parseInt(p, 16) - parseInt(q, 16))
            .join(','),
      ),
    ).toBe(true);
  });

  it('a different seed gives different faults', async () => {
    const a = await run(SPEC.replace('seed=42', 'seed=43'));
    const b = await run(SPEC);
    expect(a.stats.fault).not.toEqual(b.stats.fault);
  });
});
