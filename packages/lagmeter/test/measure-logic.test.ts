// Pure logic: pixel stamp round trip, NTP offset estimator, statistics, timing-frame parsing.
import { describe, expect, it } from 'vitest';
import { encodeBits, decodeBits, readStamp, READ_W, READ_H, COLS, ROWS } from '../src/pages/stamp.js';
import { bootstrapMedianCI, dist, estimateOffset, parseTimingFrameInfo, prng } from 'lagmeter';

describe('pixel stamp', () => {
  it('round-trips frame id and input sequence, and rejects corrupted bits', () => {
    for (const [id, seq] of [
      [0, 0],
      [1, 2],
      [0xffffffff, 0xffffff],
      [123456789, 4242],
    ]) {
      const bits = encodeBits(id, seq);
      expect(decodeBits(bits)).toEqual({ frameId: id >>> 0, inputSeq: seq });
      for (const flip of [0, 17, 40, 63]) {
        const bad = bits.slice();
        bad[flip] ^= 1;
        expect(decodeBits(bad)).toBeNull();
      }
    }
  });

  it('reads back from a noisy, blurred RGBA raster', () => {
    const bits = encodeBits(987654, 321);
    const rnd = prng(3);
    const px = new Uint8ClampedArray(READ_W * READ_H * 4);
    for (let r = 0; r < ROWS; r++)
      for (let c = 0; c < COLS; c++)
        for (let y = 0; y < 4; y++)
          for (let x = 0; x < 4; x++) {
            // Codec-like damage: ±40 noise, and block edges smeared towards grey.
            const edge = x === 0 || x === 3 || y === 0 || y === 3;
            const v = bits[r * COLS + c] ? 235 : 16;
            const val = (edge ? (v + 128) / 2 : v) + (rnd() - 0.5) * 80;
            const i = ((r * 4 + y) * READ_W + (c * 4 + x)) * 4;
            px[i] = px[i + 1] = px[i + 2] = val;
            px[i + 3] = 255;
          }
    expect(readStamp(px)).toEqual({ frameId: 987654, inputSeq: 321 });
  });
});

describe('NTP-style offset estimator', () => {
  it('recovers a known offset within the min-RTT bound, with queueing noise on both legs', () => {
    const rnd = prng(5);
    const offset = 12.5; // host − client
    const samples = Array.from({ length: 200 }, (_, i) => {
      const t0 = i * 100;
      const up = 1 + rnd() * rnd() * 30;
      const down = 1 + rnd() * rnd() * 30;
      const t1 = t0 + up + offset;
      const t2 = t1 + 0.2;
      return { t0, t1, t2, t3: t2 - offset + down };
    });
    const e = estimateOffset(samples)!;
    expect(Math.abs(e.offset - offset)).toBeLessThanOrEqual(e.bound);
    expect(e.bound).toBeLessThan(6);
  });

  it('asymmetric path: biased by half the asymmetry, still inside the bound', () => {
    const samples = Array.from({ length: 50 }, (_, i) => ({ t0: i, t1: i + 41, t2: i + 41, t3: i + 42 }));
    const e = estimateOffset(samples)!;
    expect(e.offset).toBeCloseTo(20, 5);
    expect(e.bound).toBeCloseTo(21, 5);
  });
});

describe('statistics', () => {
  it('percentiles and a seeded bootstrap CI', () => {
    const xs = Array.from({ length: 101 }, (_, i) => i);
    expect(dist(xs)).toEqual({ median: 50, p95: 95, p99: 99, n: 101 });
    const ci = bootstrapMedianCI(xs, 500, 1);
    expect(ci[0]).toBeLessThan(50);
    expect(ci[1]).toBeGreaterThan(50);
    expect(bootstrapMedianCI(xs, 500, 1)).toEqual(ci);
  });

  it('googTimingFrameInfo: sender fields before an NTP estimate are rejected, others converted', () => {
    expect(
      parseTimingFrameInfo('1,-23,-18,-10,-10,-1,-23,-23,4640540,4640555,4640556,4640559,4640555,0,1', 0),
    ).toBeNull();
    const t = parseTimingFrameInfo(
      '2379161389,4644548,4644666,4644671,4644671,4644671,4644548,4644548,4644676,4644677,4644677,4644678,4644688,0,1',
      1000,
    )!;
    expect(t.rtp).toBe(2379161389);
    expect(t.encodeStart - t.capture).toBe(118);
    expect(t.decodeEnd).toBe(4645678);
    expect(t.timer).toBe(true);
  });
});
