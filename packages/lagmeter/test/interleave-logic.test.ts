// Pure logic of the interleaved A/B design: segment order, paired deltas, the median's interval.
import { describe, expect, it } from 'vitest';
import { interleaveOrder, medianCI, pairedDelta } from 'lagmeter';

describe('interleaved A/B', () => {
  it('orders rounds A B C | C B A when balanced, A B C | A B C when cyclic', () => {
    expect(interleaveOrder(['a', 'b', 'c'], 3, 'balanced')).toEqual([
      ['a', 'b', 'c'],
      ['c', 'b', 'a'],
      ['a', 'b', 'c'],
    ]);
    expect(interleaveOrder(['a', 'b'], 2, 'cyclic')).toEqual([
      ['a', 'b'],
      ['a', 'b'],
    ]);
  });

  it('pairs by round, skips rounds without both values, and a drifting load cancels', () => {
    // Baseline drifts upwards by 10 ms per round; the condition adds 40 on top of the same drift.
    const base = [10, 20, 30, 40, 50, 60];
    const cond = [50, 60, NaN, 80, 90, 100];
    const d = pairedDelta(cond, base);
    expect(d.n).toBe(5);
    expect(d.median).toBe(40);
    expect(d.ci).toEqual([40, 40]);
  });

  it('sign-test interval of the median: order statistics and their coverage', () => {
    expect(medianCI([3, 1, 2, 5, 4, 6])).toEqual({ ci: [1, 6], confidence: 0.969 });
    // n = 5 cannot reach 95%: [min, max] with its real coverage 1 − 2/32.
    expect(medianCI([1, 2, 3, 4, 5])).toEqual({ ci: [1, 5], confidence: 0.938 });
    const xs = Array.from({ length: 20 }, (_, i) => i + 1);
    // n = 20: [x(6), x(15)] covers 95.9%.
    expect(medianCI(xs)).toEqual({ ci: [6, 15], confidence: 0.959 });
    expect(medianCI([]).confidence).toBe(0);
  });
});
