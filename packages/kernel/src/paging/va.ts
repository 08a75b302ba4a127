/**
 * Virtual-address representation (see README-paging.md, "Numbers").
 *
 * - API edges: `bigint`, exact for 48- and 57-bit canonical addresses (sign-extended kernel
 *   addresses exceed 2^53). Negative bigints are accepted and read as two's complement.
 * - Hot paths: two unsigned 32-bit halves (hi, lo) held in JS numbers. Bitwise operators are
 *   only ever applied to one half, never to a combined > 32-bit value.
 * - Page keys: `hi * 2**20 + (lo >>> 12)` — the 52-bit virtual page number, exact in a double.
 */

const U64 = 1n << 64n;
const MASK32 = 0xffffffffn;

/** Split a virtual address into unsigned 32-bit halves; throws RangeError outside [-2^63, 2^64). */
export function vaSplit(va: bigint): { hi: number; lo: number } {
  if (va < -(1n << 63n) || va >= U64) throw new RangeError(`virtual address out of 64-bit range: ${va}`);
  const u = va < 0n ? va + U64 : va;
  return { hi: Number(u >> 32n), lo: Number(u & MASK32) };
}

/** Join unsigned 32-bit halves into an unsigned 64-bit bigint. */
export function vaJoin(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Unsigned 64-bit value of a bigint VA (two's complement for negatives). */
export function vaUnsigned(va: bigint): bigint {
  return BigInt.asUintN(64, va);
}

/** "0x…" for a 64-bit value given as bigint (negative → two's complement). */
export function vaHex(va: bigint): string {
  return '0x' + BigInt.asUintN(64, va).toString(16);
}

/** "0x…" for a 64-bit value given as two 32-bit halves (no BigInt). */
export function hex64(hi: number, lo: number): string {
  hi >>>= 0;
  lo >>>= 0;
  if (hi === 0) return '0x' + lo.toString(16);
  return '0x' + hi.toString(16) + lo.toString(16).padStart(8, '0');
}

/** Page key of (hi, lo): the virtual page number, < 2^52, exact as a number. */
export function pageKey(hi: number, lo: number): number {
  return hi * 1048576 + (lo >>> 12);
}

/**
 * Whether (hi, lo) is canonical for the given number of virtual-address bits (48 or 57):
 * bits [vaBits-1, 63] all equal. Works on the high half only (vaBits > 32).
 */
export function isCanonicalHiLo(hi: number, vaBits: number): boolean {
  const s = hi >> (vaBits - 33); // arithmetic shift of the int32 view of hi
  return s === 0 || s === -1;
}

export function isCanonical(va: bigint, levels: 4 | 5): boolean {
  if (va < -(1n << 63n) || va >= U64) return false;
  return isCanonicalHiLo(vaSplit(va).hi, levels === 5 ? 57 : 48);
}

/** Sign-extend an address of vaBits bits (given as an unsigned bigint) to a canonical 64-bit one. */
export function canonicalize(va: bigint, vaBits: number): bigint {
  return BigInt.asUintN(64, BigInt.asIntN(vaBits, va));
}
