/**
 * The adapter's datagram handler, free of sockets: one NetTLP datagram in, zero or more
 * completion datagrams out through a callback. The UDP layer (adapter.ts) and the fuzz
 * tests drive the same code.
 *
 * Hot path (MRd on a source with readSync): decode into a reused Tlp, one range check,
 * one readSync into a preallocated scratch area, then per completion a memmove and
 * encodeCompletion into one reused output buffer. Nothing is allocated per datagram: the
 * length-specific views the source and codec need are cached by length.
 */
import { PmiError, firstMissingByte, type MemOp, type PhysicalMemory } from '@pmi/core';
import {
  CPL_CA,
  CPL_SC,
  CPL_UR,
  DECODE_ADDRESS,
  DECODE_LENGTH,
  DECODE_OK,
  DECODE_RESERVED,
  DECODE_TRUNCATED,
  DECODE_UNSUPPORTED,
  MAX_DATAGRAM,
  MAX_PAYLOAD_BYTES,
  NETTLP_HDR_LEN,
  Tlp,
  TlpKind,
  decodeTlp,
  encodeCompletion,
} from '../codec/tlp.js';
import { ipv4ToInt, type Cidr } from './options.js';

/** Where a datagram came from / a reply goes to. */
export interface Peer {
  readonly address: string;
  readonly port: number;
}

/**
 * Receives one completion datagram. buf is only valid during the call (it is reused):
 * copy what you keep. `to` is the `from` given to {@link AdapterCore.handle}.
 */
export type ReplyFn = (buf: Uint8Array, len: number, to: Peer) => void;

/**
 * 'rcb': the first completion ends at the first RCB boundary after the start address (what root
 * complexes do; 512 B aligned at MPS 256 → 64 + 256 + 192). 'mps': the first completion is as large
 * as MPS allows while still ending on an RCB boundary (512 B → 256 + 256; 4 KiB at MPS 4096 → one
 * completion) — equally legal PCIe, fewer datagrams.
 */
export type SplitMode = 'rcb' | 'mps';

export interface AdapterCoreOptions {
  source: PhysicalMemory;
  /** Max Payload Size: largest CplD payload and largest accepted MWr payload (128…4096, power of 2). */
  mps?: number;
  /** Read Completion Boundary (64 or 128). */
  rcb?: number;
  /** Where the first completion of a split read ends (see {@link SplitMode}; default 'rcb'). */
  split?: SplitMode;
  writable?: boolean;
  /** Allowed client networks; undefined = everyone (the UDP layer supplies its default). */
  allow?: readonly Cidr[];
  completerId?: number;
  /** Clock for the NetTLP header timestamp, in ms (default performance.now). */
  now?: () => number;
}

/** JSON-ready counters (snake_case). */
export interface AdapterStats {
  /** Valid MRd / MWr TLPs accepted from allowed clients. */
  requests_read: number;
  requests_write: number;
  /** Completion datagrams produced (SC with data, and UR/CA without), before fault injection. */
  completions: number;
  bytes_read: number;
  bytes_written: number;
  /** Completions with status UR sent (reads of addresses the source does not have). */
  unsupported_request: number;
  writes_dropped_readonly: number;
  /** Posted writes dropped because (part of) the target range does not exist in the source. */
  writes_dropped_unmapped: number;
  /** Datagrams from a source address outside the allow-list. */
  denied: number;
  malformed: {
    truncated: number;
    unsupported_type: number;
    bad_length: number;
    bad_address: number;
    reserved_bits: number;
  };
  fault: { lost: number; duplicated: number; reordered: number; delayed: number };
  /** Source read/write failures (a read failure is answered with CA, or UR for E_OUT_OF_RANGE). */
  errors: number;
  /** Completions the OS refused to send. */
  send_errors: number;
}

export function emptyStats(): AdapterStats {
  return {
    requests_read: 0,
    requests_write: 0,
    completions: 0,
    bytes_read: 0,
    bytes_written: 0,
    unsupported_request: 0,
    writes_dropped_readonly: 0,
    writes_dropped_unmapped: 0,
    denied: 0,
    malformed: { truncated: 0, unsupported_type: 0, bad_length: 0, bad_address: 0, reserved_bits: 0 },
    fault: { lost: 0, duplicated: 0, reordered: 0, delayed: 0 },
    errors: 0,
    send_errors: 0,
  };
}

const PAGE = 4096;
/** Reads queued behind unfinished writes before further ones are shed. */
const MAX_WAITING = 65536;
/** Scratch layout: [0, 4096) completion payload staging, [4096, 8192) the whole read. */
const READ_AREA = MAX_PAYLOAD_BYTES;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export function validateSplitOptions(mps: number, rcb: number): void {
  if (!isPow2(mps) || mps < 128 || mps > 4096) {
    throw new PmiError('E_USAGE', 'nettlp-adapter', `mps must be a power of two 128…4096 (got ${mps})`, { mps });
  }
  if (rcb !== 64 && rcb !== 128) {
    throw new PmiError('E_USAGE', 'nettlp-adapter', `rcb must be 64 or 128 (got ${rcb})`, { rcb });
  }
  if (rcb > mps) throw new PmiError('E_USAGE', 'nettlp-adapter', `rcb (${rcb}) exceeds mps (${mps})`, { mps, rcb });
}

export class AdapterCore {
  readonly stats: AdapterStats = emptyStats();
  readonly source: PhysicalMemory;
  readonly mps: number;
  readonly rcb: number;
  readonly splitMode: SplitMode;
  readonly writable: boolean;
  readonly completerId: number;
  private readonly allow: readonly Cidr[] | undefined;
  private readonly now: () => number;
  private readonly tlp = new Tlp();
  private readonly out = new Uint8Array(MAX_DATAGRAM);
  private readonly scratch = new Uint8Array(2 * MAX_PAYLOAD_BYTES);
  /** scratch.subarray(0, n) and scratch.subarray(READ_AREA, READ_AREA + n), created on first use per n. */
  private readonly stageViews: (Uint8Array | undefined)[] = new Array(MAX_PAYLOAD_BYTES + 1);
  private readonly readViews: (Uint8Array | undefined)[] = new Array(MAX_PAYLOAD_BYTES + 1);
  private readonly zeroDw = new Uint8Array(4);
  private readonly allowCache = new Map<string, boolean>();
  private seq = 0;
  /** Posted writes not yet settled: reads wait behind them (PCIe: a read must not pass a write). */
  private writesPending = 0;
  private readonly waiting: (() => void)[] = [];
  private asyncPending = 0;
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  constructor(opts: AdapterCoreOptions) {
    this.source = opts.source;
    this.mps = opts.mps ?? 256;
    this.rcb = opts.rcb ?? 64;
    validateSplitOptions(this.mps, this.rcb);
    this.splitMode = opts.split ?? 'rcb';
    if (this.splitMode !== 'rcb' && this.splitMode !== 'mps') {
      throw new PmiError('E_USAGE', 'nettlp-adapter', `split must be rcb or mps (got '${String(opts.split)}')`, {});
    }
    this.writable = opts.writable ?? false;
    this.completerId = (opts.completerId ?? 0) & 0xffff;
    this.allow = opts.allow;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Stop answering (async reads still in flight produce nothing). */
  close(): void {
    this.closed = true;
  }

  /** Resolves when no source read/write started by handle() is still running. */
  idle(): Promise<void> {
    if (this.asyncPending === 0 && this.writesPending === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private allowed(address: string): boolean {
    const allow = this.allow;
    if (allow === undefined) return true;
    let ok = this.allowCache.get(address);
    if (ok === undefined) {
      const v = ipv4ToInt(address);
      ok = false;
      if (v >= 0) for (const c of allow) if ((v & c.mask) >>> 0 === c.net) ok = true;
      if (this.allowCache.size >= 4096) this.allowCache.clear();
      this.allowCache.set(address, ok);
    }
    return ok;
  }

  /**
   * Handle one datagram (NetTLP header + TLP) of len bytes. Never throws (a throwing reply
   * callback excepted). Replies synchronously when the source has readSync, else later.
   */
  handle(datagram: Uint8Array, len: number, from: Peer, reply: ReplyFn): void {
    if (this.closed) return;
    if (!this.allowed(from.address)) {
      this.stats.denied++;
      return;
    }
    if (len > datagram.length) len = datagram.length;
    if (!(len >= 0)) len = 0; // negative or NaN
    len = Math.floor(len);
    const t = this.tlp;
    const rc = decodeTlp(datagram, len, t);
    const m = this.stats.malformed;
    if (rc !== DECODE_OK) {
      if (rc === DECODE_TRUNCATED) m.truncated++;
      else if (rc === DECODE_UNSUPPORTED) m.unsupported_type++;
      else if (rc === DECODE_LENGTH) m.bad_length++;
      else if (rc === DECODE_ADDRESS) m.bad_address++;
      else if (rc === DECODE_RESERVED) m.reserved_bits++;
      else m.unsupported_type++;
      return;
    }
    if (t.kind === TlpKind.Completion) {
      // The adapter issues no requests of its own: a completion sent to it is unexpected.
      m.unsupported_type++;
      return;
    }
    // Exact datagram length: a TLP is header (+ Length×4 bytes for MWr), nothing after it.
    if (len !== t.payloadOffset + t.payloadLength) {
      m.bad_length++;
      return;
    }
    // A request must not cross a 4 KiB boundary (PCIe: malformed). byteLen ≤ 4096 by construction.
    const dwAddr = t.address - (t.address % 4);
    const spanEnd = dwAddr + t.lengthDw * 4;
    if (Math.floor(dwAddr / PAGE) !== Math.floor((spanEnd - 1) / PAGE)) {
      m.bad_length++;
      return;
    }
    if (t.kind === TlpKind.MemWrite) {
      if (t.payloadLength > this.mps) {
        m.bad_length++; // PCIe: a TLP payload larger than Max_Payload_Size is malformed
        return;
      }
      this.stats.requests_write++;
      this.write(datagram, t);
      return;
    }
    this.stats.requests_read++;
    if (this.writesPending > 0) {
      // Keep PCIe ordering: this read must observe earlier posted writes.
      if (this.waiting.length >= MAX_WAITING) {
        this.stats.errors++; // a source that never finishes its writes: shed reads rather than grow without bound
        return;
      }
      const addr = t.address;
      const n = t.byteLen;
      const requester = t.requester;
      const tag = t.tag;
      const attrs = (t.tc << 8) | t.attr;
      this.asyncPending++;
      this.waiting.push(() => {
        this.asyncPending--;
        this.read(addr, n, requester, tag, attrs, from, reply);
        this.settle();
      });
      return;
    }
    this.read(t.address, t.byteLen, t.requester, t.tag, (t.tc << 8) | t.attr, from, reply);
  }

  private settle(): void {
    if (this.writesPending === 0 && this.waiting.length > 0) {
      const w = this.waiting.splice(0);
      for (const f of w) this.guarded(f);
    }
    if (this.asyncPending === 0 && this.writesPending === 0 && this.idleWaiters.length > 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /** Run a deferred step; a throwing reply callback must not break the queue or leak a rejection. */
  private guarded(f: () => void): void {
    try {
      f();
    } catch {
      this.stats.send_errors++;
    }
  }

  private write(datagram: Uint8Array, t: Tlp): void {
    const n = t.byteLen;
    if (n === 0) return; // zero-length write: no bytes enabled, nothing to do
    if (!this.writable) {
      this.stats.writes_dropped_readonly++;
      return;
    }
    const addr = t.address;
    if (firstMissingByte(this.source.info.ranges, addr, n) >= 0) {
      this.stats.writes_dropped_unmapped++;
      return;
    }
    // Byte enables may be non-contiguous (Length 1 or 2): write each enabled run.
    const ops: MemOp[] = [];
    const base = t.payloadOffset;
    const lead = addr % 4;
    const first = t.firstBe;
    const last = t.lengthDw === 1 ? 0 : t.lastBe;
    const lastDwStart = (t.lengthDw - 1) * 4;
    let runStart = -1;
    const total = t.lengthDw * 4;
    for (let i = lead; i <= total; i++) {
      let on = false;
      if (i < total) {
        if (i < 4) on = ((first >>> i) & 1) === 1;
        else if (i >= lastDwStart) on = ((last >>> (i - lastDwStart)) & 1) === 1;
        else on = true;
      }
      if (on && runStart < 0) runStart = i;
      else if (!on && runStart >= 0) {
        // Copy: the caller may reuse the datagram buffer once handle() returns.
        ops.push({ addr: addr - lead + runStart, buf: datagram.slice(base + runStart, base + i) });
        runStart = -1;
      }
    }
    let bytes = 0;
    for (const op of ops) bytes += op.buf.length;
    this.writesPending++;
    let p: Promise<void>;
    try {
      p = this.source.writeBatch(ops);
    } catch {
      p = Promise.reject(new Error('writeBatch threw'));
    }
    p.then(
      () => {
        this.stats.bytes_written += bytes;
      },
      () => {
        this.stats.errors++;
      },
    ).finally(() => {
      this.writesPending--;
      this.settle();
    });
  }

  private stageView(n: number): Uint8Array {
    return (this.stageViews[n] ??= this.scratch.subarray(0, n));
  }

  private readView(n: number): Uint8Array {
    return (this.readViews[n] ??= this.scratch.subarray(READ_AREA, READ_AREA + n));
  }

  private timestamp(): number {
    // The hardware's free-running clock ticks every ~6.4 ns.
    return Math.floor((this.now() * 1e6) / 6.4) % 0x1_0000_0000;
  }

  private emit(
    status: number,
    requester: number,
    tag: number,
    attrs: number,
    byteCount: number,
    lowerAddress: number,
    data: Uint8Array | undefined,
    to: Peer,
    reply: ReplyFn,
  ): void {
    const out = this.out;
    const seq = this.seq;
    this.seq = (seq + 1) & 0xffff;
    const n = encodeCompletion(
      out,
      status,
      this.completerId,
      requester,
      tag,
      byteCount,
      lowerAddress,
      data,
      seq,
      this.timestamp(),
    );
    // A completion carries the request's traffic class and attributes (PCIe).
    out[NETTLP_HDR_LEN + 1] |= ((attrs >>> 8) & 7) << 4;
    out[NETTLP_HDR_LEN + 2] |= (attrs & 3) << 4;
    this.stats.completions++;
    if (status === CPL_UR) this.stats.unsupported_request++;
    reply(out, n, to);
  }

  private read(addr: number, n: number, requester: number, tag: number, attrs: number, to: Peer, reply: ReplyFn): void {
    if (this.closed) return;
    const src = this.source;
    if (n === 0) {
      // Zero-length read (flush): one DW, ByteCount 1, no byte valid — if the address exists.
      if (firstMissingByte(src.info.ranges, addr, 1) >= 0) {
        this.emit(CPL_UR, requester, tag, attrs, 1, addr & 0x7f, undefined, to, reply);
      } else {
        this.emit(CPL_SC, requester, tag, attrs, 1, addr & 0x7c, this.zeroDw, to, reply);
      }
      return;
    }
    if (firstMissingByte(src.info.ranges, addr, n) >= 0) {
      this.emit(CPL_UR, requester, tag, attrs, n, addr & 0x7f, undefined, to, reply);
      return;
    }
    if (src.readSync) {
      const view = this.readView(n);
      try {
        src.readSync(addr, view);
      } catch (e) {
        this.readFailed(e, addr, n, requester, tag, attrs, to, reply);
        return;
      }
      this.split(addr, n, requester, tag, attrs, to, reply);
      return;
    }
    // Asynchronous source: read into a buffer of our own, answer when it arrives.
    const buf = new Uint8Array(n);
    this.asyncPending++;
    let p: Promise<{ error: unknown }[]>;
    try {
      p = src.readBatch([{ addr, buf }]);
    } catch (e) {
      p = Promise.resolve([{ error: e }]);
    }
    p.then(
      (failures) => {
        if (this.closed) return;
        this.guarded(() => {
          if (failures.length > 0) this.readFailed(failures[0].error, addr, n, requester, tag, attrs, to, reply);
          else {
            this.scratch.set(buf, READ_AREA);
            this.split(addr, n, requester, tag, attrs, to, reply);
          }
        });
      },
      (e: unknown) => {
        if (!this.closed) this.guarded(() => this.readFailed(e, addr, n, requester, tag, attrs, to, reply));
      },
    ).finally(() => {
      this.asyncPending--;
      this.settle();
    });
  }

  private readFailed(
    e: unknown,
    addr: number,
    n: number,
    requester: number,
    tag: number,
    attrs: number,
    to: Peer,
    reply: ReplyFn,
  ): void {
    this.stats.errors++;
    const status = e instanceof PmiError && e.code === 'E_OUT_OF_RANGE' ? CPL_UR : CPL_CA;
    this.emit(status, requester, tag, attrs, n, addr & 0x7f, undefined, to, reply);
  }

  /**
   * Split the n bytes read for a request at addr (staged at scratch[READ_AREA…]) into CplDs the
   * way a root complex does: the first completion ends at the first RCB boundary after addr
   * (or at the end of the request); each later one carries up to MPS bytes and, except the
   * last, ends on an RCB boundary. ByteCount = bytes remaining including this completion,
   * LowerAddress = low 7 bits of the address of its first byte.
   */
  private split(
    addr: number,
    n: number,
    requester: number,
    tag: number,
    attrs: number,
    to: Peer,
    reply: ReplyFn,
  ): void {
    const rcb = this.rcb;
    const mps = this.mps;
    const scratch = this.scratch;
    // 'mps': the first completion ends at the last RCB boundary its MPS-sized payload (counted from
    // the DW-aligned start) reaches; MPS is a multiple of RCB, so that is always past the start.
    const firstLimit =
      this.splitMode === 'mps' ? Math.floor((addr - (addr & 3) + mps) / rcb) * rcb - addr : rcb - (addr % rcb);
    let off = 0;
    while (off < n) {
      const cur = addr + off;
      const limit = off === 0 ? firstLimit : mps; // cur is RCB-aligned after the first
      const remaining = n - off;
      const chunk = limit < remaining ? limit : remaining;
      scratch.copyWithin(0, READ_AREA + off, READ_AREA + off + chunk);
      this.emit(CPL_SC, requester, tag, attrs, remaining, cur & 0x7f, this.stageView(chunk), to, reply);
      if (this.closed) return;
      off += chunk;
    }
    this.stats.bytes_read += n;
  }
}
