import fs from 'node:fs';
import path from 'node:path';
import {
  PmiError,
  hex,
  normaliseRanges,
  outOfRangeError,
  parseSize,
  splitQuery,
  type MemOp,
  type OpFailure,
  type OpenOptions,
  type PhysicalMemory,
  type SourceInfo,
} from '@pmi/core';

/**
 * One piece of the physical → file mapping: physical [start, end) lives at file offset
 * `fileOffset`. `fileOffset === -1` marks a synthesised zero-filled piece (ELF p_memsz
 * beyond p_filesz when `zerofill=1` is asked for); it reads as zeros and cannot be written.
 */
export interface Segment {
  readonly start: number;
  readonly end: number;
  readonly fileOffset: number;
}

/** Read ops per readBatch that keep the per-call overhead negligible for local files. */
export const FILE_IDEAL_BATCH = 64;

export interface FileMemoryInit {
  kind: string;
  uri: string;
  path: string;
  fd: number;
  fileSize: number;
  readOnly: boolean;
  live: boolean;
  /** Non-overlapping pieces; they are sorted here. Adjacent pieces may map to unrelated file offsets. */
  segments: readonly Segment[];
}

/**
 * A physical-memory source backed by one local file (raw image, QEMU RAM file, LiME, ELF core).
 *
 * Hot path: `readSync` does a binary search (with a last-hit cache) over the segment table,
 * then `fs.readSync(fd, callerBuffer, off, len, filePosition)` straight into the caller's
 * Uint8Array: no Buffer allocation, no copy, no whole-file loads. `readBatch` is a loop over
 * `readSync` (measured faster than libuv's async `fs.read` for 4 KiB reads; see README).
 */
export class FileMemory implements PhysicalMemory {
  readonly info: SourceInfo;
  readonly path: string;
  /** File size at open time (reads past a later truncation fail with E_SOURCE_IO). */
  readonly fileSize: number;
  readonly segments: readonly Segment[];
  protected fd: number;
  private lastSeg = 0;

  constructor(init: FileMemoryInit) {
    const segs = init.segments.filter((s) => s.end > s.start).sort((a, b) => a.start - b.start);
    for (let i = 1; i < segs.length; i++) {
      if (segs[i].start < segs[i - 1].end) {
        throw new PmiError('E_INTERNAL', init.kind, `overlapping segments in ${init.uri}`, { uri: init.uri });
      }
    }
    this.segments = segs;
    this.fd = init.fd;
    this.path = init.path;
    this.fileSize = init.fileSize;
    this.info = Object.freeze({
      uri: init.uri,
      kind: init.kind,
      readOnly: init.readOnly,
      live: init.live,
      idealBatchSize: FILE_IDEAL_BATCH,
      maxInFlight: 1,
      ranges: Object.freeze(normaliseRanges(segs).map((r) => Object.freeze(r))),
    });
  }

  /** Index of the segment holding addr, or -1. */
  protected segmentAt(addr: number): number {
    const segs = this.segments;
    const c = segs[this.lastSeg];
    if (c !== undefined && addr >= c.start && addr < c.end) return this.lastSeg;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const s = segs[mid];
      if (addr < s.start) hi = mid - 1;
      else if (addr >= s.end) lo = mid + 1;
      else {
        this.lastSeg = mid;
        return mid;
      }
    }
    return -1;
  }

  private checkOpen(): void {
    if (this.fd < 0) {
      throw new PmiError('E_CLOSED', this.info.kind, `source ${this.info.uri} is closed`, { uri: this.info.uri });
    }
  }

  private checkArgs(addr: number, len: number): void {
    if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(addr + len)) {
      throw new PmiError('E_OUT_OF_RANGE', this.info.kind, `invalid physical address ${addr} (length ${len})`, {
        uri: this.info.uri,
        length: len,
      });
    }
  }

  private outOfRange(addr: number, len: number, missing: number): PmiError {
    const e = outOfRangeError(this.info.kind, addr, len, missing);
    e.data.uri = this.info.uri;
    return e;
  }

  /**
   * Walk [addr, addr+len) over the segment table, calling `piece` for each sub-range.
   * Validates the whole span first so a failing op touches nothing.
   */
  private forEachPiece(
    addr: number,
    len: number,
    piece: (bufOff: number, n: number, seg: Segment, segOff: number) => void,
  ): void {
    const i0 = this.segmentAt(addr);
    if (i0 < 0) throw this.outOfRange(addr, len, addr);
    const segs = this.segments;
    const end = addr + len;
    // Validate contiguity before doing any I/O.
    let cur = segs[i0].end;
    let i = i0 + 1;
    while (cur < end) {
      if (i >= segs.length || segs[i].start !== cur) throw this.outOfRange(addr, len, cur);
      cur = segs[i].end;
      i++;
    }
    let a = addr;
    for (let j = i0; a < end; j++) {
      const s = segs[j];
      const n = Math.min(end, s.end) - a;
      piece(a - addr, n, s, a - s.start);
      a += n;
    }
  }

  /** Positional read of exactly len bytes into buf[off..]; a short read (file shrank) is E_SOURCE_IO. */
  private pread(buf: Uint8Array, off: number, len: number, pos: number, addr: number): void {
    while (len > 0) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, off, len, pos);
      } catch (e) {
        throw this.ioError('read', pos, len, addr, e);
      }
      if (n <= 0) {
        throw new PmiError(
          'E_SOURCE_IO',
          this.info.kind,
          `short read from ${this.path} at file offset ${hex(pos)} (physical ${hex(addr)}): the file ended early — ` +
            `was it truncated after opening?`,
          { uri: this.info.uri, file_offset: hex(pos), address: hex(addr), missing_bytes: len },
        );
      }
      off += n;
      len -= n;
      pos += n;
      addr += n;
    }
  }

  private ioError(op: string, pos: number, len: number, addr: number, e: unknown): PmiError {
    const err = e as NodeJS.ErrnoException;
    return new PmiError(
      'E_SOURCE_IO',
      this.info.kind,
      `${op} of ${len} bytes at file offset ${hex(pos)} (physical ${hex(addr)}) of ${this.path} failed: ${err.message}`,
      { uri: this.info.uri, file_offset: hex(pos), address: hex(addr), errno: err.code },
      e,
    );
  }

  /** Synchronous read of buf.length bytes at physical addr into buf (the caller's memory, no copies). */
  readonly readSync = (addr: number, buf: Uint8Array): void => {
    if (this.fd < 0) this.checkOpen();
    const len = buf.length;
    // Fast path: the whole read lies inside one file-backed segment.
    if (Number.isSafeInteger(addr) && addr >= 0) {
      const i = this.segmentAt(addr);
      if (i >= 0) {
        const s = this.segments[i];
        if (addr + len <= s.end && s.fileOffset >= 0) {
          this.pread(buf, 0, len, s.fileOffset + (addr - s.start), addr);
          return;
        }
      }
    }
    this.checkArgs(addr, len);
    if (len === 0) return;
    this.forEachPiece(addr, len, (bufOff, n, s, segOff) => {
      if (s.fileOffset < 0) buf.fill(0, bufOff, bufOff + n);
      else this.pread(buf, bufOff, n, s.fileOffset + segOff, addr + bufOff);
    });
  };

  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    this.checkOpen();
    const failures: OpFailure[] = [];
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      try {
        this.readSync(op.addr, op.buf);
      } catch (e) {
        failures.push({ index: i, error: toPmiError(e, this.info.kind) });
      }
    }
    return failures;
  }

  async writeBatch(ops: readonly MemOp[]): Promise<void> {
    this.checkOpen();
    if (this.info.readOnly) {
      throw new PmiError(
        'E_READ_ONLY',
        this.info.kind,
        `source ${this.info.uri} is read-only (open it with ?writable=1 or { writable: true } to write)`,
        { uri: this.info.uri },
      );
    }
    // Validate every op before writing anything.
    for (const op of ops) {
      this.checkArgs(op.addr, op.buf.length);
      if (op.buf.length === 0) continue;
      this.forEachPiece(op.addr, op.buf.length, (bufOff, _n, s) => {
        if (s.fileOffset < 0) {
          throw new PmiError(
            'E_READ_ONLY',
            this.info.kind,
            `physical ${hex(op.addr + bufOff)} in ${this.info.uri} is synthesised zero fill (ELF p_memsz beyond ` +
              `p_filesz), not backed by the file, so it cannot be written`,
            { uri: this.info.uri, address: hex(op.addr + bufOff) },
          );
        }
      });
    }
    for (const op of ops) {
      if (op.buf.length === 0) continue;
      this.forEachPiece(op.addr, op.buf.length, (bufOff, n, s, segOff) => {
        let off = bufOff;
        let left = n;
        let pos = s.fileOffset + segOff;
        while (left > 0) {
          let w: number;
          try {
            w = fs.writeSync(this.fd, op.buf, off, left, pos);
          } catch (e) {
            throw this.ioError('write', pos, left, op.addr + off, e);
          }
          off += w;
          left -= w;
          pos += w;
        }
      });
    }
  }

  async close(): Promise<void> {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try {
      fs.closeSync(fd);
    } catch (e) {
      throw new PmiError('E_SOURCE_IO', this.info.kind, `closing ${this.path} failed: ${(e as Error).message}`, {
        uri: this.info.uri,
      });
    }
  }

  /** Source-specific facts for describeSource(); subclasses add to it. */
  describe(): Record<string, unknown> {
    return { path: this.path, file_size: this.fileSize };
  }
}

export function toPmiError(e: unknown, origin: string): PmiError {
  if (e instanceof PmiError) return e;
  return new PmiError('E_SOURCE_IO', origin, e instanceof Error ? e.message : String(e), {}, e);
}

// ---------------------------------------------------------------------------------------------
// Opening helpers shared by the openers.

export interface ParsedFileUri {
  /** Path as written in the URI. */
  path: string;
  /** Absolute path (used in the normalised URI). */
  absPath: string;
  params: URLSearchParams;
  writable: boolean;
}

/** Parse `PATH?k=v…`; rejects unknown parameters (`writable` is always allowed). */
export function parseFileUri(
  kind: string,
  uri: string,
  rest: string,
  opts: OpenOptions,
  allowed: string[],
): ParsedFileUri {
  // A path that exists as written (even with a '?' in it) is taken literally.
  const { path: p, params } =
    rest.includes('?') && fs.existsSync(rest) ? { path: rest, params: new URLSearchParams() } : splitQuery(rest);
  if (p === '')
    throw new PmiError('E_SOURCE_URI', kind, `missing file path in '${uri}' (expected ${kind}:PATH)`, { uri });
  for (const key of params.keys()) {
    if (key !== 'writable' && !allowed.includes(key)) {
      const known = ['writable', ...allowed].join(', ');
      throw new PmiError('E_SOURCE_URI', kind, `unknown parameter '${key}' in '${uri}' (${kind}: accepts ${known})`, {
        uri,
        parameter: key,
      });
    }
  }
  const writable = parseBool(kind, uri, 'writable', params.get('writable')) || opts.writable === true;
  return { path: p, absPath: path.resolve(p), params, writable };
}

export function parseBool(kind: string, uri: string, key: string, v: string | null): boolean {
  if (v === null) return false;
  const t = v.toLowerCase();
  if (t === '' || t === '1' || t === 'true' || t === 'yes' || t === 'on') return true;
  if (t === '0' || t === 'false' || t === 'no' || t === 'off') return false;
  throw new PmiError('E_SOURCE_URI', kind, `parameter ${key}='${v}' in '${uri}' must be 1/0/true/false`, {
    uri,
    parameter: key,
  });
}

export interface OpenedFile {
  fd: number;
  size: number;
  stat: fs.Stats;
}

/** Open a file by path; errors become E_SOURCE_IO naming the path. */
export function openFile(kind: string, uri: string, p: string, writable: boolean): OpenedFile {
  let fd: number;
  try {
    fd = fs.openSync(p, writable ? 'r+' : 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new PmiError(
      'E_SOURCE_IO',
      kind,
      `cannot open ${p} for ${writable ? 'writing' : 'reading'}: ${err.message}`,
      {
        uri,
        path: p,
        errno: err.code,
      },
    );
  }
  try {
    const stat = fs.fstatSync(fd);
    if (stat.isDirectory()) {
      throw new PmiError('E_SOURCE_IO', kind, `${p} is a directory, not a memory image`, { uri, path: p });
    }
    return { fd, size: stat.size, stat };
  } catch (e) {
    fs.closeSync(fd);
    throw e instanceof PmiError ? e : toPmiError(e, kind);
  }
}

/** Read exactly len bytes at pos (for headers at open time); returns the bytes actually present. */
export function preadSome(fd: number, len: number, pos: number): Uint8Array {
  const buf = new Uint8Array(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n <= 0) break;
    got += n;
  }
  return got === len ? buf : buf.subarray(0, got);
}

/** Normalised URI: `kind:/abs/path` plus the given parameters. */
export function normalisedUri(kind: string, absPath: string, params: Record<string, string | undefined>): string {
  const q = Object.entries(params)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join('&');
  return `${kind}:${absPath}${q ? '?' + q : ''}`;
}

/** Sizes in URIs: 0x hex, decimal, or 4K/64M/3G binary units. */
export function parseSizeParam(kind: string, uri: string, key: string, v: string): number {
  try {
    return parseSize(v, key);
  } catch (e) {
    throw new PmiError('E_SOURCE_URI', kind, `bad ${key}='${v}' in '${uri}': ${(e as Error).message}`, {
      uri,
      parameter: key,
    });
  }
}

export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* already failing; keep the first error */
  }
}

/** A u64 little-endian field that must fit in a JS safe integer. */
export function u64(dv: DataView, off: number, what: () => string, kind: string, uri: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PmiError('E_SOURCE_FORMAT', kind, `${what()} is 0x${v.toString(16)}, beyond 2^53`, { uri });
  }
  return Number(v);
}
