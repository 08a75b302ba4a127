/**
 * What the byte-region checks (syscall dispatch, IDT, text) share: reading kernel virtual ranges,
 * splitting them into physical pieces the watcher can poll, naming addresses, and telling core
 * kernel text from everything else.
 */
import { createHash } from 'node:crypto';
import { PmiError } from '@pmi/core';
import type { DiscoveredKernel } from '@pmi/kernel';
import type { PolledRegion } from './types.js';
import { vaHex } from '../model.js';

const PAGE = 4096n;

/** The physical pieces of a kernel virtual range, page by page (adjacent pages merged). */
export async function regionOf(d: DiscoveredKernel, name: string, va: bigint, size: number): Promise<PolledRegion> {
  const pieces: { pa: number; len: number }[] = [];
  let cur = va;
  const end = va + BigInt(size);
  const vas: bigint[] = [];
  while (cur < end) {
    vas.push(cur);
    cur = (cur / PAGE + 1n) * PAGE;
  }
  const pas = await d.paging.translateBatch(vas);
  for (let i = 0; i < vas.length; i++) {
    const pa = pas[i];
    if (pa instanceof PmiError) throw pa;
    const next = i + 1 < vas.length ? vas[i + 1] : end;
    const len = Number(next - vas[i]);
    const last = pieces.at(-1);
    if (last && last.pa + last.len === pa) last.len += len;
    else pieces.push({ pa, len });
  }
  return { name, va, pieces, size };
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Bounds of the core kernel's text and read-only data, from its own symbols. */
export interface KernelImageBounds {
  textStart: bigint;
  textEnd: bigint;
  rodataStart?: bigint;
  rodataEnd?: bigint;
}

export function imageBounds(d: DiscoveredKernel): KernelImageBounds {
  const s = d.symbols;
  const get = (n: string) => s.get(n)?.address;
  const textStart = get('_stext') ?? get('_text');
  const textEnd = get('_etext');
  if (textStart === undefined || textEnd === undefined)
    throw new PmiError('E_NOT_FOUND', 'monitor', 'kernel text bounds: no _stext/_etext symbol', {});
  return { textStart, textEnd, rodataStart: get('__start_rodata'), rodataEnd: get('__end_rodata') };
}

export function inCoreText(b: KernelImageBounds, va: bigint): boolean {
  return va >= b.textStart && va < b.textEnd;
}

/** Every name at exactly this address (aliases: `__x64_sys_getppid` = `__do_sys_getppid`). */
export function namesAt(d: DiscoveredKernel, va: bigint): string[] {
  const hit = d.symbols.byAddress(va, 0n);
  if (!hit || hit.offset !== 0n) return [];
  const out: string[] = [];
  for (let i = hit.index; i >= 0 && d.symbols.address(i) === va; i--) out.push(d.symbols.name(i));
  for (let i = hit.index + 1; i < d.symbols.count && d.symbols.address(i) === va; i++) out.push(d.symbols.name(i));
  return out;
}

/** `name+0xoff` for an address (or its hex when nothing is near). */
export function symbolOf(d: DiscoveredKernel, va: bigint): string {
  const hit = d.symbols.byAddress(va, 1n << 24n);
  if (!hit) return vaHex(va);
  return hit.offset === 0n ? hit.name : `${hit.name}+0x${hit.offset.toString(16)}`;
}

/** Size of a symbol: distance to the next symbol at a higher address (bounded by `max`). */
export function symbolSize(d: DiscoveredKernel, name: string, max = 1 << 20): { va: bigint; size: number } | undefined {
  const sym = d.symbols.get(name);
  if (!sym) return undefined;
  let i = sym.index + 1;
  while (i < d.symbols.count && d.symbols.address(i) <= sym.address) i++;
  if (i >= d.symbols.count) return undefined;
  const size = Number(d.symbols.address(i) - sym.address);
  return size > 0 && size <= max ? { va: sym.address, size } : undefined;
}

export function u64At(b: Uint8Array, off: number): bigint {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).readBigUInt64LE(off);
}

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

export function fromBase64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** Byte ranges where a and b differ: [offset, length] pairs, merged when closer than `gap`. */
export function diffRanges(a: Uint8Array, b: Uint8Array, gap = 8): [number, number][] {
  const out: [number, number][] = [];
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] === b[i]) continue;
    const last = out.at(-1);
    if (last && i - (last[0] + last[1]) <= gap) last[1] = i - last[0] + 1;
    else out.push([i, 1]);
  }
  if (a.length !== b.length) out.push([n, Math.abs(a.length - b.length)]);
  return out;
}

export function hexBytes(b: Uint8Array, off: number, len: number): string {
  return Buffer.from(b.buffer, b.byteOffset + off, Math.max(0, Math.min(len, b.length - off))).toString('hex');
}
