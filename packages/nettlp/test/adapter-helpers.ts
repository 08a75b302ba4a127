/**
 * Test helpers for the software adapter: a minimal raw UDP requester (node:dgram + the codec,
 * independent of the DMA client), the spec's completion-reassembly rule, and the RCB/MPS
 * splitting rules written out independently of the adapter's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PmiError, type MemOp, type OpFailure, type PhysicalMemory } from '@pmi/core';
import { firstMissingByte } from '@pmi/core';
import {
  CPL_SC,
  DECODE_OK,
  MAX_DATAGRAM,
  Tlp,
  TlpKind,
  completionDataBytes,
  decodeTlp,
  encodeMemRead,
} from '../src/codec/tlp.js';
import { startAdapter, type AdapterOptions, type NetTlpAdapter } from '../src/adapter/index.js';

export const ADAPTER_IP = '127.0.0.2';
export const CLIENT_IP = '127.0.0.1';

export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomData(seed: number, n: number): Uint8Array {
  const r = seeded(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 256) | 0;
  return out;
}

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pmi-adapter-'));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One decoded completion, copied out of the datagram. */
export interface Cpl {
  status: number;
  byteCount: number;
  lowerAddress: number;
  lengthDw: number;
  tag: number;
  requester: number;
  completer: number;
  /** The valid bytes (spec rule), empty for Cpl without data. */
  data: Uint8Array;
  raw: Uint8Array;
}

export function decodeCpl(buf: Uint8Array, len: number): Cpl {
  const t = new Tlp();
  const rc = decodeTlp(buf, len, t);
  if (rc !== DECODE_OK || t.kind !== TlpKind.Completion) throw new Error(`not a completion (decode ${rc})`);
  if (len !== t.payloadOffset + t.payloadLength)
    throw new Error(`completion datagram of ${len} bytes has trailing bytes`);
  const n = t.payloadLength > 0 ? completionDataBytes(t) : 0;
  const start = t.payloadOffset + (t.lowerAddress & 3);
  return {
    status: t.status,
    byteCount: t.byteCount,
    lowerAddress: t.lowerAddress,
    lengthDw: t.payloadLength / 4,
    tag: t.tag,
    requester: t.requester,
    completer: t.completer,
    data: buf.slice(start, start + n),
    raw: buf.slice(0, len),
  };
}

/** A requester bound on ip:port, sending to the adapter's same port (LibTLP's layout). */
export class Requester {
  readonly inbox: Cpl[] = [];
  readonly rawInbox: Buffer[] = [];
  private waiters: (() => void)[] = [];
  private readonly out = new Uint8Array(MAX_DATAGRAM);

  private constructor(
    readonly socket: dgram.Socket,
    readonly port: number,
    readonly adapterIp: string,
  ) {
    socket.on('message', (msg) => {
      this.rawInbox.push(msg);
      try {
        this.inbox.push(decodeCpl(msg, msg.length));
      } catch {
        // kept in rawInbox only; tests that care look there
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  static async open(bindIp: string, port: number, adapterIp = ADAPTER_IP): Promise<Requester> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind({ address: bindIp, port, exclusive: true }, () => {
        s.off('error', reject);
        resolve();
      });
    });
    await new Promise<void>((resolve) => s.connect(port, adapterIp, () => resolve()));
    return new Requester(s, port, adapterIp);
  }

  send(buf: Uint8Array, len = buf.length): void {
    this.socket.send(Buffer.from(buf.subarray(0, len)));
  }

  sendRead(addr: number, count: number, tag: number, requester = 0x1b00): void {
    const n = encodeMemRead(this.out, addr, count, requester, tag);
    this.send(this.out, n);
  }

  /** Wait until pred() or timeout; returns pred(). */
  async waitFor(pred: () => boolean, timeoutMs = 2000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  /** Wait for silence: no datagram for quietMs. */
  async quiet(quietMs = 100): Promise<void> {
    let n = -1;
    while (n !== this.rawInbox.length) {
      n = this.rawInbox.length;
      await sleep(quietMs);
    }
  }

  close(): Promise<void> {
    return new Promise((r) => this.socket.close(() => r()));
  }
}

export interface ReadResult {
  status: number;
  data: Uint8Array;
  cpls: Cpl[];
}

/**
 * Read count bytes at addr through the adapter and reassemble by the spec's rule:
 * offset = requested − ByteCount, valid bytes = min(Length×4 − (LA & 3), ByteCount).
 * Checks LowerAddress, tag and requester ID on every completion; returns at the first
 * non-SC status. Throws on timeout or a protocol violation.
 */
export async function readVia(
  req: Requester,
  addr: number,
  count: number,
  tag: number,
  timeoutMs = 2000,
): Promise<ReadResult> {
  const requester = 0x1b00 | (tag & 0xff);
  req.inbox.length = 0;
  req.sendRead(addr, count, tag, requester);
  const data = new Uint8Array(count);
  const seen = new Uint8Array(count);
  let got = 0;
  const cpls: Cpl[] = [];
  let idx = 0;
  const deadline = Date.now() + timeoutMs;
  while (got < count) {
    if (idx >= req.inbox.length) {
      const ok = await req.waitFor(() => req.inbox.length > idx, deadline - Date.now());
      if (!ok) throw new Error(`timeout: ${got}/${count} bytes of read ${addr.toString(16)}+${count}`);
    }
    const c = req.inbox[idx++];
    cpls.push(c);
    if (c.tag !== (tag & 0xff) || c.requester !== requester) throw new Error(`tag/requester mismatch`);
    if (c.status !== CPL_SC) return { status: c.status, data, cpls };
    const off = count - c.byteCount;
    if (off < 0) throw new Error(`ByteCount ${c.byteCount} > requested ${count}`);
    if (c.lowerAddress !== ((addr + off) & 0x7f)) {
      throw new Error(`LowerAddress 0x${c.lowerAddress.toString(16)} != 0x${((addr + off) & 0x7f).toString(16)}`);
    }
    for (let i = 0; i < c.data.length; i++) {
      if (seen[off + i]) throw new Error(`byte ${off + i} delivered twice`);
      seen[off + i] = 1;
    }
    data.set(c.data, off);
    got += c.data.length;
  }
  return { status: CPL_SC, data, cpls };
}

/**
 * The splitting a root complex does, written from the rules (not from the adapter): returns
 * [offset, bytes] per completion. First completion: up to the first RCB boundary after addr;
 * then MPS-sized pieces from RCB-aligned starts (MPS is a multiple of RCB), last one short.
 */
export function expectedSplit(addr: number, count: number, mps: number, rcb: number): [number, number][] {
  const out: [number, number][] = [];
  const end = addr + count;
  const firstBoundary = (Math.floor(addr / rcb) + 1) * rcb;
  let cur = addr;
  let next = Math.min(end, firstBoundary);
  while (cur < end) {
    out.push([cur - addr, next - cur]);
    cur = next;
    next = Math.min(end, cur + mps);
  }
  return out;
}

/** Check every completion of a successful read against the rules. Returns a list of problems. */
export function checkSplit(addr: number, count: number, cpls: Cpl[], mps: number, rcb: number): string[] {
  const problems: string[] = [];
  const want = expectedSplit(addr, count, mps, rcb);
  if (cpls.length !== want.length) problems.push(`${cpls.length} completions, expected ${want.length}`);
  const end = addr + count;
  cpls.forEach((c, i) => {
    const off = count - c.byteCount;
    const start = addr + off;
    const n = c.data.length;
    if (c.lengthDw * 4 > mps) problems.push(`cpl ${i}: payload ${c.lengthDw * 4} > MPS ${mps}`);
    if (c.lengthDw !== Math.ceil(((start & 3) + n) / 4)) problems.push(`cpl ${i}: Length ${c.lengthDw} does not fit`);
    if (i > 0 && start % rcb !== 0) problems.push(`cpl ${i}: starts at ${start} not RCB-aligned`);
    if (start + n !== end && (start + n) % rcb !== 0) problems.push(`cpl ${i}: ends at ${start + n}, not on RCB`);
    if (want[i] && (want[i][0] !== off || want[i][1] !== n)) {
      problems.push(`cpl ${i}: [${off}, ${n}] expected [${want[i][0]}, ${want[i][1]}]`);
    }
  });
  return problems;
}

/**
 * `pmi adapter ARGS…` (the CLI as shipped, from dist: build first) in a child process, resolved once it
 * prints its `listening on` line; rejected with its stderr if it exits first.
 */
export function startAdapterProcess(args: readonly string[]): Promise<ChildProcess> {
  const bin = path.join(path.dirname(new URL(import.meta.url).pathname), '../../cli/bin/pmi.js');
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise<ChildProcess>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (out.includes('listening on')) resolve(child);
    });
    child.stderr!.on('data', (d: Buffer) => (err += d));
    child.on('exit', (code) => reject(new Error(`pmi adapter exited ${code}: ${err}`)));
  });
}

/** Start an adapter on 127.0.0.2 with a random port base; retries on EADDRINUSE. */
export async function startTestAdapter(
  opts: Omit<AdapterOptions, 'listen' | 'portBase'> & { listen?: string },
): Promise<NetTlpAdapter> {
  let last: unknown;
  for (let attempt = 0; attempt < 8; attempt++) {
    const portBase = 20000 + Math.floor(Math.random() * 40) * 1000 + Math.floor(Math.random() * 700);
    try {
      return await startAdapter({ listen: ADAPTER_IP, portBase, ...opts });
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

/** A source wrapper that records any read/write outside the inner source's ranges. */
export class GuardSource implements PhysicalMemory {
  /** First violations (up to 20) and their total count. */
  violations: string[] = [];
  violationCount = 0;
  reads = 0;
  writes = 0;
  readonly readSync?: (addr: number, buf: Uint8Array) => void;

  constructor(
    readonly inner: PhysicalMemory,
    sync = true,
  ) {
    if (sync && inner.readSync) {
      const rs = inner.readSync;
      this.readSync = (addr, buf) => {
        this.check('readSync', addr, buf.length);
        this.reads++;
        rs(addr, buf);
      };
    }
  }

  get info() {
    return this.inner.info;
  }

  private check(what: string, addr: number, len: number): void {
    if (
      !Number.isSafeInteger(addr) ||
      addr < 0 ||
      len <= 0 ||
      firstMissingByte(this.inner.info.ranges, addr, len) >= 0
    ) {
      this.violationCount++;
      if (this.violations.length < 20) this.violations.push(`${what} 0x${addr.toString(16)}+${len}`);
    }
  }

  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    for (const op of ops) this.check('readBatch', op.addr, op.buf.length);
    this.reads += ops.length;
    return this.inner.readBatch(ops);
  }

  async writeBatch(ops: readonly MemOp[]): Promise<void> {
    for (const op of ops) this.check('writeBatch', op.addr, op.buf.length);
    this.writes += ops.length;
    return this.inner.writeBatch(ops);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * An in-memory source with arbitrary ranges (e.g. below and above 4 GiB), a readSync fast
 * path (unless sync=false) and writes. Reads outside the ranges throw E_OUT_OF_RANGE, like
 * every real source.
 */
export class MemSource implements PhysicalMemory {
  readonly info: PhysicalMemory['info'];
  readonly readSync?: (addr: number, buf: Uint8Array) => void;
  constructor(
    readonly pieces: { start: number; data: Uint8Array }[],
    sync = true,
  ) {
    this.info = {
      uri: 'mem:test',
      kind: 'mem',
      readOnly: false,
      live: false,
      idealBatchSize: 64,
      maxInFlight: 1,
      ranges: pieces.map((p) => ({ start: p.start, end: p.start + p.data.length })).sort((a, b) => a.start - b.start),
    };
    if (sync) this.readSync = (addr, buf) => this.copy(addr, buf, false);
  }

  private piece(addr: number, len: number): { start: number; data: Uint8Array } {
    for (const p of this.pieces) if (addr >= p.start && addr + len <= p.start + p.data.length) return p;
    throw new PmiError('E_OUT_OF_RANGE', 'mem', `0x${addr.toString(16)}+${len} out of range`);
  }

  byteAt(addr: number): number {
    const p = this.piece(addr, 1);
    return p.data[addr - p.start];
  }

  private copy(addr: number, buf: Uint8Array, write: boolean): void {
    const p = this.piece(addr, buf.length);
    if (write) p.data.set(buf, addr - p.start);
    else buf.set(p.data.subarray(addr - p.start, addr - p.start + buf.length));
  }

  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    await Promise.resolve();
    const out: OpFailure[] = [];
    ops.forEach((op, index) => {
      try {
        this.copy(op.addr, op.buf, false);
      } catch (e) {
        out.push({ index, error: e as PmiError });
      }
    });
    return out;
  }

  async writeBatch(ops: readonly MemOp[]): Promise<void> {
    for (const op of ops) this.copy(op.addr, op.buf, true);
  }

  async close(): Promise<void> {}
}
