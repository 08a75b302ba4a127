import { PmiError } from './errors.js';
import { hex } from './numbers.js';

/** A physical address range [start, end). Physical addresses (≤ 52 bits) are exact JS numbers. */
export interface PhysRange {
  readonly start: number;
  readonly end: number;
}

/** Static facts about a source; schedulers (batching, caches) read these instead of guessing. */
export interface SourceInfo {
  /** The URI the source was opened with (normalised). */
  readonly uri: string;
  /** Source kind: 'raw' | 'qemu' | 'lime' | 'elf' | 'nettlp' | … */
  readonly kind: string;
  readonly readOnly: boolean;
  /** True when the memory can change while we read it (a running VM, a real machine). */
  readonly live: boolean;
  /** How many read ops one readBatch call should carry for best throughput. */
  readonly idealBatchSize: number;
  /** Concurrent requests the source can keep outstanding (1 for local files). */
  readonly maxInFlight: number;
  /** Physical ranges that exist, sorted and non-overlapping. Reads elsewhere fail with E_OUT_OF_RANGE. */
  readonly ranges: readonly PhysRange[];
}

/** One read (or write) of buf.length bytes at physical address addr. */
export interface MemOp {
  addr: number;
  buf: Uint8Array;
}

/** A failed op of a batch: its index in the batch and why. Partial reads are results, not exceptions. */
export interface OpFailure {
  index: number;
  error: PmiError;
}

/**
 * The one physical-memory interface every source implements (file images, live VM RAM,
 * NetTLP DMA). The batched read is *the* primitive; single reads are helpers on top.
 */
export interface PhysicalMemory {
  readonly info: SourceInfo;
  /**
   * Read many (address, buffer) pairs. Resolves with the failures (empty when every op
   * succeeded); a failed op's buffer content is unspecified. Never resolves with zeros
   * for bytes that do not exist.
   */
  readBatch(ops: readonly MemOp[]): Promise<OpFailure[]>;
  /** Synchronous fast path, only on local sources. Throws PmiError (E_OUT_OF_RANGE, E_SOURCE_IO). */
  readonly readSync?: (addr: number, buf: Uint8Array) => void;
  /** Write each op's buffer at its address. Read-only sources reject with E_READ_ONLY. */
  writeBatch(ops: readonly MemOp[]): Promise<void>;
  /** Release files/sockets. Further calls fail with E_CLOSED. Idempotent. */
  close(): Promise<void>;
  /**
   * The target's own map of RAM, found by kernel discovery. A source whose ranges are a guess (NetTLP
   * probing: the protocol cannot say what is RAM) narrows them to it and returns true; sources that
   * know their ranges (files, ranges given by the user) leave them and return false or lack the method.
   */
  adoptMemoryMap?(ram: readonly PhysRange[]): boolean;
}

/** Options every source opener accepts. */
export interface OpenOptions {
  /** Open for writing; every source is read-only unless this is set. */
  writable?: boolean;
}

/** Read len bytes at addr into a new buffer; throws the first failure. */
export async function readPhys(mem: PhysicalMemory, addr: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  if (mem.readSync) {
    mem.readSync(addr, buf);
    return buf;
  }
  const failures = await mem.readBatch([{ addr, buf }]);
  if (failures.length > 0) throw failures[0].error;
  return buf;
}

/** Write data at addr; throws on failure (E_READ_ONLY for read-only sources). */
export async function writePhys(mem: PhysicalMemory, addr: number, data: Uint8Array): Promise<void> {
  await mem.writeBatch([{ addr, buf: data }]);
}

/** Index of the range containing addr, or -1. Binary search: ranges are sorted. */
export function findRange(ranges: readonly PhysRange[], addr: number): number {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid];
    if (addr < r.start) hi = mid - 1;
    else if (addr >= r.end) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/**
 * First address in [addr, addr+len) not covered by ranges, or -1 when all of it exists.
 * Adjacent ranges count as contiguous, so reads may cross range boundaries.
 */
export function firstMissingByte(ranges: readonly PhysRange[], addr: number, len: number): number {
  const end = addr + len;
  let cur = addr;
  let i = findRange(ranges, cur);
  while (cur < end) {
    if (i < 0 || i >= ranges.length || ranges[i].start > cur) return cur;
    cur = ranges[i].end;
    i++;
  }
  return -1;
}

export function outOfRangeError(origin: string, addr: number, len: number, missing: number): PmiError {
  return new PmiError(
    'E_OUT_OF_RANGE',
    origin,
    `physical address ${hex(missing)} does not exist in this source (read of ${len} bytes at ${hex(addr)})`,
    { address: hex(missing), request_address: hex(addr), length: len },
  );
}

/** Throw E_OUT_OF_RANGE naming the first missing byte, if any byte of [addr, addr+len) is missing. */
export function assertInRanges(origin: string, ranges: readonly PhysRange[], addr: number, len: number): void {
  if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0) {
    throw new PmiError('E_OUT_OF_RANGE', origin, `invalid physical read: address ${addr}, length ${len}`, {});
  }
  const missing = firstMissingByte(ranges, addr, len);
  if (missing >= 0) throw outOfRangeError(origin, addr, len, missing);
}

/** Ranges in both lists (each sorted and merged, as normaliseRanges gives them). */
export function intersectRanges(a: readonly PhysRange[], b: readonly PhysRange[]): PhysRange[] {
  const out: PhysRange[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const s = Math.max(a[i].start, b[j].start);
    const e = Math.min(a[i].end, b[j].end);
    if (s < e) out.push({ start: s, end: e });
    if (a[i].end < b[j].end) i++;
    else j++;
  }
  return out;
}

/** Sort and merge touching/overlapping ranges. */
export function normaliseRanges(ranges: readonly PhysRange[]): PhysRange[] {
  const sorted = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const out: PhysRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) out[out.length - 1] = { start: last.start, end: Math.max(last.end, r.end) };
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

export function totalSize(ranges: readonly PhysRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.end - r.start;
  return n;
}

export function rangesToJSON(ranges: readonly PhysRange[]): { start: string; end: string; size: number }[] {
  return ranges.map((r) => ({ start: hex(r.start), end: hex(r.end), size: r.end - r.start }));
}
