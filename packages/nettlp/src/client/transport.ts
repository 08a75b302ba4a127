/**
 * The client's socket layer: one UDP socket per tag, bound to local:portBase+tag and connected to
 * host:portBase+tag (LibTLP's model, so it works against the card). Two implementations with the same
 * contract, chosen by the URI's `io=`:
 *
 * - native (default when the addon is built): the adapter's addon (native/nettlp_io.c) with connected
 *   sockets. Sends are copied into a shared area and go out in one native call per burst (a microtask
 *   after the code that queued them); receives arrive as one JS call per batch of datagrams from all
 *   tags (epoll + recvmmsg). Optional busy-wait (`spin=`) for completions right after a burst, which
 *   trades CPU for the event loop's sleep/wake-up latency.
 * - dgram: node:dgram, one 'message' event per datagram (the portable fallback).
 *
 * Received datagrams are handed to `deliver(tag, buf, len)`; buf is only valid during that call.
 */
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { PmiError } from '@pmi/core';
import { MAX_DATAGRAM } from '../codec/tlp.js';
import { loadNativeIo, nativeIoError, type NativeIo } from '../adapter/native.js';
import type { NetTlpClientOptions } from './uri.js';

export interface ClientTransport {
  readonly kind: 'native' | 'dgram';
  /**
   * Send len bytes of buf on tag's socket, in order with earlier sends on that tag. buf may be reused
   * once `done` has been called (native: before send returns; dgram: when the kernel took it).
   */
  send(tag: number, buf: Buffer, len: number, done?: (err: Error | null) => void): void;
  close(): Promise<void>;
  /**
   * Native receive batches, busy-wait rounds that found datagrams / found none, and datagrams that
   * arrived coalesced (UDP GRO: the adapter's GSO sends of a request's completions).
   */
  readonly stats: TransportStats;
}

export interface TransportStats {
  batches: number;
  spin_hits: number;
  spin_misses: number;
  gro_segments: number;
}

export interface TransportHooks {
  deliver(tag: number, buf: Buffer, len: number): void;
  /** Datagrams the kernel refused to send (ICMP errors, full queues): the requests will time out. */
  sendErrors(n: number): void;
  /** Is anything waiting for completions? (busy-waiting is pointless otherwise) */
  waiting(): boolean;
}

const ORIGIN = 'nettlp';
/** Room for the largest datagram (4 KiB payload + headers) plus slack, so an oversized one shows up as truncated. */
const SLOT = (MAX_DATAGRAM + 63) & ~63;
const RX_SLOTS = 1024; // (a coalesced GRO receive fills up to 64 slots; see native/nettlp_io.c)
const TX_SLOTS = 256;
/** Longest stretch of busy-waiting and handling completions before returning to the event loop. */
const SPIN_TURN_MS = 2;

/** Which I/O `io=auto` picks: PMI_NETTLP_IO=dgram|native overrides, else native when loadable. */
function chooseIo(o: NetTlpClientOptions, uri: string): NativeIo | undefined {
  let want = o.io;
  if (want === 'auto') {
    const env = process.env.PMI_NETTLP_IO;
    if (env === 'dgram' || env === 'native') want = env;
  }
  if (want === 'dgram') return undefined;
  const io = loadNativeIo();
  if (!io && want === 'native') {
    throw new PmiError('E_SOURCE_URI', ORIGIN, `io=native: the native NetTLP I/O is ${nativeIoError()}`, {
      uri,
      parameter: 'io',
    });
  }
  return io;
}

export async function openTransport(
  o: NetTlpClientOptions,
  hostIp: string,
  uri: string,
  hooks: TransportHooks,
): Promise<ClientTransport> {
  const io = chooseIo(o, uri);
  return io ? openNative(io, o, hostIp, hooks) : openDgram(o, hostIp, hooks);
}

function bindError(
  o: NetTlpClientOptions,
  hostIp: string,
  tag: number,
  e: { message: string; code?: unknown },
): PmiError {
  const port = o.portBase + tag;
  return new PmiError(
    'E_SOURCE_IO',
    ORIGIN,
    `cannot bind ${o.local}:${port} / connect to ${hostIp}:${port} (tag ${tag}): ${e.message}`,
    { local: o.local, port, tag, errno: typeof e.code === 'string' ? e.code : undefined },
  );
}

// ------------------------------------------------------------------------------------------ native

function openNative(io: NativeIo, o: NetTlpClientOptions, hostIp: string, hooks: TransportHooks): ClientTransport {
  const rxAb = new ArrayBuffer(RX_SLOTS * SLOT);
  const rxMetaAb = new ArrayBuffer(RX_SLOTS * 16);
  const txAb = new ArrayBuffer(TX_SLOTS * SLOT);
  const txMetaAb = new ArrayBuffer(TX_SLOTS * 16);
  const rxMeta = new Uint32Array(rxMetaAb);
  const txMeta = new Uint32Array(txMetaAb);
  const txBuf = Buffer.from(txAb);
  // One view per receive slot, made once: delivering a datagram allocates nothing.
  const rxViews: Buffer[] = [];
  for (let i = 0; i < RX_SLOTS; i++) rxViews.push(Buffer.from(rxAb, i * SLOT, SLOT));

  let handle: object;
  try {
    handle = io.open(o.local, o.portBase, o.tags, 4 << 20, rxAb, rxMetaAb, txAb, txMetaAb, SLOT, hostIp);
  } catch (e) {
    // The addon names the address and port in its message ("bind 127.0.0.1:12300: Address already in use").
    const m = /:(\d+):/.exec((e as Error).message);
    const tag = m ? Number(m[1]) - o.portBase : 0;
    throw bindError(o, hostIp, tag >= 0 && tag < o.tags ? tag : 0, e as Error);
  }

  let txCount = 0;
  let flushQueued = false;
  let spinning = false;
  let mustYield = false;
  const endYield = (): void => {
    mustYield = false;
  };
  let closed = false;
  const stats = { batches: 0, spin_hits: 0, spin_misses: 0 };

  const deliverBatch = (n: number): void => {
    stats.batches++;
    for (let i = 0; i < n; i++) hooks.deliver(rxMeta[i * 4], rxViews[i], rxMeta[i * 4 + 1]);
  };
  const flushNow = (): void => {
    if (txCount === 0 || closed) {
      txCount = 0;
      return;
    }
    const failed = io.flush(handle, txCount);
    txCount = 0;
    if (failed > 0) hooks.sendErrors(failed);
  };
  /**
   * Send what is queued, then — with spin= and requests outstanding — busy-wait for their completions
   * and handle them here (sending the follow-up requests at once) instead of sleeping in the event
   * loop: that sleep and wake-up is most of a loopback round trip.
   */
  const flushAndSpin = (): void => {
    flushNow();
    if (o.spinUs <= 0 || spinning || mustYield || closed || !hooks.waiting()) return;
    spinning = true;
    // Give the event loop a turn after a while even when completions keep coming (timers, other
    // I/O, an adapter in this process): until then completions are handled as they wake it.
    const until = performance.now() + SPIN_TURN_MS;
    try {
      while (!closed && hooks.waiting()) {
        if (performance.now() >= until) {
          mustYield = true;
          setImmediate(endYield);
          break;
        }
        const n = io.poll(handle, o.spinUs); // -1: paused after empty waits (the addon's back-off)
        if (n <= 0) {
          if (n === 0) stats.spin_misses++;
          break;
        }
        stats.spin_hits++;
        deliverBatch(n);
        flushNow();
      }
    } finally {
      spinning = false;
    }
  };
  const flushTask = (): void => {
    flushQueued = false;
    flushAndSpin();
  };

  io.start(
    handle,
    (n: number) => {
      if (closed) return;
      deliverBatch(n);
      // Completions usually free tags that take new requests right away: send them now (one send
      // call per receive batch) and wait for their answers the same way.
      flushAndSpin();
    },
    true,
  );

  return {
    kind: 'native',
    get stats() {
      return { ...stats, gro_segments: closed ? 0 : (io.stats(handle)[5] ?? 0) };
    },
    send(tag, buf, len, done) {
      if (closed) {
        done?.(new Error('closed'));
        return;
      }
      if (txCount === TX_SLOTS) flushNow();
      const off = txCount * SLOT;
      buf.copy(txBuf, off, 0, len);
      const m = txCount * 4;
      txMeta[m] = tag;
      txMeta[m + 1] = len;
      txMeta[m + 2] = 0; // 0.0.0.0:0 = the socket's connected peer
      txMeta[m + 3] = 0;
      txCount++;
      done?.(null);
      if (!flushQueued && !spinning) {
        flushQueued = true;
        queueMicrotask(flushTask);
      }
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      txCount = 0;
      return new Promise<void>((resolve) => io.close(handle, resolve));
    },
  };
}

// ------------------------------------------------------------------------------------------- dgram

async function openDgram(o: NetTlpClientOptions, hostIp: string, hooks: TransportHooks): Promise<ClientTransport> {
  const socks: dgram.Socket[] = [];
  const close = (): Promise<void> =>
    Promise.all(
      socks.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // never bound / already closed
            }
          }),
      ),
    ).then(() => undefined);
  try {
    for (let tag = 0; tag < o.tags; tag++) {
      const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false });
      socks.push(sock);
      sock.on('error', () => hooks.sendErrors(1));
      const port = o.portBase + tag;
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => reject(e);
        sock.once('error', onErr);
        sock.bind({ address: o.local, port, exclusive: true }, () => {
          sock.connect(port, hostIp, () => {
            sock.off('error', onErr);
            resolve();
          });
        });
      }).catch((e: NodeJS.ErrnoException) => {
        throw bindError(o, hostIp, tag, e);
      });
      try {
        sock.setRecvBufferSize(4 << 20);
      } catch {
        /* capped by net.core.rmem_max; the default still works */
      }
      sock.on('message', (msg: Buffer) => hooks.deliver(tag, msg, msg.length));
      sock.unref();
    }
  } catch (e) {
    await close();
    throw e;
  }
  let closing: Promise<void> | undefined;
  return {
    kind: 'dgram',
    stats: { batches: 0, spin_hits: 0, spin_misses: 0, gro_segments: 0 },
    send(tag, buf, len, done) {
      if (done === undefined)
        socks[tag].send(buf, 0, len); // errors reach the 'error' handler
      else
        socks[tag].send(buf, 0, len, (e) => {
          if (e) hooks.sendErrors(1);
          done(e ?? null);
        });
    },
    close() {
      closing ??= close();
      return closing;
    },
  };
}
