import { PmiError } from './errors.js';
import {
  assertInRanges,
  normaliseRanges,
  type MemOp,
  type OpFailure,
  type PhysicalMemory,
  type PhysRange,
  type SourceInfo,
} from './memory.js';

/**
 * Physical memory held in Uint8Arrays: synthetic targets for tests (page tables built by a
 * test kit, synthetic kallsyms/BTF blobs) and small captured regions. Each segment maps
 * [start, start + bytes.length).
 */
export class BufferMemory implements PhysicalMemory {
  readonly info: SourceInfo;
  private readonly segments: { start: number; bytes: Uint8Array }[];
  private closed = false;

  constructor(segments: { start: number; bytes: Uint8Array }[], opts: { writable?: boolean; uri?: string } = {}) {
    this.segments = [...segments].sort((a, b) => a.start - b.start);
    const ranges: PhysRange[] = normaliseRanges(
      this.segments.map((s) => ({ start: s.start, end: s.start + s.bytes.length })),
    );
    this.info = {
      uri: opts.uri ?? 'buffer:',
      kind: 'buffer',
      readOnly: !opts.writable,
      live: false,
      idealBatchSize: 64,
      maxInFlight: 1,
      ranges,
    };
  }

  readonly readSync = (addr: number, buf: Uint8Array): void => {
    this.check();
    assertInRanges('buffer', this.info.ranges, addr, buf.length);
    this.copy(addr, buf, false);
  };

  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    const failures: OpFailure[] = [];
    for (let i = 0; i < ops.length; i++) {
      try {
        this.readSync(ops[i].addr, ops[i].buf);
      } catch (e) {
        failures.push({ index: i, error: e as PmiError });
      }
    }
    return failures;
  }

  async writeBatch(ops: readonly MemOp[]): Promise<void> {
    this.check();
    if (this.info.readOnly) throw new PmiError('E_READ_ONLY', 'buffer', `source ${this.info.uri} is read-only`);
    for (const op of ops) assertInRanges('buffer', this.info.ranges, op.addr, op.buf.length);
    for (const op of ops) this.copy(op.addr, op.buf, true);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private check(): void {
    if (this.closed) throw new PmiError('E_CLOSED', 'buffer', 'source is closed');
  }

  /** Copy between buf and the segments covering [addr, addr+buf.length) (ranges already checked). */
  private copy(addr: number, buf: Uint8Array, toSegments: boolean): void {
    let done = 0;
    for (const s of this.segments) {
      const sEnd = s.start + s.bytes.length;
      const cur = addr + done;
      if (done >= buf.length) break;
      if (cur >= sEnd || cur < s.start) continue;
      const n = Math.min(sEnd - cur, buf.length - done);
      const off = cur - s.start;
      if (toSegments) s.bytes.set(buf.subarray(done, done + n), off);
      else buf.set(s.bytes.subarray(off, off + n), done);
      done += n;
    }
  }
}
