import { describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import { BtfKind, parseBtf, type Btf } from '@pmi/kernel';
import { buildKernelLike, rng } from './fixtures/btf/builder.js';

/** Exercise every query on a parsed (possibly garbage) BTF; anything thrown must be a PmiError. */
function exercise(btf: Btf): void {
  const guard = (f: () => unknown): void => {
    try {
      f();
    } catch (e) {
      if (!(e instanceof PmiError)) throw e;
    }
  };
  guard(() => btf.findType('task_struct'));
  guard(() => btf.field('task_struct', 'pid'));
  guard(() => btf.field('task_struct.signal.rlim[2].rlim_max'));
  guard(() => btf.percpuVar('runqueues'));
  guard(() => btf.enumValue('TASK_DEAD'));
  for (let id = 0; id < btf.count; id++) {
    guard(() => btf.type(id));
    guard(() => btf.typeToString(id, 'x'));
    guard(() => btf.sizeOf(id));
    const k = btf.kind(id);
    if (k === BtfKind.STRUCT || k === BtfKind.UNION) guard(() => btf.structLayout(id));
    if (k === BtfKind.FUNC_PROTO || k === BtfKind.FUNC) guard(() => btf.funcProto(id));
    if (k === BtfKind.DATASEC) guard(() => btf.datasec(btf.name(id)));
  }
}

describe('fuzz: mutated BTF never throws anything but PmiError, never hangs', () => {
  const valid = buildKernelLike().b.build();

  it('40k seeded mutations of a valid blob', () => {
    const rand = rng(0x5eed_b7f);
    const ri = (n: number) => Math.floor(rand() * n);
    const t0 = performance.now();
    let parsed = 0;
    let rejected = 0;
    const N = 40_000;
    for (let iter = 0; iter < N; iter++) {
      let b: Uint8Array = valid.slice();
      const dv = new DataView(b.buffer);
      const mode = ri(6);
      const n = 1 + ri(4);
      for (let j = 0; j < n; j++) {
        switch (mode) {
          case 0: // random byte anywhere
            b[ri(b.length)] = ri(256);
            break;
          case 1: // random word in the type section (ids, infos, offsets)
            dv.setUint32(24 + 4 * ri((b.length - 24) >> 2), (rand() * 2 ** 32) >>> 0, true);
            break;
          case 2: // small value in a word: plausible ids, kinds, vlen
            dv.setUint32(24 + 4 * ri((b.length - 24) >> 2), ri(3) === 0 ? (ri(20) << 24) | ri(4) : ri(120), true);
            break;
          case 3: // header fields
            dv.setUint32(4 * (1 + ri(5)), ri(3) === 0 ? (rand() * 2 ** 32) >>> 0 : ri(b.length + 64), true);
            break;
          case 4: // truncate
            b = b.subarray(0, ri(b.length));
            break;
          default: // bit flip in a record's info/type word
            b[24 + ri(b.length - 24)] ^= 1 << ri(8);
        }
        if (b.length < 24) break;
      }
      try {
        const btf = parseBtf(b);
        parsed++;
        if (iter % 4 === 0) exercise(btf);
      } catch (e) {
        if (!(e instanceof PmiError)) throw new Error(`iteration ${iter}: non-PmiError ${String(e)}`, { cause: e });
        expect(e.code).toBe('E_BTF');
        rejected++;
      }
    }
    const ms = performance.now() - t0;
    console.log(`btf fuzz: ${N} mutations in ${ms.toFixed(0)} ms: ${parsed} parsed, ${rejected} rejected`);
    expect(parsed).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(1000);
    expect(ms).toBeLessThan(45_000);
  });

  it('pure random bytes with a valid header prefix', () => {
    const rand = rng(42);
    for (let iter = 0; iter < 5000; iter++) {
      const len = 24 + Math.floor(rand() * 600);
      const b = new Uint8Array(len);
      for (let i = 0; i < len; i++) b[i] = Math.floor(rand() * 256);
      const dv = new DataView(b.buffer);
      dv.setUint16(0, 0xeb9f, true);
      b[2] = 1;
      dv.setUint32(4, 24, true);
      const tl = Math.floor(rand() * (len - 24)) & ~3;
      dv.setUint32(8, 0, true);
      dv.setUint32(12, tl, true);
      dv.setUint32(16, tl, true);
      dv.setUint32(20, len - 24 - tl, true);
      try {
        exercise(parseBtf(b));
      } catch (e) {
        if (!(e instanceof PmiError)) throw e;
      }
    }
  });
});
