/**
 * Optional native UDP I/O for the adapter (packages/nettlp/native: epoll + recvmmsg + sendmmsg
 * through Node-API; see native/README.md). Loaded lazily; when it is not built, fails to load, is
 * not Linux, or PMI_NETTLP_IO=dgram, everything uses node:dgram instead.
 */
import { createRequire } from 'node:module';

export interface NativeIo {
  /** Bind count sockets on ip:portBase+i; buffers are shared with the native side (16-byte metadata per slot). */
  open(
    ip: string,
    portBase: number,
    count: number,
    rcvbuf: number,
    rx: ArrayBuffer,
    rxMeta: ArrayBuffer,
    tx: ArrayBuffer,
    txMeta: ArrayBuffer,
    slotSize: number,
    /** Client use: connect socket i to connectIp:portBase+i (tx metadata address 0 = that peer). */
    connectIp?: string,
  ): object;
  /** unref: the poll handle alone does not keep the process alive. */
  start(handle: object, onBatch: (n: number) => void, unref?: boolean): void;
  /**
   * Receive without the event loop, busy-waiting up to spinUs µs for the first datagram: the count,
   * 0 when none came, -1 while busy-waiting is paused (after 4 empty waits in a row, for 200 ms).
   */
  poll(handle: object, spinUs: number): number;
  /** Busy-wait up to us µs after each receive batch before sleeping in the event loop (0 = never). */
  setSpin(handle: object, us: number): void;
  /** Send tx slots 0…n−1; returns how many the kernel refused. */
  flush(handle: object, n: number): number;
  close(handle: object, cb: () => void): void;
  /** [receive batches, send calls, send errors, receive errors, GSO sends, datagrams received coalesced (GRO)] */
  stats(handle: object): number[];
}

let cached: NativeIo | null | undefined;
let loadError: string | undefined;

/** The addon, or undefined (then {@link nativeIoError} says why). */
export function loadNativeIo(): NativeIo | undefined {
  if (cached !== undefined) return cached ?? undefined;
  cached = null;
  if (process.platform !== 'linux') {
    loadError = `not available on ${process.platform}`;
    return undefined;
  }
  try {
    // Same relative path from src/adapter (tests) and dist/adapter (build).
    const mod = createRequire(import.meta.url)('../../native/build/Release/nettlp_io.node') as NativeIo;
    if (
      typeof mod.open !== 'function' ||
      typeof mod.flush !== 'function' ||
      typeof mod.poll !== 'function' ||
      typeof mod.setSpin !== 'function'
    )
      throw new Error('unexpected exports');
    cached = mod;
  } catch (e) {
    loadError = `not built or not loadable (${(e as Error).message.split('\n')[0]}); build it with npm run build:native -w @pmi/nettlp`;
  }
  return cached ?? undefined;
}

export function nativeIoError(): string | undefined {
  loadNativeIo();
  return loadError;
}
