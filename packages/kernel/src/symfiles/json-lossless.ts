/**
 * Lossless JSON: integers that a double cannot hold exactly (|n| > 2^53 − 1) come back as bigint;
 * everything else is what JSON.parse gives. Volatility ISF files store 64-bit addresses as plain
 * JSON numbers (e.g. 18446744071562067968), which JSON.parse silently rounds.
 *
 * How: find long digit runs outside strings (a quote-to-quote walk with indexOf, so the native
 * JSON.parse still does the heavy lifting), rewrite the unsafe ones as tagged strings, parse, and
 * turn the tagged strings into bigints in one walk over the result.
 */
import { PmiError } from '@pmi/core';

const TAG = '\u0000pmi-bigint:';
const TAG_JSON = '\\u0000pmi-bigint:';

export function parseJsonLossless(text: string, origin = 'json'): unknown {
  const re = /-?\d{16,}/g;
  let out = '';
  let last = 0;
  let inStr = false;
  let q = text.indexOf('"');
  let replaced = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const at = m.index;
    // advance the in-string state over every quote before `at`
    while (q !== -1 && q < at) {
      if (inStr) {
        let b = 0;
        for (let k = q - 1; text.charCodeAt(k) === 0x5c; k--) b++;
        if (b % 2 === 0) inStr = false;
      } else inStr = true;
      q = text.indexOf('"', q + 1);
    }
    if (inStr) continue;
    const end = at + m[0].length;
    const before = text.charCodeAt(at - 1);
    const after = text.charCodeAt(end);
    // whole integer tokens only (not part of a fraction or exponent)
    if (before === 0x2e || (before >= 0x30 && before <= 0x39) || after === 0x2e || after === 0x65 || after === 0x45)
      continue;
    if (Number.isSafeInteger(Number(m[0]))) continue;
    out += text.slice(last, at) + '"' + TAG_JSON + m[0] + '"';
    last = end;
    replaced++;
  }
  let value: unknown;
  try {
    value = JSON.parse(replaced ? out + text.slice(last) : text);
  } catch (e) {
    throw new PmiError('E_SYMBOLS', origin, `invalid JSON: ${(e as Error).message}`, {}, e);
  }
  return replaced ? revive(value) : value;
}

function revive(v: unknown): unknown {
  if (typeof v === 'string') return v.startsWith(TAG) ? BigInt(v.slice(TAG.length)) : v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i]);
    return v;
  }
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const x = o[k];
      if (typeof x === 'string' || (x !== null && typeof x === 'object')) o[k] = revive(x);
    }
  }
  return v;
}

/** A JSON number or lossless bigint as a bigint (undefined for anything else). */
export function toBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^(0x[0-9a-f]+|-?\d+)$/i.test(v)) return BigInt(v);
  return undefined;
}
