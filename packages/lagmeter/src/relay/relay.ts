import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { rewriteCandidate } from './candidate.js';
import { Link } from './link.js';
import { parseRtp } from './rtp.js';
import { SampleRing } from './stats.js';
import { Waker } from './waker.js';
import type {
  DirStats,
  Endpoint,
  LinkProfile,
  PacketRecord,
  Relay,
  RelayOptions,
  RelayPath,
  RelayStats,
} from './types.js';

type Dir = 'up' | 'down';

interface Pending {
  due: number; // performance.now() ms
  order: number; // global arrival order: FIFO tie-break
  dir: Dir;
  seq: number;
  tIn: number; // performance.now() ms
  buf: Buffer;
  sock: dgram.Socket;
  to: Endpoint;
  rec: PacketRecord | undefined;
}

/** Binary min-heap on (due, order). */
class Heap {
  private a: Pending[] = [];
  get size(): number {
    return this.a.length;
  }
  peek(): Pending | undefined {
    return this.a[0];
  }
  clear(): void {
    this.a = [];
  }
  private less(i: number, j: number): boolean {
    const x = this.a[i];
    const y = this.a[j];
    return x.due < y.due || (x.due === y.due && x.order < y.order);
  }
  push(p: Pending): void {
    const a = this.a;
    a.push(p);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      [a[i], a[parent]] = [a[parent], a[i]];
      i = parent;
    }
  }
  pop(): Pending | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(l, m)) m = l;
        if (r < a.length && this.less(r, m)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

class DirState {
  seq = 0;
  packets = 0;
  bytes = 0;
  forwarded = 0;
  forwardedBytes = 0;
  lost = 0;
  queueDrops = 0;
  reordered = 0;
  sendErrors = 0;
  maxSentSeq = -1;
  readonly delay = new SampleRing();
  readonly lateness = new SampleRing();
  readonly queueDelay = new SampleRing();
  reset(): void {
    this.packets = this.bytes = this.forwarded = this.forwardedBytes = 0;
    this.lost = this.queueDrops = this.reordered = this.sendErrors = 0;
    this.delay.clear();
    this.lateness.clear();
    this.queueDelay.clear();
  }
  snapshot(): DirStats {
    return {
      packets: this.packets,
      bytes: this.bytes,
      forwarded: this.forwarded,
      forwardedBytes: this.forwardedBytes,
      lost: this.lost,
      queueDrops: this.queueDrops,
      reordered: this.reordered,
      sendErrors: this.sendErrors,
      delay: this.delay.summary(),
      lateness: this.lateness.summary(),
      queueDelay: this.queueDelay.summary(),
    };
  }
}

const origin = performance.timeOrigin;

class UdpRelay implements Relay {
  private readonly links: Record<Dir, Link>;
  private readonly dirs: Record<Dir, DirState> = { up: new DirState(), down: new DirState() };
  private readonly heap = new Heap();
  private readonly sockets: dgram.Socket[] = [];
  private readonly bind: string;
  private readonly spinMs: number;
  private readonly scheduler: 'worker' | 'spin' | 'timers';
  private waker: Waker | undefined;
  private readonly recCap: number;
  private recs: PacketRecord[] = [];
  private recHead = 0;
  private order = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(opts: RelayOptions) {
    this.links = {
      down: new Link({ ...opts.down }, opts.seed, 'down'),
      up: new Link({ ...opts.up }, opts.seed, 'up'),
    };
    this.bind = opts.bind ?? '127.0.0.1';
    this.spinMs = opts.spinMs ?? 2;
    this.scheduler = opts.scheduler ?? 'worker';
    if (this.scheduler === 'worker') this.waker = new Waker(this.pump);
    this.recCap = opts.recordLimit ?? 200_000;
  }

  async ready(): Promise<void> {
    await this.waker?.ready;
  }

  async addPath(host: Endpoint, client: Endpoint): Promise<RelayPath> {
    if (this.closed) throw new Error('relay is closed');
    const type = this.bind.includes(':') ? 'udp6' : 'udp4';
    const open = async (): Promise<dgram.Socket> => {
      const s = dgram.createSocket({ type, recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
      s.on('error', () => {
        /* counted per send; keep the relay alive */
      });
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, this.bind, () => {
          s.off('error', reject);
          resolve();
        });
      });
      this.sockets.push(s);
      return s;
    };
    const hostSock = await open();
    const clientSock = await open();
    // host → hostSock → (down) → clientSock → client; client → clientSock → (up) → hostSock → host
    hostSock.on('message', (msg) => this.onPacket('down', msg, clientSock, client));
    clientSock.on('message', (msg) => this.onPacket('up', msg, hostSock, host));
    const ep = (s: dgram.Socket): Endpoint => ({ address: s.address().address, port: s.address().port });
    return { hostFacing: ep(hostSock), clientFacing: ep(clientSock), host: { ...host }, client: { ...client } };
  }

  rewriteCandidate(candidate: string, path: RelayPath, side: 'host' | 'client'): string | null {
    return rewriteCandidate(candidate, path, side);
  }

  private onPacket(dir: Dir, buf: Buffer, sock: dgram.Socket, to: Endpoint): void {
    const t = performance.now();
    const d = this.dirs[dir];
    const seq = d.seq++;
    d.packets++;
    d.bytes += buf.length;
    let rec: PacketRecord | undefined;
    if (this.recCap > 0) {
      rec = { dir, seq, size: buf.length, tIn: origin + t };
      const rtp = parseRtp(buf);
      if (rtp) rec.rtp = rtp;
      this.addRecord(rec);
    }
    const dec = this.links[dir].admit(t, buf.length);
    if (dec.drop !== undefined) {
      if (dec.drop === 'loss') d.lost++;
      else d.queueDrops++;
      if (rec) rec.dropped = dec.drop;
      return;
    }
    d.queueDelay.push(dec.queueDelay);
    if (rec) rec.tDue = origin + dec.due;
    this.heap.push({ due: dec.due, order: this.order++, dir, seq, tIn: t, buf, sock, to, rec });
    if (this.heap.peek()!.due <= t) this.pump();
    else this.arm();
  }

  private addRecord(r: PacketRecord): void {
    if (this.recs.length < this.recCap) this.recs.push(r);
    else {
      this.recs[this.recHead] = r;
      this.recHead = (this.recHead + 1) % this.recCap;
    }
  }

  private send(p: Pending, now: number): void {
    const d = this.dirs[p.dir];
    d.forwarded++;
    d.forwardedBytes += p.buf.length;
    if (p.seq < d.maxSentSeq) d.reordered++;
    else d.maxSentSeq = p.seq;
    d.delay.push(now - p.tIn);
    d.lateness.push(now - p.due);
    if (p.rec) p.rec.tOut = origin + now;
    p.sock.send(p.buf, p.to.port, p.to.address, (err) => {
      if (err) d.sendErrors++;
    });
  }

  private readonly pump = (): void => {
    this.immediate = undefined;
    if (this.closed) return;
    const now = performance.now();
    for (let top = this.heap.peek(); top && top.due <= now; top = this.heap.peek()) this.send(this.heap.pop()!, now);
    this.arm();
  };

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.pump();
  };

  /** Make sure something wakes us up in time for the earliest pending packet. */
  private arm(): void {
    const top = this.heap.peek();
    if (!top || this.closed) return;
    if (this.immediate) return; // spinning already
    if (this.waker) {
      if (this.waker.pending > top.due) this.waker.arm(top.due);
      return;
    }
    const dt = top.due - performance.now();
    if (this.scheduler === 'spin') {
      if (dt <= this.spinMs) {
        this.immediate = setImmediate(this.pump);
        return;
      }
      this.setTimer(top.due - this.spinMs, Math.floor(dt - this.spinMs));
    } else {
      if (dt <= 0) {
        this.immediate = setImmediate(this.pump);
        return;
      }
      this.setTimer(top.due, Math.max(1, Math.round(dt)));
    }
  }

  private setTimer(at: number, ms: number): void {
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(1, ms));
  }

  stats(): RelayStats {
    return { up: this.dirs.up.snapshot(), down: this.dirs.down.snapshot() };
  }

  resetStats(): void {
    this.dirs.up.reset();
    this.dirs.down.reset();
  }

  records(): PacketRecord[] {
    return this.recs.length < this.recCap
      ? this.recs.slice()
      : this.recs.slice(this.recHead).concat(this.recs.slice(0, this.recHead));
  }

  setProfile(dir: Dir, p: Partial<LinkProfile>): void {
    this.links[dir].set(p);
  }

  profile(dir: Dir): LinkProfile {
    return { ...this.links[dir].profile };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.heap.clear();
    await this.waker?.close();
    await Promise.all(this.sockets.map((s) => new Promise<void>((res) => s.close(() => res()))));
  }
}

/** Start a relay (no sockets yet: addPath opens them). */
export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const r = new UdpRelay(opts);
  await r.ready();
  return r;
}
