import type { Percentiles } from './types.js';

/** Fixed-capacity ring of numbers with percentile summaries. */
export class SampleRing {
  private readonly buf: Float64Array;
  private n = 0;
  private head = 0;
  constructor(capacity = 100_000) {
    this.buf = new Float64Array(capacity);
  }
  push(v: number): void {
    this.buf[this.head] = v;
    this.head = (this.head + 1) % this.buf.length;
    if (this.n < this.buf.length) this.n++;
  }
  clear(): void {
    this.n = 0;
    this.head = 0;
  }
  values(): Float64Array {
    return this.n < this.buf.length ? this.buf.slice(0, this.n) : this.buf.slice();
  }
  summary(): Percentiles {
    return summarize(this.values());
  }
}

/** Linear-interpolated quantile of an ascending-sorted array. */
export function quantileSorted(s: ArrayLike<number>, q: number): number {
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function summarize(values: ArrayLike<number>): Percentiles {
  const s = Float64Array.from(values).sort();
  if (s.length === 0) return { n: 0, mean: NaN, min: NaN, p50: NaN, p95: NaN, p99: NaN, max: NaN };
  let sum = 0;
  for (const v of s) sum += v;
  return {
    n: s.length,
    mean: sum / s.length,
    min: s[0],
    p50: quantileSorted(s, 0.5),
    p95: quantileSorted(s, 0.95),
    p99: quantileSorted(s, 0.99),
    max: s[s.length - 1],
  };
}
