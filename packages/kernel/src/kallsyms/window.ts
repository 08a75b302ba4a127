/**
 * A window of physical memory read into one buffer. The decoder works in buffer positions and
 * converts to physical addresses (`base + pos`) only for reports. Reads outside the window but
 * inside the memory range throw {@link NeedMore} so the locator can re-read a larger window;
 * reads outside the range throw {@link Reject} (the candidate cannot be complete).
 */
export class NeedMore extends Error {
  constructor(
    readonly startPA: number,
    readonly endPA: number,
  ) {
    super(`need physical bytes ${startPA.toString(16)}..${endPA.toString(16)}`);
  }
}

/** A candidate failed a check; `reason` says which. */
export class Reject extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export class Win {
  readonly dv: DataView;
  readonly end: number;

  constructor(
    readonly buf: Uint8Array,
    /** Physical address of buf[0]. */
    readonly base: number,
    /** The physical range the window lies in (reads beyond it can never succeed). */
    readonly rangeStart: number,
    readonly rangeEnd: number,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.end = buf.length;
  }

  pa(pos: number): number {
    return this.base + pos;
  }

  /** Throw unless [pos, pos+len) is inside the window. */
  need(pos: number, len: number, what: string): void {
    if (pos >= 0 && pos + len <= this.end) return;
    const s = this.base + Math.min(pos, 0);
    const e = this.base + Math.max(pos + len, this.end);
    if (this.base + pos < this.rangeStart || this.base + pos + len > this.rangeEnd) {
      throw new Reject(`${what} would lie outside physical memory (at 0x${(this.base + pos).toString(16)})`);
    }
    throw new NeedMore(s, e);
  }

  has(pos: number, len: number): boolean {
    return pos >= 0 && pos + len <= this.end;
  }

  u8(pos: number): number {
    return this.buf[pos];
  }

  u16(pos: number): number {
    return this.dv.getUint16(pos, true);
  }

  u32(pos: number): number {
    return this.dv.getUint32(pos, true);
  }

  s32(pos: number): number {
    return this.dv.getInt32(pos, true);
  }
}

export function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}
