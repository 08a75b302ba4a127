import fs from 'node:fs';
import { PmiError, hex, type OpenOptions } from '@pmi/core';
import {
  FileMemory,
  closeQuietly,
  normalisedUri,
  openFile,
  parseFileUri,
  preadSome,
  u64,
  type Segment,
} from './file-memory.js';

/** "EMiL" read as a little-endian u32 (bytes 45 4D 69 4C in the file). */
export const LIME_MAGIC = 0x4c694d45;
export const LIME_VERSION = 1;
export const LIME_HEADER_SIZE = 32;

/** One LiME range as found in a file: physical [start, end) whose bytes begin at dataOffset. */
export interface LimeRange {
  readonly start: number;
  readonly end: number;
  readonly headerOffset: number;
  readonly dataOffset: number;
}

/** Encode one 32-byte LiME range header for physical [start, start+length). */
export function encodeLimeHeader(start: number, length: number): Uint8Array {
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(length) || length <= 0) {
    throw new PmiError('E_USAGE', 'lime', `invalid LiME range: start ${start}, length ${length}`, {});
  }
  const h = new Uint8Array(LIME_HEADER_SIZE);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, LIME_MAGIC, true);
  dv.setUint32(4, LIME_VERSION, true);
  dv.setBigUint64(8, BigInt(start), true);
  dv.setBigUint64(16, BigInt(start + length - 1), true); // inclusive end
  // bytes 24..31 reserved, zero
  return h;
}

/**
 * Parse and validate every range header of a LiME file (the headers only; data is not read).
 * Bad magic/version, end < start, a range running past the end of the file, a trailing partial
 * header, or overlapping ranges → E_SOURCE_FORMAT naming the file offset.
 */
export function scanLime(fd: number, fileSize: number, uri: string, p: string): LimeRange[] {
  const ranges: LimeRange[] = [];
  const fail = (off: number, msg: string, extra: Record<string, unknown> = {}): never => {
    throw new PmiError('E_SOURCE_FORMAT', 'lime', `${p}: ${msg} (LiME header at file offset ${hex(off)})`, {
      uri,
      file_offset: hex(off),
      ...extra,
    });
  };
  if (fileSize === 0) fail(0, 'empty file, no LiME range header');
  let off = 0;
  while (off < fileSize) {
    const h = preadSome(fd, LIME_HEADER_SIZE, off);
    if (h.length < LIME_HEADER_SIZE) fail(off, `truncated header: only ${h.length} of 32 bytes before end of file`);
    const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    const magic = dv.getUint32(0, true);
    if (magic !== LIME_MAGIC)
      fail(off, `bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0x4c694d45 "EMiL")`);
    const version = dv.getUint32(4, true);
    if (version !== LIME_VERSION) fail(off, `unsupported LiME version ${version} (expected 1)`);
    const start = u64(dv, 8, () => `start address at file offset ${hex(off + 8)}`, 'lime', uri);
    const endIncl = u64(dv, 16, () => `end address at file offset ${hex(off + 16)}`, 'lime', uri);
    if (endIncl < start) fail(off, `range end ${hex(endIncl)} is below its start ${hex(start)}`);
    const len = endIncl - start + 1;
    const dataOffset = off + LIME_HEADER_SIZE;
    if (dataOffset + len > fileSize) {
      fail(
        off,
        `range ${hex(start)}-${hex(endIncl)} needs ${len} bytes but the file ends ${fileSize - dataOffset} bytes after the header`,
        {
          missing_bytes: dataOffset + len - fileSize,
        },
      );
    }
    ranges.push({ start, end: endIncl + 1, headerOffset: off, dataOffset });
    off = dataOffset + len;
  }
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (b.start < a.end) {
      const later = a.headerOffset > b.headerOffset ? a : b;
      const earlier = later === a ? b : a;
      fail(
        later.headerOffset,
        `range ${hex(later.start)}-${hex(later.end - 1)} overlaps the range ${hex(earlier.start)}-${hex(earlier.end - 1)} ` +
          `declared at file offset ${hex(earlier.headerOffset)}`,
      );
    }
  }
  return ranges;
}

/** `lime:PATH` — a LiME dump (`format=lime`): 32-byte range headers each followed by the range's bytes. */
export class LimeSource extends FileMemory {
  constructor(
    init: ConstructorParameters<typeof FileMemory>[0],
    readonly limeRanges: readonly LimeRange[],
  ) {
    super(init);
  }

  override describe(): Record<string, unknown> {
    return { ...super.describe(), lime_ranges: this.limeRanges.length };
  }
}

export async function openLime(uri: string, rest: string, opts: OpenOptions = {}): Promise<LimeSource> {
  const u = parseFileUri('lime', uri, rest, opts, []);
  const f = openFile('lime', uri, u.path, u.writable);
  try {
    const ranges = scanLime(f.fd, f.size, uri, u.path);
    const segments: Segment[] = ranges.map((r) => ({ start: r.start, end: r.end, fileOffset: r.dataOffset }));
    return new LimeSource(
      {
        kind: 'lime',
        uri: normalisedUri('lime', u.absPath, {}),
        path: u.path,
        fd: f.fd,
        fileSize: f.size,
        readOnly: !u.writable,
        live: false,
        segments,
      },
      ranges,
    );
  } catch (e) {
    closeQuietly(f.fd);
    throw e;
  }
}

/**
 * Streaming LiME writer (what `pmi acquire` will write). Ranges must be added in ascending,
 * non-overlapping order; each range is declared with its length (`beginRange`) and then filled
 * with `write()` chunks, so multi-GiB ranges never sit in memory. `writeRange` does both at once.
 *
 *     const w = LimeWriter.create('/tmp/mem.lime');
 *     w.writeRange(0, lowRam);
 *     w.beginRange(0x100000000, size); for (const chunk of chunks) w.write(chunk);
 *     w.close();
 */
export class LimeWriter {
  private fd: number;
  private pos = 0;
  private remaining = 0;
  private current: { start: number; length: number } | undefined;
  private lastEnd = -1;
  private readonly ranges: { start: number; end: number }[] = [];

  private constructor(
    fd: number,
    readonly path: string,
  ) {
    this.fd = fd;
  }

  /** Create (truncate) path for writing. */
  static create(path: string): LimeWriter {
    let fd: number;
    try {
      fd = fs.openSync(path, 'w');
    } catch (e) {
      throw new PmiError('E_SOURCE_IO', 'lime', `cannot create ${path}: ${(e as Error).message}`, { path });
    }
    return new LimeWriter(fd, path);
  }

  /** Start a range of `length` bytes at physical `start`; follow with write() calls totalling length. */
  beginRange(start: number, length: number): void {
    this.checkOpen();
    if (this.current) throw this.usage(`range at ${hex(this.current.start)} is still ${this.remaining} bytes short`);
    if (start < this.lastEnd) {
      throw this.usage(
        `ranges must ascend without overlap: ${hex(start)} is below the previous end ${hex(this.lastEnd)}`,
      );
    }
    const h = encodeLimeHeader(start, length);
    this.put(h);
    this.current = { start, length };
    this.remaining = length;
  }

  /** Append bytes to the current range. */
  write(chunk: Uint8Array): void {
    this.checkOpen();
    if (!this.current) throw this.usage('write() without beginRange()');
    if (chunk.length > this.remaining) {
      throw this.usage(`write of ${chunk.length} bytes overruns the range (${this.remaining} bytes left)`);
    }
    this.put(chunk);
    this.remaining -= chunk.length;
    if (this.remaining === 0) {
      this.ranges.push({ start: this.current.start, end: this.current.start + this.current.length });
      this.lastEnd = this.current.start + this.current.length;
      this.current = undefined;
    }
  }

  /** Write one whole range. */
  writeRange(start: number, data: Uint8Array): void {
    this.beginRange(start, data.length);
    this.write(data);
  }

  /** Ranges completed so far. */
  get writtenRanges(): readonly { start: number; end: number }[] {
    return this.ranges;
  }

  /** Close the file; fails if a range is incomplete (the file would be truncated). */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    fs.closeSync(fd);
    if (this.current) {
      throw this.usage(`closed with the range at ${hex(this.current.start)} ${this.remaining} bytes short`);
    }
  }

  private put(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      try {
        const n = fs.writeSync(this.fd, b, off, b.length - off, this.pos);
        off += n;
        this.pos += n;
      } catch (e) {
        throw new PmiError('E_SOURCE_IO', 'lime', `writing ${this.path} failed: ${(e as Error).message}`, {
          path: this.path,
        });
      }
    }
  }

  private checkOpen(): void {
    if (this.fd < 0) throw new PmiError('E_CLOSED', 'lime', `LiME writer for ${this.path} is closed`, {});
  }

  private usage(msg: string): PmiError {
    return new PmiError('E_USAGE', 'lime', `LiME writer ${this.path}: ${msg}`, { path: this.path });
  }
}

/** Write a whole LiME file from in-memory ranges (ascending, non-overlapping). */
export function writeLimeFile(path: string, ranges: readonly { start: number; data: Uint8Array }[]): void {
  const w = LimeWriter.create(path);
  try {
    for (const r of ranges) w.writeRange(r.start, r.data);
  } finally {
    w.close();
  }
}
