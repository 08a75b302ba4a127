/**
 * Test responder: a minimal NetTLP completer answering MRd from in-memory regions the way a root
 * complex does (CplDs split at RCB-aligned addresses, at most MPS bytes each), UR outside its
 * regions, MWr applied to the regions. It can drop / duplicate / reorder / delay completions by a
 * seeded PRNG, stay silent, or delay chosen completions through a hook.
 */
import dgram from 'node:dgram';
import {
  CPL_SC,
  CPL_UR,
  DECODE_OK,
  MAX_DATAGRAM,
  Tlp,
  TlpKind,
  decodeTlp,
  encodeCompletion,
} from '../src/codec/tlp.js';

export interface Region {
  start: number;
  data: Uint8Array;
}

export interface ResponderOptions {
  host?: string;
  portBase: number;
  /** Sockets (tags) to serve: ports portBase … portBase+tags-1. */
  tags: number;
  regions: Region[];
  rcb?: number;
  mps?: number;
  completer?: number;
  seed?: number;
  loss?: number;
  dup?: number;
  reorder?: number;
  /** Never answer anything. */
  silent?: boolean;
  /** Return a delay in ms for a completion (n = running index of completions), or undefined. */
  delay?: (c: { n: number; tag: number; addr: number; byteCount: number }) => number | undefined;
}

export interface ResponderStats {
  mrd: number;
  mwr: number;
  cpl: number;
  ur: number;
  dropped: number;
  duplicated: number;
  reordered: number;
  delayed: number;
}

/** mulberry32: small seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Responder {
  readonly stats: ResponderStats = {
    mrd: 0,
    mwr: 0,
    cpl: 0,
    ur: 0,
    dropped: 0,
    duplicated: 0,
    reordered: 0,
    delayed: 0,
  };
  private readonly socks: dgram.Socket[] = [];
  private readonly held = new Map<dgram.Socket, { buf: Buffer; port: number; addr: string; timer: NodeJS.Timeout }>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly rnd: () => number;
  private readonly t = new Tlp();
  private n = 0;
  private closed = false;

  private constructor(readonly o: ResponderOptions) {
    this.rnd = prng(o.seed ?? 1);
  }

  static async start(o: ResponderOptions): Promise<Responder> {
    const r = new Responder(o);
    const host = o.host ?? '127.0.0.2';
    for (let tag = 0; tag < o.tags; tag++) {
      const s = dgram.createSocket('udp4');
      r.socks.push(s);
      s.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        s.once('error', (e) => {
          void r.close();
          reject(e);
        });
        s.bind(o.portBase + tag, host, () => {
          s.off('error', reject);
          resolve();
        });
      });
      try {
        s.setRecvBufferSize(4 << 20);
        s.setSendBufferSize(4 << 20);
      } catch {
        /* best effort */
      }
      s.on('message', (msg, rinfo) => r.onMessage(s, msg, rinfo.address, rinfo.port));
    }
    return r;
  }

  private region(addr: number, len: number): { r: Region; off: number } | undefined {
    for (const r of this.o.regions) {
      if (addr >= r.start && addr + len <= r.start + r.data.length) return { r, off: addr - r.start };
    }
    return undefined;
  }

  private onMessage(s: dgram.Socket, msg: Buffer, addr: string, port: number): void {
    if (this.closed || this.o.silent) return;
    const t = this.t;
    if (decodeTlp(msg, msg.length, t) !== DECODE_OK) return;
    if (t.kind === TlpKind.MemWrite) {
      this.stats.mwr++;
      const hit = this.region(t.address, t.byteLen);
      if (hit) {
        const lead = t.address & 3;
        hit.r.data.set(msg.subarray(t.payloadOffset + lead, t.payloadOffset + lead + t.byteLen), hit.off);
      }
      return;
    }
    if (t.kind !== TlpKind.MemRead) return;
    this.stats.mrd++;
    const rcb = this.o.rcb ?? 64;
    const mps = this.o.mps ?? 256;
    const completer = this.o.completer ?? 0;
    const { requester, tag } = t;
    const a0 = t.address;
    const len = t.byteLen;
    const hit = this.region(a0, len);
    if (!hit) {
      this.stats.ur++;
      const b = Buffer.allocUnsafe(32);
      const n = encodeCompletion(b, CPL_UR, completer, requester, tag, len, a0 & 0x7f, undefined);
      this.emit(s, b.subarray(0, n), addr, port, tag, a0, len);
      return;
    }
    let cur = a0;
    const end = a0 + len;
    while (cur < end) {
      let ce = Math.floor((cur + mps) / rcb) * rcb;
      if (ce > end) ce = end;
      const n = ce - cur;
      const off = hit.off + (cur - a0);
      const b = Buffer.allocUnsafe(MAX_DATAGRAM);
      const dl = encodeCompletion(
        b,
        CPL_SC,
        completer,
        requester,
        tag,
        end - cur,
        cur & 0x7f,
        hit.r.data.subarray(off, off + n),
      );
      this.emit(s, b.subarray(0, dl), addr, port, tag, cur, end - cur);
      cur = ce;
    }
  }

  private emit(
    s: dgram.Socket,
    b: Buffer,
    addr: string,
    port: number,
    tag: number,
    a: number,
    byteCount: number,
  ): void {
    this.stats.cpl++;
    const o = this.o;
    const idx = this.n++;
    const d = o.delay?.({ n: idx, tag, addr: a, byteCount });
    if (d !== undefined) {
      this.stats.delayed++;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (!this.closed) s.send(b, port, addr);
      }, d);
      this.timers.add(timer);
      return;
    }
    if (o.loss && this.rnd() < o.loss) {
      this.stats.dropped++;
      return;
    }
    if (o.reorder && this.rnd() < o.reorder && !this.held.has(s)) {
      // Hold it: it goes out after the next datagram on this socket (or after 2 ms).
      this.stats.reordered++;
      const timer = setTimeout(() => this.flushHeld(s), 2);
      this.held.set(s, { buf: b, port, addr, timer });
      return;
    }
    s.send(b, port, addr);
    if (o.dup && this.rnd() < o.dup) {
      this.stats.duplicated++;
      s.send(b, port, addr);
    }
    this.flushHeld(s);
  }

  private flushHeld(s: dgram.Socket): void {
    const h = this.held.get(s);
    if (!h) return;
    this.held.delete(s);
    clearTimeout(h.timer);
    if (!this.closed) s.send(h.buf, h.port, h.addr);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    for (const h of this.held.values()) clearTimeout(h.timer);
    this.held.clear();
    await Promise.all(this.socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** Random bytes (fast, seeded). */
export function randomBytes(n: number, seed = 7): Uint8Array {
  const out = new Uint8Array(n);
  const w = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
  for (let i = w.length * 4; i < n; i++) out[i] = (i * 131) & 0xff;
  return out;
}

/** A random port base for one client/responder pair (ports base … base+255 stay below 61000). */
export function portBase(): number {
  return 20000 + Math.floor(Math.random() * 40000);
}

/**
 * Start a responder and a client on a fresh random port base, retrying with another base when
 * another test file (running in parallel) holds one of the ports.
 */
export async function startPair<C extends { close(): Promise<void> }>(
  ro: Omit<ResponderOptions, 'portBase'>,
  open: (base: number) => Promise<C>,
): Promise<{ responder: Responder; client: C; base: number }> {
  for (let attempt = 0; ; attempt++) {
    const base = portBase();
    let responder: Responder;
    try {
      responder = await Responder.start({ ...ro, portBase: base });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 20) continue;
      throw e;
    }
    try {
      const client = await open(base);
      return { responder, client, base };
    } catch (e) {
      await responder.close();
      const errno = (e as { data?: { errno?: string } }).data?.errno;
      if (errno === 'EADDRINUSE' && attempt < 20) continue;
      throw e;
    }
  }
}
