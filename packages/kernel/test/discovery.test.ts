import { describe, expect, it } from 'vitest';
import { BufferMemory } from '@pmi/core';
import { discoverKernel } from '../src/index.js';

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('discovery on memory that holds no kernel', () => {
  it.each([
    ['zeros', () => new Uint8Array(32 << 20)],
    [
      'random bytes',
      () => {
        const r = seeded(7);
        const b = new Uint8Array(32 << 20);
        for (let i = 0; i < b.length; i += 4) {
          const v = (r() * 2 ** 32) >>> 0;
          b[i] = v;
          b[i + 1] = v >>> 8;
          b[i + 2] = v >>> 16;
          b[i + 3] = v >>> 24;
        }
        return b;
      },
    ],
    [
      'digit runs and BTF magic planted in noise',
      () => {
        const b = new Uint8Array(16 << 20);
        const digits = Buffer.from('0\u00001\u00002\u00003\u00004\u00005\u00006\u00007\u00008\u00009\u0000', 'latin1');
        for (let at = 4096; at < b.length - 64; at += 1 << 20) {
          b.set(digits, at);
          b.set([0x9f, 0xeb, 0x01, 0x00, 0x18, 0, 0, 0], at + 512);
        }
        return b;
      },
    ],
  ])('%s → E_NOT_FOUND naming the symbols stage, quickly', async (_name, make) => {
    const mem = new BufferMemory([{ start: 0, bytes: make() }]);
    const t0 = performance.now();
    const err = await discoverKernel(mem).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_NOT_FOUND', data: { stage: 'symbols' } });
    expect((err as Error).message).toMatch(/symbols/);
    expect(performance.now() - t0).toBeLessThan(20_000); // bounded, not a hang (typically well under 1 s)
  });
});
