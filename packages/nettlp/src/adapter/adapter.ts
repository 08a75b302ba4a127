/**
 * The NetTLP adapter in software: UDP sockets on listen:portBase+tag (one per tag, as the
 * FPGA adapter exposes 0x3000+tag), each datagram handed to {@link AdapterCore}, completions
 * sent back from the socket the request arrived on to the sender's address and port.
 *
 * Sending: node:dgram keeps a sent buffer until the send finishes (unconnected sends even go
 * through a next-tick address "lookup"), so completions are copied into a preallocated pool of
 * send slots, each with its own preallocated completion callback that frees it. When the pool
 * is exhausted (the OS send queue backs up) a completion is copied into a fresh buffer instead.
 */
import dgram from 'node:dgram';
import { PmiError, type PhysicalMemory } from '@pmi/core';
import { MAX_DATAGRAM, NETTLP_HDR_LEN, TLP_4DW } from '../codec/tlp.js';
import { PcapWriter } from '../pcap/writer.js';
import {
  AdapterCore,
  validateSplitOptions,
  type AdapterStats,
  type Peer,
  type ReplyFn,
  type SplitMode,
} from './core.js';
import { loadNativeIo, nativeIoError, type NativeIo } from './native.js';
import {
  NO_FAULTS,
  faultsActive,
  isIpv4,
  isLoopback,
  mulberry32,
  parseCidrList,
  parseFaultSpec,
  type Cidr,
  type FaultSpec,
} from './options.js';

export interface AdapterOptions {
  source: PhysicalMemory;
  /** IPv4 address to listen on. */
  listen: string;
  /** First UDP port (default 12288 = 0x3000); port portBase+tag serves tag. */
  portBase?: number;
  /** Number of tags/sockets (default 256). */
  tags?: number;
  mps?: number;
  rcb?: number;
  /** Apply MWr to the source (default false: writes are dropped and counted). */
  writable?: boolean;
  /** Allowed client networks (CIDRs, "a.b.c.d/n" or bare addresses). Default: 127.0.0.0/8. */
  allow?: string[];
  completerId?: number;
  /** Fault injection on outgoing completions (a spec object or "loss=0.05,…" text). */
  fault?: FaultSpec | string;
  /** Write every datagram in and out to this pcap file. */
  pcap?: string;
  /** Clock in ms for the NetTLP header timestamp (default performance.now). */
  now?: () => number;
  /** Send slots in the preallocated pool (default 4 × tags, at least 64). */
  sendSlots?: number;
  /**
   * How the first completion of a split read ends: 'rcb' (default) at the first RCB boundary, as
   * root complexes do; 'mps' as large as MPS allows (also legal PCIe: fewer datagrams per read).
   */
  split?: SplitMode;
  /**
   * UDP I/O: 'native' (the optional addon: epoll + recvmmsg/sendmmsg, batched into one JS call per
   * wake-up), 'dgram' (node:dgram), or 'auto' (default; native when built and loadable, else dgram;
   * the env variable PMI_NETTLP_IO overrides 'auto'). Fault injection and pcap always use dgram.
   */
  io?: 'auto' | 'native' | 'dgram';
  /**
   * Native I/O only: after answering a batch, busy-wait up to this many µs for the next request
   * before sleeping in the event loop (default 50; 0 = never). Saves the sleep/wake-up on both sides
   * of loopback, the largest per-request cost measured (bench/nettlp); backs off by itself when the
   * waits keep finding nothing.
   */
  spinUs?: number;
}

/** Default busy-wait of the native I/O after a batch (µs). */
export const DEFAULT_ADAPTER_SPIN_US = 50;

export interface NetTlpAdapter {
  readonly ports: { first: number; last: number };
  readonly address: string;
  /** The UDP I/O in use. */
  readonly io: 'native' | 'dgram';
  stats(): AdapterStats;
  close(): Promise<void>;
}

const ORIGIN = 'nettlp-adapter';

function usage(msg: string, data: Record<string, unknown> = {}): PmiError {
  return new PmiError('E_USAGE', ORIGIN, msg, data);
}

interface PortState {
  readonly port: number;
  readonly socket: dgram.Socket;
  readonly rng: () => number;
  /** A completion held back by reorder injection, sent after the next one (or by the flush timer). */
  held: { buf: Buffer; to: Peer } | undefined;
  heldTimer: NodeJS.Timeout | undefined;
}

class SendPool {
  private readonly bufs: Buffer[] = [];
  private readonly callbacks: ((err: Error | null) => void)[] = [];
  private readonly free: Int32Array;
  private nFree: number;
  sendErrors = 0;

  constructor(slots: number, slotSize: number) {
    const slab = Buffer.alloc(slots * slotSize);
    this.free = new Int32Array(slots);
    for (let i = 0; i < slots; i++) {
      this.bufs.push(slab.subarray(i * slotSize, (i + 1) * slotSize));
      this.callbacks.push((err) => {
        if (err) this.sendErrors++;
        this.free[this.nFree++] = i;
      });
      this.free[i] = slots - 1 - i;
    }
    this.nFree = slots;
  }

  readonly onFallbackSent = (err: Error | null): void => {
    if (err) this.sendErrors++;
  };

  send(socket: dgram.Socket, src: Uint8Array, len: number, to: Peer): void {
    if (this.nFree > 0) {
      const slot = this.free[--this.nFree];
      const b = this.bufs[slot];
      b.set(src.length === len ? src : src.subarray(0, len));
      socket.send(b, 0, len, to.port, to.address, this.callbacks[slot]);
    } else {
      socket.send(Buffer.from(src.subarray(0, len)), 0, len, to.port, to.address, this.onFallbackSent);
    }
  }
}

export async function startAdapter(options: AdapterOptions): Promise<NetTlpAdapter> {
  const { source, listen } = options;
  if (!source || typeof source.readBatch !== 'function')
    throw usage('startAdapter: a source (PhysicalMemory) is required');
  if (typeof listen !== 'string' || !isIpv4(listen)) {
    throw usage(`adapter: listen address must be an IPv4 address (got '${String(listen)}')`, { listen });
  }
  const portBase = options.portBase ?? 0x3000;
  const tags = options.tags ?? 256;
  if (!Number.isInteger(tags) || tags < 1 || tags > 256) throw usage(`adapter: tags must be 1…256 (got ${tags})`);
  if (!Number.isInteger(portBase) || portBase < 1 || portBase + tags - 1 > 65535) {
    throw usage(`adapter: ports ${portBase}…${portBase + tags - 1} are not valid UDP ports`);
  }
  const mps = options.mps ?? 256;
  const rcb = options.rcb ?? 64;
  validateSplitOptions(mps, rcb);
  const spinUs = options.spinUs ?? DEFAULT_ADAPTER_SPIN_US;
  if (!Number.isInteger(spinUs) || spinUs < 0 || spinUs > 10_000) {
    throw usage(`adapter: spin must be 0…10000 µs (got ${spinUs})`, { spin: spinUs });
  }
  let allow: Cidr[];
  if (options.allow === undefined) {
    if (!isLoopback(listen)) {
      throw usage(
        `adapter: refusing to serve memory on non-loopback address ${listen} without an explicit allow-list ` +
          `(pass allow, e.g. ['192.168.10.3/32']); without it only 127.0.0.0/8 clients are allowed`,
        { listen },
      );
    }
    allow = parseCidrList('127.0.0.0/8');
  } else {
    allow = parseCidrList(options.allow);
  }
  const writable = options.writable ?? false;
  if (writable && source.info.readOnly) {
    throw usage(`adapter: writable requested but the source ${source.info.uri} is read-only (open it writable)`);
  }
  const fault: FaultSpec =
    options.fault === undefined
      ? NO_FAULTS
      : typeof options.fault === 'string'
        ? parseFaultSpec(options.fault)
        : options.fault;
  const faulty = faultsActive(fault);

  const ioWanted = options.io ?? 'auto';
  if (ioWanted !== 'auto' && ioWanted !== 'native' && ioWanted !== 'dgram') {
    throw usage(`adapter: io must be auto, native or dgram (got '${String(ioWanted)}')`);
  }
  const envIo = process.env.PMI_NETTLP_IO;
  const ioMode = ioWanted === 'auto' && (envIo === 'native' || envIo === 'dgram') ? envIo : ioWanted;
  let native: NativeIo | undefined;
  if (ioMode !== 'dgram' && !faulty && !options.pcap) {
    native = loadNativeIo();
    if (!native && ioMode === 'native')
      throw usage(`adapter: native I/O requested but the addon is ${nativeIoError()}`);
  }

  const core = new AdapterCore({
    source,
    mps,
    rcb,
    split: options.split,
    writable,
    allow,
    completerId: options.completerId,
    now: options.now,
  });
  const stats = core.stats;
  if (native) return startNative(native, core, listen, portBase, tags, spinUs);
  const pcap = options.pcap ? new PcapWriter(options.pcap) : undefined;
  const slotSize = NETTLP_HDR_LEN + TLP_4DW + mps + 8;
  const pool = new SendPool(Math.max(64, options.sendSlots ?? tags * 4), Math.min(slotSize, MAX_DATAGRAM));
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  const states: PortState[] = [];

  const transmit = (st: PortState, buf: Uint8Array, len: number, to: Peer): void => {
    if (closed) return;
    if (pcap) pcap.write(listen, st.port, to.address, to.port, buf, len);
    pool.send(st.socket, buf, len, to);
  };

  const later = (ms: number, f: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ms);
    timers.add(t);
  };

  const flushHeld = (st: PortState): void => {
    const h = st.held;
    if (!h) return;
    st.held = undefined;
    if (st.heldTimer) {
      clearTimeout(st.heldTimer);
      timers.delete(st.heldTimer);
      st.heldTimer = undefined;
    }
    transmit(st, h.buf, h.buf.length, h.to);
  };

  /** Fault injection: a fixed number of PRNG draws per completion, so a seed replays exactly. */
  const faultySend = (st: PortState, buf: Uint8Array, len: number, to: Peer): void => {
    const rLoss = st.rng();
    const rReorder = st.rng();
    const rDup = st.rng();
    const rDelay = st.rng();
    const f = stats.fault;
    if (rLoss < fault.loss) {
      f.lost++;
      return;
    }
    const copies = rDup < fault.dup ? 2 : 1;
    if (copies === 2) f.duplicated++;
    if (rReorder < fault.reorder) {
      // Hold this one back until the next completion on this socket (or the flush timer). One is
      // held at a time: an earlier held completion goes out now, so every roll counts the same.
      f.reordered++;
      flushHeld(st);
      st.held = { buf: Buffer.from(buf.subarray(0, len)), to };
      if (copies === 2) transmit(st, buf, len, to); // the duplicate goes now, the original later
      const t = setTimeout(() => {
        timers.delete(t);
        st.heldTimer = undefined;
        flushHeld(st);
      }, fault.reorderFlushMs);
      st.heldTimer = t;
      timers.add(t);
      return;
    }
    if (fault.delayMs > 0 && rDelay < fault.delayRate) {
      f.delayed++;
      const copy = Buffer.from(buf.subarray(0, len));
      later(fault.delayMs, () => {
        for (let i = 0; i < copies; i++) transmit(st, copy, copy.length, to);
        flushHeld(st);
      });
      return;
    }
    for (let i = 0; i < copies; i++) transmit(st, buf, len, to);
    flushHeld(st);
  };

  const sockets: dgram.Socket[] = [];
  const closeSockets = async (): Promise<void> => {
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // already closed
            }
          }),
      ),
    );
  };

  try {
    for (let i = 0; i < tags; i++) {
      const port = portBase + i;
      const socket = dgram.createSocket({ type: 'udp4' });
      sockets.push(socket);
      const st: PortState = {
        port,
        socket,
        rng: mulberry32((fault.seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0),
        held: undefined,
        heldTimer: undefined,
      };
      states.push(st);
      const reply = faulty
        ? (buf: Uint8Array, len: number, to: Peer) => faultySend(st, buf, len, to)
        : (buf: Uint8Array, len: number, to: Peer) => transmit(st, buf, len, to);
      socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => {
        if (pcap) pcap.write(rinfo.address, rinfo.port, listen, port, msg, msg.length);
        core.handle(msg, msg.length, rinfo, reply);
      });
      await new Promise<void>((resolve, reject) => {
        const onError = (e: Error): void => reject(e);
        socket.once('error', onError);
        socket.bind({ port, address: listen, exclusive: true }, () => {
          socket.off('error', onError);
          resolve();
        });
      });
      // After binding, socket errors (e.g. ICMP-triggered) must not crash the process.
      socket.on('error', () => {
        stats.send_errors++;
      });
    }
  } catch (e) {
    closed = true;
    core.close();
    await closeSockets();
    pcap?.close();
    const err = e as NodeJS.ErrnoException;
    throw new PmiError(
      'E_USAGE',
      ORIGIN,
      `adapter: cannot bind UDP ${listen}:${portBase}…${portBase + tags - 1}: ${err.message}`,
      { listen, port_base: portBase, tags, errno: err.code },
      e,
    );
  }

  let closing: Promise<void> | undefined;
  return {
    ports: { first: portBase, last: portBase + tags - 1 },
    address: listen,
    io: 'dgram',
    stats(): AdapterStats {
      const s = structuredClone(stats);
      s.send_errors += pool.sendErrors;
      return s;
    },
    close(): Promise<void> {
      closing ??= (async () => {
        closed = true;
        core.close();
        for (const t of timers) clearTimeout(t);
        timers.clear();
        for (const st of states) st.held = undefined;
        await closeSockets();
        await core.idle();
        pcap?.close();
        // 'close' fires before libuv has released the handles; two loop turns later they are gone.
        for (let i = 0; i < 2; i++) await new Promise<void>((r) => setImmediate(r));
      })();
      return closing;
    },
  };
}

/** A client address: the Peer handed to the core, plus the numbers the native sender needs. */
interface NativePeer extends Peer {
  readonly ip: number;
}

/** Datagram slot in the shared buffers: MAX_DATAGRAM rounded up (a longer request is malformed anyway). */
const NATIVE_SLOT = 4160;
const NATIVE_RX_SLOTS = 256;
const NATIVE_TX_SLOTS = 1024;

/**
 * The adapter on the native I/O addon: one JS call per batch of received datagrams (all ready
 * sockets, recvmmsg), replies collected in a shared area and sent with one sendmmsg per socket run
 * when the batch is done. Replies produced outside a batch (asynchronous sources) are flushed on a
 * microtask. Same core, same rules, same stats as the dgram path.
 */
async function startNative(
  native: NativeIo,
  core: AdapterCore,
  listen: string,
  portBase: number,
  tags: number,
  spinUs: number,
): Promise<NetTlpAdapter> {
  const stats = core.stats;
  const rx = new ArrayBuffer(NATIVE_RX_SLOTS * NATIVE_SLOT);
  const rxMeta = new Uint32Array(NATIVE_RX_SLOTS * 4);
  const tx = new ArrayBuffer(NATIVE_TX_SLOTS * NATIVE_SLOT);
  const txMeta = new Uint32Array(NATIVE_TX_SLOTS * 4);
  const txBytes = new Uint8Array(tx);
  const rxViews: Uint8Array[] = [];
  for (let i = 0; i < NATIVE_RX_SLOTS; i++) rxViews.push(new Uint8Array(rx, i * NATIVE_SLOT, NATIVE_SLOT));
  let handle: object;
  try {
    handle = native.open(listen, portBase, tags, 4 << 20, rx, rxMeta.buffer, tx, txMeta.buffer, NATIVE_SLOT);
  } catch (e) {
    core.close();
    const err = e as NodeJS.ErrnoException;
    throw new PmiError(
      'E_USAGE',
      ORIGIN,
      `adapter: cannot bind UDP ${listen}:${portBase}…${portBase + tags - 1}: ${err.message}`,
      { listen, port_base: portBase, tags, errno: err.code },
      e,
    );
  }
  let closed = false;
  let nTx = 0;
  let inBatch = false;
  let flushQueued = false;
  let sendErrors = 0;
  const flush = (): void => {
    flushQueued = false;
    if (nTx === 0 || closed) {
      nTx = 0;
      return;
    }
    const n = nTx;
    nTx = 0;
    sendErrors += native.flush(handle, n);
  };
  const peers = new Map<number, NativePeer>();
  const peer = (ip: number, port: number): NativePeer => {
    const key = ip * 65536 + port;
    let p = peers.get(key);
    if (p === undefined) {
      if (peers.size >= 4096) peers.clear();
      p = { address: `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`, port, ip };
      peers.set(key, p);
    }
    return p;
  };
  const replies: ReplyFn[] = [];
  for (let i = 0; i < tags; i++) {
    replies.push((buf, len, to) => {
      if (closed) return;
      if (nTx === NATIVE_TX_SLOTS) flush();
      const k = nTx++;
      txBytes.set(len === buf.length ? buf : buf.subarray(0, len), k * NATIVE_SLOT);
      const m = k * 4;
      txMeta[m] = i;
      txMeta[m + 1] = len;
      txMeta[m + 2] = (to as NativePeer).ip;
      txMeta[m + 3] = to.port;
      if (!inBatch && !flushQueued) {
        flushQueued = true;
        queueMicrotask(flush);
      }
    });
  }
  native.setSpin(handle, spinUs);
  native.start(handle, (n: number): void => {
    inBatch = true;
    try {
      for (let i = 0; i < n; i++) {
        const m = i * 4;
        core.handle(rxViews[i], rxMeta[m + 1], peer(rxMeta[m + 2], rxMeta[m + 3]), replies[rxMeta[m]]);
      }
    } finally {
      inBatch = false;
      flush();
    }
  });

  let closing: Promise<void> | undefined;
  return {
    ports: { first: portBase, last: portBase + tags - 1 },
    address: listen,
    io: 'native',
    stats(): AdapterStats {
      const s = structuredClone(stats);
      s.send_errors += sendErrors;
      return s;
    },
    close(): Promise<void> {
      closing ??= (async () => {
        closed = true;
        core.close();
        await new Promise<void>((resolve) => native.close(handle, resolve));
        await core.idle();
        for (let i = 0; i < 2; i++) await new Promise<void>((r) => setImmediate(r));
      })();
      return closing;
    },
  };
}
