import { describe, expect, it } from 'vitest';
import { intersectRanges, normaliseRanges } from '../src/index.js';

describe('intersectRanges', () => {
  it('keeps what both lists cover, split where either has a hole', () => {
    const probed = [
      { start: 0, end: 0x10000000 },
      { start: 0x100000000, end: 0x140000000 },
    ];
    const ram = normaliseRanges([
      { start: 0x1000, end: 0x9f000 },
      { start: 0x100000, end: 0xbffe0000 }, // reaches past the probed end
      { start: 0x100000000, end: 0x140000000 },
    ]);
    expect(intersectRanges(probed, ram)).toEqual([
      { start: 0x1000, end: 0x9f000 },
      { start: 0x100000, end: 0x10000000 },
      { start: 0x100000000, end: 0x140000000 },
    ]);
  });

  it('is empty when nothing overlaps, and symmetric', () => {
    const a = [{ start: 0, end: 10 }];
    const b = [{ start: 10, end: 20 }];
    expect(intersectRanges(a, b)).toEqual([]);
    const c = [
      { start: 0, end: 5 },
      { start: 8, end: 30 },
    ];
    expect(intersectRanges(b, c)).toEqual(intersectRanges(c, b));
    expect(intersectRanges(b, c)).toEqual([{ start: 10, end: 20 }]);
  });
});
