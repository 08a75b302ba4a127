// The relay over real UDP sockets on loopback: two sockets play host and client and exchange
// numbered datagrams through it. Timing assertions use medians (the machine is shared and noisy)
// and compare against the relay's own packet timestamps where that is the truth.
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Link, buildRtp, cleanProfile, startRelay, summarize, frameTimings } from 'lagmeter';
import type { LinkProfile, Relay, RelayOptions, RelayPath } from 'lagmeter';

const profile = (p: Partial<LinkProfile> = {}): LinkProfile => ({ ...cleanProfile(), ...p });

interface Harness {
  relay: Relay;
  path: RelayPath;
  host: dgram.Socket;
  client: dgram.Socket;
  /** receive time (performance.now) by packet number, per receiving side */
  atClient: Map<number, number>;
  atHost: Map<number, number>;
  orderAtClient: number[];
  close(): Promise<void>;
}

const open: Harness[] = [];
afterEach(async () => {
  while (open.length) await open.pop()!.close();
});

async function udp(): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

async function harness(opts: Partial<RelayOptions> = {}): Promise<Harness> {
  const relay = await startRelay({ down: profile(), up: profile(), seed: 1, ...opts });
  const host = await udp();
  const client = await udp();
  const path = await relay.addPath(
    { address: '127.0.0.1', port: host.address().port },
    { address: '127.0.0.1', port: client.address().port },
  );
  const h: Harness = {
    relay,
    path,
    host,
    client,
    atClient: new Map(),
    atHost: new Map(),
    orderAtClient: [],
    async close() {
      await relay.close();
      host.close();
      client.close();
    },
  };
  client.on('message', (m) => {
    const i = m.readUInt32BE(0);
    h.atClient.set(i, performance.now());
    h.orderAtClient.push(i);
  });
  host.on('message', (m) => h.atHost.set(m.readUInt32BE(0), performance.now()));
  open.push(h);
  return h;
}

/** Send n numbered packets host→client (down) or client→host (up): `burst` packets every `gapMs`. */
async function send(
  h: Harness,
  dir: 'down' | 'up',
  n: number,
  o: { gapMs?: number; burst?: number; size?: number; first?: number } = {},
): Promise<Map<number, number>> {
  const { gapMs = 1, burst = 1, size = 200, first = 0 } = o;
  const sent = new Map<number, number>();
  const [sock, to] = dir === 'down' ? [h.host, h.path.hostFacing] : [h.client, h.path.clientFacing];
  for (let i = first; i < first + n;) {
    for (let k = 0; k < burst && i < first + n; k++, i++) {
      const b = Buffer.alloc(size);
      b.writeUInt32BE(i, 0);
      sent.set(i, performance.now());
      sock.send(b, to.port, to.address);
    }
    if (gapMs > 0) await sleep(gapMs);
    else await new Promise((r) => setImmediate(r));
  }
  return sent;
}

async function settle(h: Harness, dir: 'down' | 'up', expected: number, maxMs = 3000): Promise<void> {
  const got = dir === 'down' ? h.atClient : h.atHost;
  const t0 = performance.now();
  while (got.size < expected && performance.now() - t0 < maxMs) await sleep(5);
  await sleep(20);
}

const oneWay = (sent: Map<number, number>, got: Map<number, number>) =>
  [...sent].filter(([i]) => got.has(i)).map(([i, t]) => got.get(i)! - t);

describe('relay over UDP', () => {
  it('passes traffic both ways untouched with a clean profile', async () => {
    const h = await harness();
    await send(h, 'down', 200, { gapMs: 0, burst: 20 });
    await send(h, 'up', 200, { gapMs: 0, burst: 20 });
    await settle(h, 'down', 200);
    await settle(h, 'up', 200);
    expect(h.atClient.size).toBe(200);
    expect(h.atHost.size).toBe(200);
    const st = h.relay.stats();
    expect(st.down).toMatchObject({ packets: 200, forwarded: 200, bytes: 200 * 200, lost: 0, reordered: 0 });
    expect(st.up).toMatchObject({ packets: 200, forwarded: 200, lost: 0 });
  });

  it('applies the delay: median within 0.5 ms of 40 ms (relay clock and end to end), p95 bounded', async () => {
    // A/B in the same process: baseline through a clean relay, then 40 ms down / 20 ms up.
    const h0 = await harness();
    const base = summarize(oneWay(await send(h0, 'down', 400), h0.atClient));
    const h = await harness({ down: profile({ delayMs: 40 }), up: profile({ delayMs: 20 }) });
    const sentDown = await send(h, 'down', 1000);
    const sentUp = await send(h, 'up', 400);
    await settle(h, 'down', 1000);
    await settle(h, 'up', 400);
    const st = h.relay.stats();
    const e2e = summarize(oneWay(sentDown, h.atClient));
    const e2eUp = summarize(oneWay(sentUp, h.atHost));
    console.log(
      `delay 40 ms: relay-applied p50 ${st.down.delay.p50.toFixed(3)} p95 ${st.down.delay.p95.toFixed(3)}; ` +
        `scheduler lateness p50 ${st.down.lateness.p50.toFixed(3)} p95 ${st.down.lateness.p95.toFixed(3)}; ` +
        `end-to-end p50 ${e2e.p50.toFixed(3)} − baseline ${base.p50.toFixed(3)}`,
    );
    expect(st.down.delay.n).toBe(1000);
    expect(Math.abs(st.down.delay.p50 - 40)).toBeLessThan(0.5);
    expect(st.down.delay.min).toBeGreaterThanOrEqual(40);
    expect(st.down.delay.p95).toBeLessThan(40 + 10);
    expect(Math.abs(e2e.p50 - base.p50 - 40)).toBeLessThan(0.5);
    expect(Math.abs(st.up.delay.p50 - 20)).toBeLessThan(0.5);
    expect(Math.abs(e2eUp.p50 - base.p50 - 20)).toBeLessThan(0.5);
  });

  it('jitter without reordering: zero reordered packets, spread as the link model predicts', async () => {
    const prof = profile({ delayMs: 20, jitterMs: 8 });
    const h = await harness({ down: prof, seed: 77 });
    await send(h, 'down', 1000);
    await settle(h, 'down', 1000);
    const st = h.relay.stats().down;
    expect(st.reordered).toBe(0);
    expect(h.orderAtClient).toEqual([...h.orderAtClient].sort((a, b) => a - b));
    expect(h.orderAtClient.length).toBe(1000);
    // Truth: replay the relay's own arrival times through a fresh link with the same seed → the
    // same departure schedule, to the µs.
    const recs = h.relay.records().filter((r) => r.dir === 'down');
    const replay = new Link(prof, 77, 'down');
    for (const r of recs) {
      const d = replay.admit(r.tIn, r.size);
      if (d.drop !== undefined) throw new Error('unexpected drop');
      expect(Math.abs(d.due - r.tDue!)).toBeLessThan(1e-3); // tIn/tDue are epoch ms: ~0.25 µs resolution
    }
    expect(st.delay.min).toBeGreaterThanOrEqual(20 - 8);
    expect(st.delay.max - st.delay.min).toBeGreaterThan(8); // it does spread
    expect(st.lateness.p50).toBeLessThan(0.5);
  });

  it('jitter with reorder: some packets are reordered', async () => {
    const h = await harness({ down: profile({ delayMs: 20, jitterMs: 8, reorder: true }) });
    await send(h, 'down', 500);
    await settle(h, 'down', 500);
    const st = h.relay.stats().down;
    expect(st.reordered).toBeGreaterThan(50);
    let inversions = 0;
    for (let i = 1; i < h.orderAtClient.length; i++) if (h.orderAtClient[i] < h.orderAtClient[i - 1]) inversions++;
    expect(inversions).toBeGreaterThan(50);
  });

  it('Bernoulli loss over 20k packets: rate within tolerance, identical drop pattern for the same seed', async () => {
    const run = async (seed: number) => {
      const h = await harness({ down: profile({ loss: { model: 'bernoulli', p: 0.05 } }), seed });
      await send(h, 'down', 20_000, { gapMs: 0, burst: 50, size: 100 });
      await settle(h, 'down', 20_000 * 0.95 - 200);
      const st = h.relay.stats().down;
      const dropped = h.relay
        .records()
        .filter((r) => r.dropped)
        .map((r) => r.seq);
      await h.close();
      open.splice(open.indexOf(h), 1);
      return { st, dropped, received: h.atClient.size };
    };
    const a = await run(123);
    const b = await run(123);
    expect(a.st.packets).toBe(20_000);
    expect(Math.abs(a.st.lost / 20_000 - 0.05)).toBeLessThan(4 * Math.sqrt((0.05 * 0.95) / 20_000));
    expect(a.received).toBe(20_000 - a.st.lost);
    expect(b.dropped).toEqual(a.dropped);
    const c = await run(124);
    expect(c.dropped).not.toEqual(a.dropped);
  });

  it('Gilbert–Elliott loss over 20k packets, deterministic', async () => {
    const run = async () => {
      const h = await harness({ up: profile({ loss: { model: 'gilbert', p: 0.02, r: 0.25 } }), seed: 9 });
      await send(h, 'up', 20_000, { gapMs: 0, burst: 20, size: 100 });
      await settle(h, 'up', 20_000 * 0.9);
      expect(h.relay.stats().up.packets).toBe(20_000); // none lost in the kernel before the relay
      const st = h.relay.stats().up;
      const dropped = h.relay
        .records()
        .filter((r) => r.dropped)
        .map((r) => r.seq);
      await h.close();
      open.splice(open.indexOf(h), 1);
      return { st, dropped };
    };
    const a = await run();
    const b = await run();
    const expected = 0.02 / 0.27;
    expect(Math.abs(a.st.lost / a.st.packets - expected) / expected).toBeLessThan(0.3);
    expect(b.dropped).toEqual(a.dropped);
  });

  it('rate limit caps throughput within 5 % and the queue drops when full', async () => {
    // 4 Mbit/s, 472 B payload + 28 B = 4000 bits → 1000 packets/s; offered ≈ 2000 packets/s.
    const h = await harness({ down: profile({ rateBps: 4e6, queuePackets: 100 }) });
    await send(h, 'down', 2400, { gapMs: 5, burst: 10, size: 472 });
    await settle(h, 'down', 1300, 2000);
    await sleep(200); // the queue drains (≤ 100 ms)
    const st = h.relay.stats().down;
    expect(st.queueDrops).toBeGreaterThan(500);
    expect(st.forwarded + st.queueDrops).toBe(st.packets);
    // Throughput while backlogged, from the client's receive times.
    const times = [...h.atClient.values()].sort((a, b) => a - b);
    const mid = times.slice(Math.floor(times.length * 0.1), Math.floor(times.length * 0.9));
    const bps = ((mid.length - 1) * 4000) / ((mid[mid.length - 1] - mid[0]) / 1000);
    console.log(`rate 4 Mbit/s: measured ${(bps / 1e6).toFixed(3)} Mbit/s, queue drops ${st.queueDrops}`);
    expect(Math.abs(bps - 4e6) / 4e6).toBeLessThan(0.05);
    // Queueing delay grows to ≈ queue length × 1 ms.
    expect(st.queueDelay.max).toBeGreaterThan(90);
    expect(st.queueDelay.max).toBeLessThan(110);
  });

  it('setProfile changes the delay live, without reordering', async () => {
    const h = await harness({ down: profile({ delayMs: 10 }) });
    await send(h, 'down', 200);
    h.relay.setProfile('down', { delayMs: 30 });
    await send(h, 'down', 200, { first: 200 });
    h.relay.setProfile('down', { delayMs: 5 });
    await send(h, 'down', 200, { first: 400 });
    await settle(h, 'down', 600);
    const recs = h.relay.records();
    const d = (a: number, b: number) => summarize(recs.slice(a, b).map((r) => r.tOut! - r.tIn)).p50;
    expect(Math.abs(d(20, 200) - 10)).toBeLessThan(0.5);
    expect(Math.abs(d(220, 400) - 30)).toBeLessThan(0.5);
    expect(Math.abs(d(500, 600) - 5)).toBeLessThan(0.5);
    expect(h.relay.stats().down.reordered).toBe(0);
    expect(h.relay.profile('down').delayMs).toBe(5);
  });

  it('records RTP headers (not RTCP/STUN) and groups frames', async () => {
    const h = await harness({ down: profile({ delayMs: 5 }) });
    const to = h.path.hostFacing;
    for (let f = 0; f < 5; f++)
      for (let k = 0; k < 4; k++)
        h.host.send(
          buildRtp({ ssrc: 0x1234, seq: f * 4 + k, ts: 3000 * f, marker: k === 3, pt: 96 }, 900),
          to.port,
          to.address,
        );
    const rtcp = buildRtp({ ssrc: 1, seq: 0, ts: 0, marker: false, pt: 96 }, 20);
    rtcp[1] = 201;
    h.host.send(rtcp, to.port, to.address);
    h.host.send(
      Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
      to.port,
      to.address,
    );
    await sleep(100);
    const recs = h.relay.records();
    expect(recs).toHaveLength(22);
    expect(recs.filter((r) => r.rtp)).toHaveLength(20);
    const frames = frameTimings(recs);
    expect(frames).toHaveLength(5);
    for (const f of frames) {
      expect(f.packets).toBe(4);
      expect(f.marker).toBe(true);
      expect(f.lastOut - f.lastIn).toBeGreaterThanOrEqual(5);
    }
    h.relay.resetStats();
    expect(h.relay.stats().down.packets).toBe(0);
  });
});
