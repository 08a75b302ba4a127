/**
 * NetTLP DMA client: a pipelined PhysicalMemory over UDP (one tag = one socket, as LibTLP).
 *
 * Scheduling: readBatch() queues its ops; `pump()` hands the next ≤MRRS / 4 KiB-bounded chunk of
 * the oldest unfinished op to any free tag, so one big read or many small ones keep every tag busy.
 * Each tag owns preallocated buffers: a request datagram, an MRRS-sized scratch into which the
 * completions are assembled, and a byte mask of what has arrived. Only a complete chunk is copied to
 * the caller's buffer, so lost, duplicated or late completions can never leave holes or stale bytes.
 *
 * Timeouts: TCP-style adaptive RTO (SRTT + 4·RTTVAR, Karn's rule: no samples from retried requests),
 * clamped to [timeout=, cap]. A timed-out chunk is re-requested on another free tag or, when none is
 * free, on the same tag — safe, because a late completion of the same request carries the same bytes
 * at the same offsets. After `retries` re-requests the op fails with E_TIMEOUT naming the address.
 *
 * Stale completions: a completion is accepted only if LowerAddress == (addr + len − ByteCount) mod 128,
 * so a stale completion (duplicate or late) of an earlier request X passes the checks of a newer request
 * Y on the same tag iff X and Y end at the same address mod 128 and its ByteCount ≤ Y.len. Every request
 * that ends on a tag (completed, failed or abandoned) therefore quarantines its end residue there until a
 * drain deadline, judged against a drain mark that guarantees the socket was read since (see onCheck);
 * the chunker cuts chunks short to end at residues some free tag may take (placeChunk). Once the
 * adapter's NetTLP header timestamps prove usable, stale copies of finished requests are rejected by
 * their stamp instead and only abandoned requests quarantine (timestamp mode, noteTs). A region received
 * twice with different bytes makes the chunk be re-requested (onConflict). README-client.md has the
 * argument and its assumption.
 */
import { lookup } from 'node:dns/promises';
import { isIPv4 } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  PmiError,
  firstMissingByte,
  hex,
  intersectRanges,
  normaliseRanges,
  outOfRangeError,
  type MemOp,
  type OpFailure,
  type PhysRange,
  type PhysicalMemory,
  type SourceInfo,
} from '@pmi/core';
import {
  CPL_CA,
  CPL_SC,
  CPL_UR,
  DECODE_OK,
  FMT_CPLD,
  MAX_DATAGRAM,
  Tlp,
  TlpKind,
  cplStatusName,
  decodeTlp,
  encodeMemRead,
  encodeMemWrite,
  formatRequesterId,
} from '../codec/tlp.js';
import { PcapWriter } from '../pcap/writer.js';
import { openTransport, type ClientTransport, type TransportStats } from './transport.js';
import { formatNetTlpUri, type NetTlpClientOptions } from './uri.js';

const ORIGIN = 'nettlp';
/** Drain window for late completions after a timeout: max(4·RTO, this), capped (see the header). */
export const QUARANTINE_MS = 50;
/**
 * Floor of the drain window after a request *completed* (duplicates of its completions may still be
 * on the way): max(this, 2·SRTT) + 2·timer lag. The software adapter's reorder injection holds a
 * completion back for at most ~2 ms (`flush`), so this must stay above that.
 */
export const DRAIN_MS = 3;

const IDLE = 0;
const BUSY = 1;
const WRITING = 3;
const COOLING = 4;

/** Counters exposed as `client.metrics` (monotonic except srtt_ms / rto_ms). */
export interface NetTlpMetrics {
  /** MRd datagrams sent (first attempts and retries). */
  requests: number;
  /** CplD/Cpl datagrams accepted for an outstanding request. */
  completions: number;
  /** Re-requests after a timeout or a fast retry. */
  retries: number;
  /** Early re-requests: a first attempt still unanswered after max(2·SRTT, 1 ms) while a later request already completed. */
  fast_retries: number;
  /** Request timeouts (each one triggers a retry or, after `retries`, an E_TIMEOUT). */
  timeouts: number;
  /** Datagrams rejected: undecodable, not a completion, wrong tag/requester, inconsistent ByteCount/LowerAddress/Length, partial overlap. */
  dropped_invalid: number;
  /** Completions arriving on a tag with no outstanding request (late after a timeout, or after the request finished). */
  late_completions: number;
  /** Completions repeating bytes already received for the current request. */
  duplicates: number;
  /** Completions with status UR/CA/CRS. */
  error_completions: number;
  /** Completions repeating a received region with *different* bytes (one of them is stale): the request was re-issued. */
  conflicts: number;
  /** Chunks cut short so that their end residue differs from the quarantined ones of a free tag. */
  shifted_chunks: number;
  /** Completions rejected because their NetTLP timestamp is not newer than what the tag accepted before the request. */
  stale_rejected: number;
  /** 1 while the adapter's header timestamps are trusted (see README-client.md), else 0. */
  ts_mode: number;
  /** Payload bytes read into callers' buffers. */
  bytes: number;
  /** MWr datagrams sent and their payload bytes. */
  writes: number;
  bytes_written: number;
  /** Socket send/receive errors (e.g. ICMP port unreachable); the request then times out. */
  socket_errors: number;
  /** Current smoothed RTT and retransmission timeout, in ms. */
  srtt_ms: number;
  rto_ms: number;
  /** Smoothed lateness of the client's timers (event-loop stalls), in ms. */
  loop_lag_ms: number;
}

interface Batch {
  ops: OpState[];
  nextOp: number;
  pending: number;
  failures: OpFailure[];
  resolve: (f: OpFailure[]) => void;
  reject: (e: unknown) => void;
  settled: boolean;
}

class OpState {
  issued = 0;
  outstanding = 0;
  error: PmiError | null = null;
  done = false;
  /** A write fence: retried only on its own tag (its socket is the one ordered behind the writes). */
  pinned = false;
  constructor(
    readonly batch: Batch,
    readonly index: number,
    readonly addr: number,
    readonly buf: Uint8Array,
  ) {}
}

/** A chunk to re-request on another tag (after conflicting completions). */
interface Retry {
  op: OpState;
  addr: number;
  len: number;
  dstOff: number;
  attempts: number;
  silent: number;
}

interface WriteJob {
  ops: readonly MemOp[];
  resolve: () => void;
  reject: (e: unknown) => void;
  settled: boolean;
}

class Slot {
  state = IDLE;
  op: OpState | null = null;
  addr = 0;
  len = 0;
  dstOff = 0;
  attempts = 0;
  /** Attempts (of this chunk, on any tag) during which no new byte arrived: `retries` bounds these. */
  silent = 0;
  /** Bytes received when the current attempt was sent (progress check at its timeout). */
  receivedAtSend = 0;
  sentAt = 0;
  deadline = 0;
  received = 0;
  /**
   * Quarantine per end-address residue (mod 128): time until which a stale completion of a request
   * that ended at this residue (completed, failed or abandoned) may still arrive on this tag…
   */
  readonly poison = new Float64Array(128);
  /** …and the smallest ByteCount such a stale completion can carry (0 = any; a request shorter than this is safe). */
  readonly poisonBc = new Float64Array(128);
  /** Latest poison expiry (fast path: nothing poisoned when ≤ the drain mark). */
  poisonMax = 0;
  /** The same for abandoned requests only (timed out / conflicting): all that counts in timestamp mode. */
  readonly abandon = new Float64Array(128);
  abandonMax = 0;
  /** Newest NetTLP header timestamp accepted on this tag, when (ms; 0 = none), and its value when the current request was issued. */
  lastTs = 0;
  lastTsAt = 0;
  floorTs = 0;
  floorValid = false;
  /** Smallest ByteCount accepted for the current request (its last completion's). */
  minBc = Infinity;
  /** Send time of the timed-out attempt per poisoned residue (0 once a late answer gave an RTT sample). */
  readonly poisonSent = new Float64Array(128);
  readonly tx = Buffer.alloc(32);
  readonly scratch: Buffer;
  readonly mask: Uint8Array;
  /** End of the highest byte range received for the current request (nothing is set at or above it). */
  maskEnd = 0;
  constructor(
    readonly tag: number,
    mrrs: number,
  ) {
    this.scratch = Buffer.alloc(mrrs);
    this.mask = new Uint8Array(mrrs);
  }
}

function closedError(uri: string): PmiError {
  return new PmiError('E_CLOSED', ORIGIN, `source ${uri} is closed`, { uri });
}

export class NetTlpClient implements PhysicalMemory {
  readonly options: Readonly<NetTlpClientOptions>;
  /** Resolved IPv4 address of the target. */
  readonly hostIp: string;
  readonly metrics: NetTlpMetrics;

  private _info: SourceInfo;
  private readonly slots: Slot[] = [];
  /** FIFO of idle tags (least recently used first, so a tag rests as long as possible). */
  private readonly freeRing: Int32Array;
  private freeHead = 0;
  private freeCount = 0;
  private readonly cooling: Slot[] = [];
  private checkScheduled = false;
  /** Time of the last check-phase tick (onCheck) and the drain mark derived from the one before. */
  private checkAt = 0;
  private drainMark = 0;
  private readonly retryQueue: Retry[] = [];
  private readonly queue: Batch[] = [];
  private readonly writeQueue: WriteJob[] = [];
  private readonly live = new Set<Batch | WriteJob>();
  private readonly rx = new Tlp();
  private srtt = 0;
  private rttvar = 0;
  private rto: number;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private closed = false;
  private closing: Promise<void> | undefined;
  private pcap: PcapWriter | undefined;
  private transport: ClientTransport | undefined;
  private txPool: Buffer[] = [];
  private txWaiters: ((b: Buffer) => void)[] = [];

  private constructor(options: NetTlpClientOptions, hostIp: string) {
    this.options = Object.freeze({ ...options });
    this.hostIp = hostIp;
    this.rto = options.timeoutMs;
    this.freeRing = new Int32Array(options.tags);
    this.metrics = {
      requests: 0,
      completions: 0,
      retries: 0,
      fast_retries: 0,
      timeouts: 0,
      dropped_invalid: 0,
      late_completions: 0,
      duplicates: 0,
      error_completions: 0,
      conflicts: 0,
      shifted_chunks: 0,
      stale_rejected: 0,
      ts_mode: 0,
      bytes: 0,
      writes: 0,
      bytes_written: 0,
      socket_errors: 0,
      srtt_ms: 0,
      rto_ms: this.rto,
      loop_lag_ms: 0,
    };
    this._info = this.makeInfo(options.ranges ?? []);
  }

  /** Bind and connect the per-tag sockets; no probing (see openNetTlp for that). */
  static async connect(options: NetTlpClientOptions): Promise<NetTlpClient> {
    let hostIp = options.host;
    if (!isIPv4(hostIp)) {
      try {
        hostIp = (await lookup(options.host, { family: 4 })).address;
      } catch (e) {
        throw new PmiError(
          'E_SOURCE_IO',
          ORIGIN,
          `cannot resolve NetTLP host '${options.host}': ${(e as Error).message}`,
          {
            host: options.host,
          },
        );
      }
    }
    const c = new NetTlpClient(options, hostIp);
    try {
      await c.bindAll();
      if (options.pcap !== undefined) {
        try {
          c.pcap = new PcapWriter(options.pcap);
        } catch (e) {
          throw new PmiError(
            'E_SOURCE_IO',
            ORIGIN,
            `cannot create pcap file ${options.pcap}: ${(e as Error).message}`,
            {
              path: options.pcap,
            },
          );
        }
      }
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  get info(): SourceInfo {
    return this._info;
  }

  /** Physical ranges in use (sorted, merged). */
  get ranges(): readonly PhysRange[] {
    return this._info.ranges;
  }

  /**
   * Replace the published ranges — e.g. once discovery has read the target's own memory map
   * (the probe only finds [0, low end) and [4 GiB, high end), not the holes inside them).
   */
  setRanges(ranges: readonly PhysRange[]): void {
    for (const r of ranges) {
      if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start < 0 || r.end > 2 ** 52) {
        throw new PmiError('E_USAGE', ORIGIN, `setRanges: bad range ${r.start}-${r.end}`, {});
      }
    }
    this._info = this.makeInfo(normaliseRanges(ranges));
  }

  /**
   * Discovery found the target's System RAM (PhysicalMemory.adoptMemoryMap): when the ranges were only
   * probed (no `ranges=`), keep just the RAM inside them, so the MMIO holes the probe cannot see (e.g.
   * 0xa0000–0xfffff, PCI windows below 4 GiB) are never read. Ranges the user gave are kept as given.
   */
  adoptMemoryMap(ram: readonly PhysRange[]): boolean {
    if (this.options.ranges !== undefined || this.closed) return false;
    const narrowed = intersectRanges(this._info.ranges, normaliseRanges(ram));
    if (narrowed.length === 0) return false; // the map and the probe disagree completely: keep the probe
    this.setRanges(narrowed);
    return true;
  }

  private makeInfo(ranges: readonly PhysRange[]): SourceInfo {
    const o = this.options;
    return Object.freeze({
      uri: formatNetTlpUri(o, ranges),
      kind: 'nettlp',
      readOnly: !o.writable,
      live: true,
      idealBatchSize: o.tags * 4,
      maxInFlight: o.tags,
      ranges: Object.freeze(ranges.map((r) => Object.freeze({ start: r.start, end: r.end }))),
    });
  }

  private async bindAll(): Promise<void> {
    const o = this.options;
    this.transport = await openTransport(o, this.hostIp, this._info.uri, {
      deliver: (tag, buf, len) => this.onMessage(this.slots[tag], buf, len),
      sendErrors: (n) => {
        this.metrics.socket_errors += n;
      },
      waiting: () => this.live.size > 0,
    });
    for (let tag = 0; tag < o.tags; tag++) {
      const slot = new Slot(tag, o.mrrs);
      this.slots.push(slot);
      this.pushFree(slot);
    }
  }

  /** Which socket I/O is in use (`io=`): the native addon or node:dgram. */
  get io(): 'native' | 'dgram' | 'none' {
    return this.transport?.kind ?? 'none';
  }

  /** Counters of the socket layer (receive batches, busy-wait rounds with and without datagrams, GRO). */
  get ioStats(): TransportStats | undefined {
    return this.transport?.stats;
  }

  // ---------------------------------------------------------------- public API

  readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    return this.startBatch(ops, true);
  }

  /** readBatch without the range check: for probing which addresses the target serves. */
  readBatchUnchecked(ops: readonly MemOp[]): Promise<OpFailure[]> {
    return this.startBatch(ops, false);
  }

  async writeBatch(ops: readonly MemOp[]): Promise<void> {
    if (this.closed) throw closedError(this._info.uri);
    if (!this.options.writable) {
      throw new PmiError('E_READ_ONLY', ORIGIN, `source ${this._info.uri} is read-only (open it with writable=1)`, {
        uri: this._info.uri,
      });
    }
    let total = 0;
    for (const op of ops) {
      const err = this.checkOp(op.addr, op.buf.length, true);
      if (err) throw err;
      total += op.buf.length;
    }
    if (total === 0) return;
    await new Promise<void>((resolve, reject) => {
      const job: WriteJob = { ops, resolve, reject, settled: false };
      this.writeQueue.push(job);
      this.live.add(job);
      this.pump();
    });
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      if (this.pumpTimer) clearTimeout(this.pumpTimer);
      if (this.rackTimer) clearTimeout(this.rackTimer);
      this.pumpTimer = undefined;
      const err = closedError(this._info.uri);
      for (const j of this.live) this.settle(j, err);
      this.live.clear();
      this.queue.length = 0;
      this.retryQueue.length = 0;
      this.writeQueue.length = 0;
      for (const w of this.txWaiters.splice(0)) w(Buffer.alloc(0));
      for (const s of this.slots) {
        s.op = null;
        s.state = IDLE;
      }
      await this.transport?.close();
      this.pcap?.close();
    })();
    return this.closing;
  }

  // ---------------------------------------------------------------- reads

  private checkOp(addr: number, len: number, checkRanges: boolean): PmiError | undefined {
    if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0 || addr + len > 2 ** 52) {
      return new PmiError('E_OUT_OF_RANGE', ORIGIN, `invalid physical access: address ${addr}, length ${len}`, {
        uri: this._info.uri,
      });
    }
    if (!checkRanges || len === 0) return undefined;
    const missing = firstMissingByte(this._info.ranges, addr, len);
    if (missing < 0) return undefined;
    const e = outOfRangeError(ORIGIN, addr, len, missing);
    e.data.uri = this._info.uri;
    return e;
  }

  private startBatch(ops: readonly MemOp[], checkRanges: boolean): Promise<OpFailure[]> {
    if (this.closed) return Promise.reject(closedError(this._info.uri));
    return new Promise<OpFailure[]>((resolve, reject) => {
      const batch: Batch = { ops: [], nextOp: 0, pending: 0, failures: [], resolve, reject, settled: false };
      for (let i = 0; i < ops.length; i++) {
        const { addr, buf } = ops[i];
        const op = new OpState(batch, i, addr, buf);
        const err = this.checkOp(addr, buf.length, checkRanges);
        if (err) {
          batch.failures.push({ index: i, error: err });
          op.done = true;
        } else if (buf.length === 0) {
          op.done = true;
        } else {
          batch.ops.push(op);
          batch.pending++;
        }
      }
      if (batch.pending === 0) {
        resolve(batch.failures);
        return;
      }
      this.live.add(batch);
      this.queue.push(batch);
      this.pump();
    });
  }

  private settle(j: Batch | WriteJob, err: PmiError): void {
    if (j.settled) return;
    j.settled = true;
    j.reject(err);
  }

  private pushFree(s: Slot): void {
    s.state = IDLE;
    s.op = null;
    const n = this.freeRing.length;
    this.freeRing[(this.freeHead + this.freeCount) % n] = s.tag;
    this.freeCount++;
  }

  private popFree(): Slot {
    const s = this.slots[this.freeRing[this.freeHead]];
    this.freeHead = (this.freeHead + 1) % this.freeRing.length;
    this.freeCount--;
    return s;
  }

  /** Hand queued work to idle tags. */
  private pump(): void {
    if (this.closed) return;
    while (this.retryQueue.length > 0 && this.freeCount > 0) {
      const c = this.retryQueue[0];
      if (c.op.error !== null || c.op.batch.settled) {
        this.retryQueue.shift();
        this.opDone(c.op, null);
        continue;
      }
      const r = (c.addr + c.len) % 128;
      const i = this.findFree(r, c.len);
      if (i < 0) {
        this.waitForResidue(r);
        break;
      }
      this.retryQueue.shift();
      this.issue(this.takeFree(i), c.op, c.addr, c.len, c.dstOff, c.attempts, c.silent);
    }
    while (this.freeCount > 0) {
      if (this.writeQueue.length > 0) {
        const job = this.writeQueue.shift()!;
        void this.runWrite(this.popFree(), job);
        continue;
      }
      // Next chunk of the oldest op that still has bytes to request.
      let batch: Batch | undefined;
      let op: OpState | undefined;
      while ((batch = this.queue[0]) !== undefined) {
        while (batch.nextOp < batch.ops.length) {
          const o = batch.ops[batch.nextOp];
          if (o.error === null && o.issued < o.buf.length && !batch.settled) {
            op = o;
            break;
          }
          batch.nextOp++;
        }
        if (op) break;
        this.queue.shift();
      }
      if (!op) return;
      const a = op.addr + op.issued;
      // Longest chunk: Length×4 ≤ MRRS ((a mod 4) + n ≤ MRRS), inside one 4 KiB page, inside the op.
      let n = this.options.mrrs - (a % 4);
      const toPage = 4096 - (a % 4096);
      if (toPage < n) n = toPage;
      const remaining = op.buf.length - op.issued;
      if (remaining < n) n = remaining;
      // A free tag that may take a request ending at a + n, or the longest shorter chunk some free tag
      // may take (its end at another residue mod 128): see placeChunk.
      const pos = this.placeChunk(a, n);
      if (pos < 0) {
        if (pos === -2) this.requestCheck();
        else this.waitForResidue((a + n) % 128);
        return;
      }
      if (this.placeEnd !== a + n) {
        n = this.placeEnd - a;
        this.metrics.shifted_chunks++;
      }
      const slot = this.takeFree(pos);
      const dstOff = op.issued;
      op.issued += n;
      op.outstanding++;
      this.issue(slot, op, a, n, dstOff, 0);
    }
  }

  /** End address chosen by the last successful placeChunk. */
  private placeEnd = 0;

  /**
   * Choose a free tag for a chunk starting at a, at most n bytes long: the least recently used tag
   * that may take the full chunk (its end residue is not quarantined there, see eligible()), else the
   * longest chunk ending 4-aligned up to 124 bytes earlier that some free tag may take — so the
   * following chunks end at other residues too (the next page-final chunk picks the phase up again).
   * Returns the free-ring position (placeEnd = chosen end), -1, or -2 when a free tag's quarantine for
   * the full chunk has expired but the drain mark has not caught up yet (worth a loop iteration's wait
   * rather than a shorter chunk).
   */
  private placeChunk(a: number, n: number): number {
    const nf = this.freeRing.length;
    const eMax = a + n;
    const mark = this.drainMark;
    let now = -1;
    let lo = eMax - 128;
    if (lo < a) lo = a;
    let bestPos = -1;
    let bestE = lo;
    for (let i = 0; i < this.freeCount; i++) {
      const s = this.slots[this.freeRing[(this.freeHead + i) % nf]];
      if ((this.tsMode ? s.abandonMax : s.poisonMax) <= mark) {
        bestPos = i;
        bestE = eMax;
        break;
      }
      const rMax = eMax % 128;
      if (!this.eligibleAt(s, rMax, n, mark)) {
        if (now < 0) now = performance.now();
        if (this.eligibleAt(s, rMax, n, now)) return -2;
      }
      let e = eMax;
      while (e > bestE) {
        if (this.eligibleAt(s, e % 128, e - a, mark)) break;
        e -= e % 4 === 0 ? 4 : e % 4;
      }
      if (e > bestE) {
        bestPos = i;
        bestE = e;
        if (e === eMax) break;
      }
    }
    if (bestE < eMax && this.freeCount <= 2) {
      // Rather than cut the chunk (one more request for the page), wait for a busy tag that may take
      // it once it finishes — when that idles at most two tags meanwhile (a busy tag's own request
      // adds a quarantine only at its own end residue, and none in timestamp mode).
      const rMax = eMax % 128;
      for (const s of this.slots) {
        if (s.state === BUSY && (this.tsMode || (s.addr + s.len) % 128 !== rMax) && this.eligibleAt(s, rMax, n, mark)) {
          return -1;
        }
      }
    }
    this.placeEnd = bestE;
    return bestPos;
  }

  /** No free tag may take a request ending at residue r: pump again when one may (or a tag frees). */
  private waitForResidue(r: number): void {
    let at = Infinity;
    const nf = this.freeRing.length;
    for (let k = 0; k < this.freeCount; k++) {
      const sl = this.slots[this.freeRing[(this.freeHead + k) % nf]];
      const p = this.tsMode ? sl.abandon[r] : sl.poison[r];
      if (p < at) at = p;
    }
    if (at === Infinity) return; // no free tag: a completion or timeout pumps again
    if (at <= performance.now())
      this.requestCheck(); // expired, but the drain mark has to catch up
    else this.armPumpTimer(at);
  }

  private issue(s: Slot, op: OpState, addr: number, len: number, dstOff: number, attempts: number, silent = 0): void {
    s.state = BUSY;
    s.op = op;
    s.addr = addr;
    s.len = len;
    s.dstOff = dstOff;
    s.attempts = attempts;
    s.silent = silent;
    s.received = 0;
    s.minBc = Infinity;
    s.floorTs = s.lastTs;
    // (a tag idle for longer than 10 s: any copy is far past its drain window, and the 32-bit
    // timestamp, 27 s per wrap at 6.4 ns, could no longer be compared)
    s.floorValid = s.lastTsAt > 0 && performance.now() - s.lastTsAt < 10_000;
    s.mask.fill(0, 0, len);
    s.maskEnd = 0;
    this.sendRead(s);
  }

  private sendRead(s: Slot): void {
    const n = encodeMemRead(s.tx, s.addr, s.len, this.options.requester, s.tag);
    const now = performance.now();
    s.receivedAtSend = s.received;
    s.sentAt = now;
    s.deadline = now + this.rto;
    this.transport!.send(s.tag, s.tx, n);
    this.metrics.requests++;
    if (this.pcap) this.pcapTx(s, s.tx, n);
    this.armTimer(s.deadline);
  }

  private pcapTx(s: Slot, buf: Uint8Array, n: number): void {
    const port = this.options.portBase + s.tag;
    this.pcap!.write(this.options.local, port, this.hostIp, port, buf, n);
  }

  /** A datagram of len bytes at the start of msg arrived on s's socket (msg is only valid during the call). */
  private onMessage(s: Slot | undefined, msg: Buffer, len: number): void {
    if (s === undefined || this.closed) return;
    if (this.pcap) {
      const port = this.options.portBase + s.tag;
      this.pcap.write(this.hostIp, port, this.options.local, port, msg, len);
    }
    const t = this.rx;
    const m = this.metrics;
    if (decodeTlp(msg, len, t) !== DECODE_OK || t.kind !== TlpKind.Completion) {
      m.dropped_invalid++;
      return;
    }
    if (s.state !== BUSY) {
      const r = (t.lowerAddress + t.byteCount) % 128;
      if (t.status === CPL_SC && s.poisonSent[r] > 0) this.lateCompletion(s, r);
      else if (s.state === COOLING)
        m.duplicates++; // repeats a completion of the request just finished
      else m.late_completions++;
      return;
    }
    if (t.tag !== s.tag || t.requester !== this.options.requester) {
      m.dropped_invalid++;
      return;
    }
    const ts = t.timestamp;
    if (this.tsMode && s.floorValid) {
      const d = (ts - s.floorTs) >>> 0;
      if (d === 0 || d >= 0x80000000) {
        // Generated no later than a completion this tag accepted before this request was sent:
        // a copy of an earlier request's completion.
        m.stale_rejected++;
        if (ts === 0) this.tsOff(); // the adapter stopped stamping: back to drain windows only
        return;
      }
    }
    const req = s.len;
    if (t.status !== CPL_SC) {
      // UR / CA / CRS answer the whole remaining request; the bytes are not there.
      if (t.byteCount > req) {
        m.dropped_invalid++;
        return;
      }
      m.error_completions++;
      this.noteTs(s, ts);
      this.quarantine(s, (s.addr + s.len) % 128, t.byteCount, performance.now() + this.drainWindow());
      this.finishSlot(s, this.completionError(s, t.status));
      return;
    }
    if (t.fmtType !== FMT_CPLD) {
      m.dropped_invalid++;
      return;
    }
    if (t.byteCount > req) {
      // Longer than this request: a late answer to an earlier, longer request on this tag, or garbage.
      const r = (t.lowerAddress + t.byteCount) % 128;
      if (s.poisonSent[r] > 0) this.lateCompletion(s, r);
      else if (s.poison[r] > 0) m.late_completions++;
      else m.dropped_invalid++;
      return;
    }
    const off = req - t.byteCount;
    const lead = t.lowerAddress & 3;
    let valid = t.payloadLength - lead;
    if (valid > t.byteCount) valid = t.byteCount;
    if (valid <= 0 || t.lengthDw !== (lead + valid + 3) >>> 2) {
      m.dropped_invalid++;
      return;
    }
    if (t.lowerAddress !== (s.addr + off) % 128) {
      // Low 7 bits of the first byte's address do not match: a late answer to an earlier request on
      // this tag (its end residue is poisoned) or garbage.
      const r = (t.lowerAddress + t.byteCount) % 128;
      if (s.poisonSent[r] > 0) this.lateCompletion(s, r);
      else if (s.poison[r] > 0) m.late_completions++;
      else m.dropped_invalid++;
      return;
    }
    const mask = s.mask;
    const end = off + valid;
    if (off < s.maskEnd) {
      // Completions usually arrive in order (nothing set at or above off): only otherwise look at
      // which of [off, end) arrived already.
      let anySet = false;
      let allSet = true;
      for (let i = off; i < end; i++) {
        if (mask[i] !== 0) anySet = true;
        else allSet = false;
      }
      if (anySet) {
        if (allSet) {
          const p = t.payloadOffset + lead;
          // Same region, different bytes: one of the two is a stale completion of another request.
          if (msg.compare(s.scratch, off, end, p, p + valid) !== 0) this.onConflict(s);
          else m.duplicates++;
        } else m.dropped_invalid++; // overlaps a different split: inconsistent
        return;
      }
    }
    msg.copy(s.scratch, off, t.payloadOffset + lead, t.payloadOffset + lead + valid);
    mask.fill(1, off, end);
    if (end > s.maskEnd) s.maskEnd = end;
    s.received += valid;
    if (t.byteCount < s.minBc) s.minBc = t.byteCount;
    this.noteTs(s, ts);
    m.completions++;
    if (s.received === req) {
      // Copies of this request's completions may still be on the way: quarantine its end residue on
      // this tag for the drain window (for requests not shorter than its smallest ByteCount).
      this.quarantine(s, (s.addr + req) % 128, s.minBc, performance.now() + this.drainWindow());
      const op = s.op!;
      if (op.error === null && !op.batch.settled) s.scratch.copy(op.buf, s.dstOff, 0, req);
      m.bytes += req;
      if (s.attempts === 0) {
        this.rttSample(performance.now() - s.sentAt);
        if (s.sentAt > this.newestDoneSent) this.newestDoneSent = s.sentAt;
        if (this.rackTimer === undefined) this.rackTimer = setTimeout(this.rackSweep, this.rackWindow());
      }
      this.finishSlot(s, null);
    }
  }

  /**
   * Timestamp mode. The NetTLP adapter stamps every datagram it sends with a free-running clock
   * (6.4 ns ticks; the software adapter too), and a copy — network duplicate or held-back original —
   * carries the stamp of its original. Once 16 consecutive accepted completions carried non-zero
   * stamps increasing per tag, a completion whose stamp is not newer than the newest one the tag had
   * accepted when the current request was sent is rejected: it was generated before that request's
   * completions could be. Stale copies of *finished* requests then need no drain window; abandoned
   * requests still get one (their completions may be generated late). A zero stamp turns it off.
   */
  private tsMode = false;
  private tsBroken = false;
  private tsGood = 0;

  private noteTs(s: Slot, ts: number): void {
    const d = (ts - s.lastTs) >>> 0;
    const newer = s.lastTsAt === 0 || (d !== 0 && d < 0x80000000);
    if (newer) s.lastTs = ts;
    s.lastTsAt = this.checkAt + 1; // ≈ now (the last check tick); only compared against a 10 s bound
    if (this.tsMode || this.tsBroken) return;
    if (ts !== 0 && newer) {
      if (++this.tsGood >= 16) {
        this.tsMode = true;
        this.metrics.ts_mode = 1;
      }
    } else this.tsGood = 0;
  }

  private tsOff(): void {
    this.tsMode = false;
    this.tsBroken = true;
    this.metrics.ts_mode = 0;
  }

  /**
   * A completion for a request that timed out on this tag: the timeout was (at least partly) spurious.
   * Its delay is a real RTT measurement, so feed it to the estimator (once per timed-out attempt);
   * that raises the RTO when the path or the event loop stalls, instead of retrying ever faster.
   */
  private lateCompletion(s: Slot, r: number): void {
    this.metrics.late_completions++;
    const sent = s.poisonSent[r];
    if (sent > 0 && s.poison[r] > performance.now()) {
      s.poisonSent[r] = 0;
      this.rttSample(performance.now() - sent);
    }
  }

  private completionError(s: Slot, status: number): PmiError {
    const op = s.op!;
    const data = {
      uri: this._info.uri,
      address: hex(s.addr),
      request_address: hex(op.addr),
      length: op.buf.length,
      cpl_status: cplStatusName(status),
    };
    if (status === CPL_UR) {
      return new PmiError(
        'E_OUT_OF_RANGE',
        ORIGIN,
        `physical address ${hex(s.addr)} is not served by the target (Unsupported Request completion; read of ${op.buf.length} bytes at ${hex(op.addr)})`,
        data,
      );
    }
    const what = status === CPL_CA ? 'Completer Abort' : cplStatusName(status);
    return new PmiError(
      'E_SOURCE_IO',
      ORIGIN,
      `the target answered ${what} for a read of ${s.len} bytes at ${hex(s.addr)} (op at ${hex(op.addr)})`,
      data,
    );
  }

  private rttSample(r: number): void {
    if (this.srtt === 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      const d = this.srtt - r;
      this.rttvar = 0.75 * this.rttvar + 0.25 * (d < 0 ? -d : d);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    let rto = this.srtt + 4 * this.rttvar;
    if (rto < this.options.timeoutMs) rto = this.options.timeoutMs;
    if (rto > this.options.maxTimeoutMs) rto = this.options.maxTimeoutMs;
    this.rto = rto;
    this.metrics.srtt_ms = this.srtt;
    this.metrics.rto_ms = rto;
  }

  /** The slot's request is over (success: err null). Free or quarantine the tag, account the op. */
  private finishSlot(s: Slot, err: PmiError | null): void {
    const op = s.op!;
    s.op = null;
    // In timestamp mode a stale copy of this request's completions is rejected by its stamp, so the
    // tag may take the next request at once; otherwise it rests until the next check tick.
    if (this.tsMode) this.pushFree(s);
    else this.cool(s);
    this.opDone(op, err);
    this.pump();
  }

  private opDone(op: OpState, err: PmiError | null): void {
    op.outstanding--;
    if (err && op.error === null) op.error = err;
    if (op.done || op.outstanding > 0 || (op.error === null && op.issued < op.buf.length)) return;
    op.done = true;
    const b = op.batch;
    if (op.error) b.failures.push({ index: op.index, error: op.error });
    if (--b.pending === 0 && !b.settled) {
      b.settled = true;
      this.live.delete(b);
      b.failures.sort((x, y) => x.index - y.index);
      b.resolve(b.failures);
    }
  }

  /** Finished tags rest until the check phase, so a duplicate already queued on the socket drains first. */
  private cool(s: Slot): void {
    s.state = COOLING;
    this.cooling.push(s);
    this.requestCheck();
  }

  private requestCheck(): void {
    if (!this.checkScheduled) {
      this.checkScheduled = true;
      setImmediate(this.onCheck);
    }
  }

  /**
   * Check-phase tick: frees the cooling tags and advances the drain mark. At most one tick is pending,
   * and an immediate queued during the check phase runs in the next loop iteration, so consecutive
   * ticks run in different iterations: a poll phase began after the previous tick, and every datagram
   * that reached our sockets before it has been read (libuv reads up to 32 per socket and poll). That
   * time is the drain mark: a quarantine that expired before it cannot have a stale completion left
   * in a socket buffer, even when the event loop stalled.
   */
  private readonly onCheck = (): void => {
    this.checkScheduled = false;
    if (this.closed) return;
    this.drainMark = this.checkAt;
    this.checkAt = performance.now();
    for (const s of this.cooling) this.pushFree(s);
    this.cooling.length = 0;
    this.pump();
  };

  /**
   * Drain window after a request completed or failed. A copy of a completion that already arrived is
   * later than the original by the reorder hold (DRAIN_MS covers the software adapter's ~2 ms flush; a
   * direct link neither duplicates nor reorders) plus the variation of the path's delay, taken as
   * 2·SRTT when that is longer (a loaded host or adapter: its queueing delays copies as much as answers;
   * SRTT rather than RTTVAR, which one stray late sample inflates for a long time) plus timer lateness.
   */
  private drainWindow(): number {
    const floor = this.options.drainMs ?? DRAIN_MS; // `drain=` for links that reorder more than the adapter
    const w = 2 * this.srtt;
    return (w > floor ? w : floor) + 2 * this.loopLag;
  }

  /**
   * Stale completions of a request that ended at residue r on this tag, with ByteCount ≥ minBc, may
   * arrive until `until`: no request ending at r and at least minBc bytes long goes to this tag before
   * then (a live entry is merged: later expiry, smaller ByteCount).
   */
  private quarantine(s: Slot, r: number, minBc: number, until: number): void {
    if (s.poison[r] > this.drainMark) {
      if (until > s.poison[r]) s.poison[r] = until;
      if (minBc < s.poisonBc[r]) s.poisonBc[r] = minBc;
    } else {
      s.poison[r] = until;
      s.poisonBc[r] = minBc;
      s.poisonSent[r] = 0;
    }
    if (until > s.poisonMax) s.poisonMax = until;
  }

  /** May this tag take a request of len bytes ending at residue r? (see quarantine) */
  private eligible(s: Slot, r: number, len: number): boolean {
    return this.eligibleAt(s, r, len, this.drainMark);
  }

  /**
   * …with quarantines that expired by time t. In timestamp mode stale copies of finished requests are
   * rejected by their header timestamp, so only abandoned requests (whose completions may be generated
   * late) still quarantine their residue.
   */
  private eligibleAt(s: Slot, r: number, len: number, t: number): boolean {
    if (this.tsMode) return s.abandonMax <= t || s.abandon[r] <= t;
    return s.poisonMax <= t || s.poison[r] <= t || s.poisonBc[r] > len;
  }

  /** After a timeout: late completions for (addr, len) may still arrive on this tag; see the header. */
  private poisonSlot(s: Slot, now: number, rttSample = true): void {
    // Late completions can be late by the path's jitter and by event-loop stalls (ours and, in-process,
    // the adapter's): scale the window with SRTT and the measured timer lag too.
    let q = 4 * this.rto;
    if (q < 16 * this.srtt) q = 16 * this.srtt;
    q += 16 * this.loopLag;
    if (q < QUARANTINE_MS) q = QUARANTINE_MS;
    if (q > 2 * this.options.maxTimeoutMs) q = 2 * this.options.maxTimeoutMs;
    const r = (s.addr + s.len) % 128;
    const until = now + q;
    this.quarantine(s, r, 0, until);
    if (until > s.abandon[r]) s.abandon[r] = until;
    if (until > s.abandonMax) s.abandonMax = until;
    s.poisonSent[r] = rttSample ? s.sentAt : 0;
  }

  /** Position in the free ring of the first tag that may serve a request of len bytes ending at residue r, or -1. */
  private findFree(r: number, len: number): number {
    const n = this.freeRing.length;
    for (let i = 0; i < this.freeCount; i++) {
      if (this.eligible(this.slots[this.freeRing[(this.freeHead + i) % n]], r, len)) return i;
    }
    return -1;
  }

  /** Take the free tag at ring position i (0 = head, least recently used). */
  private takeFree(i: number): Slot {
    const n = this.freeRing.length;
    if (i !== 0) {
      const h = this.freeHead;
      const p = (h + i) % n;
      const t = this.freeRing[h];
      this.freeRing[h] = this.freeRing[p];
      this.freeRing[p] = t;
    }
    return this.popFree();
  }

  private pumpTimer: NodeJS.Timeout | undefined;
  private armPumpTimer(at: number): void {
    if (this.pumpTimer !== undefined) return;
    const d = at - performance.now();
    this.pumpTimer = setTimeout(
      () => {
        this.pumpTimer = undefined;
        this.pump();
      },
      d > 0 ? Math.ceil(d) : 0,
    );
  }

  // ---------------------------------------------------------------- timeouts

  // Fast retry (RACK-like): a lost datagram is detected when a request sent *after* it has completed
  // and it is still unanswered a little later, instead of waiting for the full RTO.
  private newestDoneSent = 0;
  private rackTimer: NodeJS.Timeout | undefined;
  private rackWindow(): number {
    const w = 2 * this.srtt;
    return w < 1 ? 1 : w > this.rto ? this.rto : w;
  }
  private readonly rackSweep = (): void => {
    this.rackTimer = undefined;
    if (this.closed) return;
    setImmediate(this.rackCheck); // after the poll phase, like the RTO sweep
  };
  private readonly rackCheck = (): void => {
    if (this.closed) return;
    const now = performance.now();
    const w = this.rackWindow();
    let more = false;
    for (const s of this.slots) {
      if (s.state !== BUSY || s.attempts !== 0) continue;
      if (s.sentAt < this.newestDoneSent && now - s.sentAt >= w) {
        this.metrics.fast_retries++;
        this.onTimeout(s, true);
      } else if (s.sentAt < this.newestDoneSent) more = true;
    }
    if (more && this.rackTimer === undefined) this.rackTimer = setTimeout(this.rackSweep, w);
    this.pump();
  };

  private armTimer(deadline: number): void {
    if (this.timer !== undefined) {
      if (this.timerAt <= deadline) return;
      clearTimeout(this.timer);
    }
    this.timerAt = deadline;
    const delay = deadline - performance.now();
    this.timer = setTimeout(this.onTimer, delay > 0 ? Math.ceil(delay) : 0);
  }

  // Timers run before the poll phase: defer the sweep to the check phase so completions that arrived
  // while the event loop was busy are read first and not mistaken for losses.
  /** EWMA of how late the RTO timer fires (ms): event-loop stalls. */
  private loopLag = 0;
  private readonly onTimer = (): void => {
    const lag = performance.now() - this.timerAt;
    this.loopLag = 0.875 * this.loopLag + 0.125 * (lag > 0 ? lag : 0);
    this.metrics.loop_lag_ms = this.loopLag;
    this.timer = undefined;
    this.timerAt = Infinity;
    setImmediate(this.sweep);
  };

  private readonly sweep = (): void => {
    if (this.closed) return;
    const now = performance.now();
    let next = Infinity;
    for (const s of this.slots) {
      if (s.state !== BUSY) continue;
      if (s.deadline <= now) this.onTimeout(s);
      if (s.state === BUSY && s.deadline < next) next = s.deadline;
    }
    if (next < Infinity) this.armTimer(next);
    this.pump();
  };

  private onTimeout(s: Slot, fast = false): void {
    const m = this.metrics;
    if (!fast) m.timeouts++;
    this.poisonSlot(s, performance.now());
    const op = s.op!;
    if (op.error !== null || op.batch.settled) {
      this.finishSlot(s, null);
      return;
    }
    // Only attempts that brought nothing new count against `retries` (a silent target fails after
    // (retries + 1) × timeout); a lossy but answering one gets up to 4 × (retries + 1) attempts.
    const silent = s.silent + (s.received > s.receivedAtSend ? 0 : 1);
    if (silent > this.options.retries || s.attempts + 1 >= 4 * (this.options.retries + 1)) {
      this.finishSlot(
        s,
        new PmiError(
          'E_TIMEOUT',
          ORIGIN,
          `no completion from ${this.hostIp} for a read of ${s.len} bytes at ${hex(s.addr)} after ${s.attempts + 1} ` +
            `attempts (timeout ${this.rto.toFixed(1)} ms each)`,
          {
            uri: this._info.uri,
            address: hex(s.addr),
            request_address: hex(op.addr),
            length: op.buf.length,
            attempts: s.attempts + 1,
            timeout_ms: this.rto,
          },
        ),
      );
      return;
    }
    m.retries++;
    const i = this.freeCount > 0 && !op.pinned ? this.findFree((s.addr + s.len) % 128, s.len) : -1;
    if (i >= 0) {
      // Fresh request on another tag; this one goes back to the pool, poisoned for this residue.
      const t = this.takeFree(i);
      const { addr, len, dstOff, attempts } = s;
      s.op = null;
      this.cool(s);
      this.issue(t, op, addr, len, dstOff, attempts + 1, silent);
    } else {
      // Same request again on the same tag: late answers to the earlier attempt carry the same
      // bytes at the same offsets, so the partial assembly stays valid.
      s.attempts++;
      s.silent = silent;
      this.sendRead(s);
    }
  }

  /**
   * Two completions for the same region of the current request carry different bytes: one of them is a
   * stale completion of an earlier request on this tag. Which one cannot be told, so the partial
   * assembly is dropped, the end residue quarantined like after a timeout, and the chunk re-requested
   * on a tag that may take it.
   */
  private onConflict(s: Slot): void {
    const m = this.metrics;
    m.conflicts++;
    this.poisonSlot(s, performance.now(), false);
    const op = s.op!;
    if (op.error !== null || op.batch.settled) {
      this.finishSlot(s, null);
      return;
    }
    if (s.attempts + 1 >= 4 * (this.options.retries + 1)) {
      this.finishSlot(
        s,
        new PmiError(
          'E_SOURCE_IO',
          ORIGIN,
          `conflicting completions from ${this.hostIp} for a read of ${s.len} bytes at ${hex(s.addr)} after ${s.attempts + 1} attempts`,
          { uri: this._info.uri, address: hex(s.addr), request_address: hex(op.addr), attempts: s.attempts + 1 },
        ),
      );
      return;
    }
    m.retries++;
    const { addr, len, dstOff, attempts } = s;
    s.op = null;
    this.cool(s);
    this.retryQueue.push({ op, addr, len, dstOff, attempts: attempts + 1, silent: s.silent });
    this.pump();
  }

  // ---------------------------------------------------------------- writes

  private takeTx(): Buffer | Promise<Buffer> {
    const b = this.txPool.pop();
    if (b) return b;
    if (this.txAllocated < 64) {
      this.txAllocated++;
      return Buffer.alloc(MAX_DATAGRAM);
    }
    return new Promise<Buffer>((resolve) => this.txWaiters.push(resolve));
  }
  private txAllocated = 0;

  private releaseTx(b: Buffer): void {
    const w = this.txWaiters.shift();
    if (w) w(b);
    else this.txPool.push(b);
  }

  /**
   * Posted writes of one writeBatch go out in order on one tag's socket, followed by a 1-byte
   * read of the last written byte on the same socket: its completion means the adapter has
   * processed the writes before it (same port, in order). A lost MWr is not detected (posted).
   */
  private async runWrite(s: Slot, job: WriteJob): Promise<void> {
    s.state = WRITING;
    const o = this.options;
    let sendErr: Error | undefined;
    try {
      let last = -1;
      for (const op of job.ops) {
        let off = 0;
        const len = op.buf.length;
        while (off < len) {
          const a = op.addr + off;
          // Payload Length×4 must stay ≤ MPS: end unaligned chunks at the next MPS-aligned address.
          let n = o.mps - (a % o.mps);
          if (len - off < n) n = len - off;
          const t = this.takeTx();
          const buf = t instanceof Buffer ? t : await t;
          if (this.closed) throw closedError(this._info.uri);
          const dl = encodeMemWrite(buf, a, op.buf.subarray(off, off + n), o.requester, s.tag);
          if (this.pcap) this.pcapTx(s, buf, dl);
          this.transport!.send(s.tag, buf, dl, (e) => {
            if (e) sendErr ??= e;
            this.releaseTx(buf);
          });
          this.metrics.writes++;
          this.metrics.bytes_written += n;
          off += n;
          last = a + n - 1;
        }
      }
      // Fence: a read on the same socket, behind the writes.
      const fence = new Uint8Array(1);
      const failures = await new Promise<OpFailure[]>((resolve, reject) => {
        const b: Batch = { ops: [], nextOp: 0, pending: 1, failures: [], resolve, reject, settled: false };
        const op = new OpState(b, 0, last, fence);
        b.ops.push(op);
        b.nextOp = 1; // issued here, not by pump()
        op.issued = 1;
        op.outstanding = 1;
        op.pinned = true;
        this.live.add(b);
        this.issue(s, op, last, 1, 0, 0);
      });
      if (sendErr) {
        throw new PmiError('E_SOURCE_IO', ORIGIN, `sending a write to ${this.hostIp} failed: ${sendErr.message}`, {
          uri: this._info.uri,
        });
      }
      if (failures.length > 0) {
        const f = failures[0].error;
        throw new PmiError(
          f.code,
          ORIGIN,
          `write fence (read-back of ${hex(last)}) failed: ${f.message}; the writes may or may not have landed`,
          f.data,
        );
      }
      if (!job.settled) {
        job.settled = true;
        this.live.delete(job);
        job.resolve();
      }
    } catch (e) {
      if (!job.settled) {
        job.settled = true;
        this.live.delete(job);
        job.reject(e);
      }
      if (s.state === WRITING && !this.closed) {
        this.pushFree(s);
        this.pump();
      }
    }
  }

  /** Debug view of the tags: how many are idle, busy, quarantined. */
  tagStates(): { idle: number; busy: number; poisoned: number; writing: number; cooling: number } {
    const r = { idle: 0, busy: 0, poisoned: 0, writing: 0, cooling: 0 };
    const now = performance.now();
    for (const s of this.slots) {
      if (s.state === IDLE) r.idle++;
      else if (s.state === BUSY) r.busy++;
      else if (s.state === WRITING) r.writing++;
      else r.cooling++;
      if (s.poisonMax > now) r.poisoned++;
    }
    return r;
  }

  /** Requester ID used in requests, as BB:DF. */
  get requesterId(): string {
    return formatRequesterId(this.options.requester);
  }
}
