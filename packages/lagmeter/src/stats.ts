// Small, dependency-free statistics: percentiles, a seeded bootstrap CI of the median.

export function sorted(xs: readonly number[]): number[] {
  return xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
}

/** Linear-interpolated quantile of an ascending array (q in [0, 1]); NaN when empty. */
export function quantileSorted(s: readonly number[], q: number): number {
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export const median = (xs: readonly number[]): number => quantileSorted(sorted(xs), 0.5);

/** mulberry32: the seeded PRNG used everywhere a "random" choice must be reproducible. */
export function prng(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Percentile bootstrap 95% CI of the median (seeded: the same data give the same interval). */
export function bootstrapMedianCI(xs: readonly number[], iterations = 1000, seed = 1): [number, number] {
  const s = sorted(xs);
  if (s.length === 0) return [NaN, NaN];
  const rnd = prng(seed);
  const meds: number[] = [];
  const buf = new Array<number>(s.length);
  for (let i = 0; i < iterations; i++) {
    for (let j = 0; j < s.length; j++) buf[j] = s[Math.floor(rnd() * s.length)];
    meds.push(median(buf));
  }
  const m = sorted(meds);
  return [quantileSorted(m, 0.025), quantileSorted(m, 0.975)];
}

export interface Dist {
  median: number;
  p95: number;
  p99: number;
  n: number;
}

const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : NaN);

/** median / p95 / p99 / n, rounded to 0.01 ms. */
export function dist(xs: readonly number[]): Dist {
  const s = sorted(xs);
  return {
    median: r2(quantileSorted(s, 0.5)),
    p95: r2(quantileSorted(s, 0.95)),
    p99: r2(quantileSorted(s, 0.99)),
    n: s.length,
  };
}

/** P(X ≤ k) for X ~ Binomial(n, 1/2). */
function binomHalfCdf(k: number, n: number): number {
  let p = 0;
  let c = 1; // C(n, i)
  for (let i = 0; i <= k; i++) {
    p += c;
    c = (c * (n - i)) / (i + 1);
  }
  return p / 2 ** n;
}

/**
 * Distribution-free confidence interval of a median (sign-test / order-statistic interval): the
 * widest-needed pair of order statistics [x(k), x(n−k+1)] covering the median with probability
 * ≥ `level`. With few samples that level may be out of reach (n < 6 for 95%): then the interval is
 * [min, max] and `confidence` says what it actually covers (1 − 2^(1−n)).
 */
export function medianCI(xs: readonly number[], level = 0.95): { ci: [number, number]; confidence: number } {
  const s = sorted(xs);
  const n = s.length;
  if (n === 0) return { ci: [NaN, NaN], confidence: 0 };
  let k = 1;
  while (k + 1 <= Math.floor((n + 1) / 2) && 1 - 2 * binomHalfCdf(k, n) >= level) k++;
  const confidence = n === 1 ? 0 : 1 - 2 * binomHalfCdf(k - 1, n);
  return { ci: [s[k - 1], s[n - k]], confidence: Math.round(confidence * 1000) / 1000 };
}
