import { PmiError } from './errors.js';

/** Lowercase "0x…" hex for a non-negative integer given as number or bigint (JSON-safe 64-bit values). */
export function hex(value: number | bigint): string {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new RangeError(`hex(): not a safe non-negative integer: ${value}`);
  }
  return '0x' + value.toString(16);
}

/**
 * Parse a command-line number: `0x` hex or decimal, optional `_` separators.
 * Returns a bigint so 64-bit virtual addresses are exact; use {@link parseSafeNumber}
 * for values that must fit in a JS number (physical addresses, lengths).
 */
export function parseBigNumber(text: string, what = 'number'): bigint {
  const t = text.trim().replace(/_/g, '').toLowerCase();
  if (/^0x[0-9a-f]+$/.test(t) || /^[0-9]+$/.test(t)) return BigInt(t);
  throw new PmiError('E_USAGE', 'cli', `invalid ${what} '${text}': expected 0x-prefixed hex or decimal`, {
    value: text,
  });
}

export function parseSafeNumber(text: string, what = 'number'): number {
  const v = parseBigNumber(text, what);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PmiError('E_USAGE', 'cli', `${what} '${text}' is larger than 2^53-1`, { value: text });
  }
  return Number(v);
}

/** Parse sizes like `256M`, `4G`, `64K`, `4096` (binary units). */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(0x[0-9a-f]+|[0-9]+)\s*([kmgt]i?b?)?\s*$/i.exec(text);
  if (!m)
    throw new PmiError('E_USAGE', 'cli', `invalid ${what} '${text}': expected e.g. 4096, 0x1000, 64K, 256M, 4G`, {
      value: text,
    });
  const base = Number(BigInt(m[1].toLowerCase()));
  const unit = (m[2] ?? '').charAt(0).toLowerCase();
  const mult = unit === 'k' ? 2 ** 10 : unit === 'm' ? 2 ** 20 : unit === 'g' ? 2 ** 30 : unit === 't' ? 2 ** 40 : 1;
  const v = base * mult;
  if (!Number.isSafeInteger(v)) throw new PmiError('E_USAGE', 'cli', `${what} '${text}' is too large`, { value: text });
  return v;
}
