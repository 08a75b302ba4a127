import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PmiError } from '@pmi/core';
import { expect } from 'vitest';

/** Seeded PRNG (mulberry32): deterministic test data and addresses. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random integer in [lo, hi). */
export function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo));
}

/** Seeded pseudo-random bytes. */
export function randomBytes(seed: number, n: number): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = Math.floor(r() * 4294967296);
    out[i] = v;
    out[i + 1] = v >>> 8;
    out[i + 2] = v >>> 16;
    out[i + 3] = v >>> 24;
  }
  for (; i < n; i++) out[i] = Math.floor(r() * 256);
  return out;
}

export function tmpDir(prefix = 'pmi-sources-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Read n bytes of a file at offset with plain fs (the independent truth). Missing bytes stay 0. */
export function fileBytes(file: string, offset: number, n: number): Uint8Array {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const k = fs.readSync(fd, buf, got, n - got, offset + got);
      if (k <= 0) throw new Error(`test truth: ${file} ends at ${offset + got}`);
      got += k;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** Run fn and return the PmiError it throws (or rejects with); fails the test otherwise. */
export async function pmiError(fn: () => unknown): Promise<PmiError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PmiError);
    return e as PmiError;
  }
  throw new Error('expected a PmiError, nothing was thrown');
}

export function hx(n: number): string {
  return '0x' + n.toString(16);
}

/** Equality of byte arrays with a readable first-difference message. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(`${what}: first difference at byte ${i} (${actual[i]} != ${expected[i]})`);
    }
  }
}
