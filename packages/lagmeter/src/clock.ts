// NTP-style clock-offset estimation over the DataChannel: the client sends t0, the host stamps
// receive t1 and send t2, the client receives at t3. offset θ = ((t1 − t0) + (t2 − t3)) / 2
// (host clock − client clock), round trip δ = (t3 − t0) − (t2 − t1). Any sample's true offset
// lies within θ ± δ/2 (whatever the path asymmetry), so the min-RTT samples give the tightest
// bound; asymmetric paths bias θ by half the asymmetry, always inside that bound.

export interface ClockSample {
  t0: number;
  t1: number;
  t2: number;
  t3: number;
}

export interface ClockEstimate {
  /** host − client, ms. */
  offset: number;
  /** |true offset − offset| ≤ bound (half the smallest round trip used), ms. */
  bound: number;
  rttMin: number;
  rttMedian: number;
  /** Samples used (min-RTT filter) / total. */
  used: number;
  n: number;
}

export function estimateOffset(samples: readonly ClockSample[], keepFraction = 0.1): ClockEstimate | null {
  const xs = samples
    .map((s) => ({ theta: (s.t1 - s.t0 + (s.t2 - s.t3)) / 2, delta: s.t3 - s.t0 - (s.t2 - s.t1) }))
    .filter((x) => Number.isFinite(x.theta) && Number.isFinite(x.delta) && x.delta >= 0)
    .sort((a, b) => a.delta - b.delta);
  if (xs.length === 0) return null;
  const k = Math.max(1, Math.ceil(xs.length * keepFraction));
  const best = xs.slice(0, k);
  const thetas = best.map((x) => x.theta).sort((a, b) => a - b);
  const offset = thetas[Math.floor(thetas.length / 2)];
  // Each kept sample bounds the truth to [θ − δ/2, θ + δ/2]; report the bound around the chosen offset.
  const bound = Math.max(...best.map((x) => Math.abs(x.theta - offset) + x.delta / 2));
  const r = (v: number) => Math.round(v * 1000) / 1000;
  return {
    offset: r(offset),
    bound: r(bound),
    rttMin: r(xs[0].delta),
    rttMedian: r(xs[Math.floor(xs.length / 2)].delta),
    used: k,
    n: xs.length,
  };
}
