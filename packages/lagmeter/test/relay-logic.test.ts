// Pure-logic tests of the relay: link model (loss, jitter, rate), argument parsing, candidate
// rewriting, RTP parsing. No sockets.
import { describe, expect, it } from 'vitest';
import {
  Link,
  LossProcess,
  Prng,
  buildRtp,
  cleanProfile,
  expectedLoss,
  frameTimings,
  netemArgs,
  parseCandidate,
  parseLinkArgs,
  parseLoss,
  parseRate,
  parseRtp,
  rewriteCandidate,
  rewriteSdp,
  summarize,
  detectNetem,
} from 'lagmeter';
import type { LinkProfile, LossModel, PacketRecord, RelayPath } from 'lagmeter';

const profile = (p: Partial<LinkProfile>): LinkProfile => ({ ...cleanProfile(), ...p });

function lossPattern(m: LossModel, n: number, seed: number): boolean[] {
  const lp = new LossProcess(m, new Prng(seed, 'down/loss'));
  return Array.from({ length: n }, () => lp.drop());
}

describe('loss models', () => {
  it('Bernoulli rate within 4σ over 20k packets, identical for the same seed, different for another', () => {
    const n = 20_000;
    for (const p of [0.01, 0.05, 0.2]) {
      const a = lossPattern({ model: 'bernoulli', p }, n, 42);
      const rate = a.filter(Boolean).length / n;
      expect(Math.abs(rate - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / n));
      expect(lossPattern({ model: 'bernoulli', p }, n, 42)).toEqual(a);
      expect(lossPattern({ model: 'bernoulli', p }, n, 43)).not.toEqual(a);
    }
  });

  it('Gilbert–Elliott: loss rate p/(p+r), mean burst length 1/r, deterministic per seed', () => {
    const n = 200_000;
    const m: LossModel = { model: 'gilbert', p: 0.01, r: 0.3 };
    const a = lossPattern(m, n, 7);
    const rate = a.filter(Boolean).length / n;
    expect(expectedLoss(m)).toBeCloseTo(0.01 / 0.31, 10);
    expect(Math.abs(rate - expectedLoss(m)) / expectedLoss(m)).toBeLessThan(0.1);
    const bursts: number[] = [];
    let run = 0;
    for (const x of a) {
      if (x) run++;
      else if (run > 0) {
        bursts.push(run);
        run = 0;
      }
    }
    const meanBurst = bursts.reduce((s, b) => s + b, 0) / bursts.length;
    expect(meanBurst).toBeGreaterThan(3.33 * 0.9);
    expect(meanBurst).toBeLessThan(3.33 * 1.1);
    expect(lossPattern(m, 20_000, 7)).toEqual(a.slice(0, 20_000));
    // Also over ~20k packets the rate is within statistical tolerance (bursty: ~4σ ≈ 36 %).
    const b = lossPattern(m, 20_000, 11);
    expect(Math.abs(b.filter(Boolean).length / 20_000 - expectedLoss(m)) / expectedLoss(m)).toBeLessThan(0.4);
  });

  it('Gilbert with partial loss in each state', () => {
    const m: LossModel = { model: 'gilbert', p: 0.05, r: 0.2, lossInBad: 0.5, lossInGood: 0.01 };
    const n = 200_000;
    const rate = lossPattern(m, n, 3).filter(Boolean).length / n;
    expect(expectedLoss(m)).toBeCloseTo(0.2 * 0.5 + 0.8 * 0.01, 10);
    expect(Math.abs(rate - expectedLoss(m)) / expectedLoss(m)).toBeLessThan(0.08);
  });
});

describe('Link: delay, jitter, clamp, rate', () => {
  const arrivals = (n: number, gapMs: number) => Array.from({ length: n }, (_, i) => 1000 + i * gapMs);

  it('fixed delay is exact', () => {
    const l = new Link(profile({ delayMs: 40 }), 1, 'down');
    for (const t of arrivals(100, 0.3)) {
      const d = l.admit(t, 1200);
      expect(d.drop).toBeUndefined();
      if (d.drop === undefined) expect(d.due - t).toBeCloseTo(40, 9);
    }
  });

  it('jitter with reorder: extra delay ~ U(-J, +J) (mean 0, sd J/√3), departures reorder', () => {
    const l = new Link(profile({ delayMs: 40, jitterMs: 10, reorder: true }), 5, 'down');
    const ts = arrivals(20_000, 1);
    const dues = ts.map((t) => {
      const d = l.admit(t, 1000);
      return d.drop === undefined ? d.due : NaN;
    });
    const extra = dues.map((d, i) => d - ts[i] - 40);
    const s = summarize(extra);
    expect(Math.abs(s.mean)).toBeLessThan(0.2);
    expect(s.min).toBeGreaterThanOrEqual(-10);
    expect(s.max).toBeLessThanOrEqual(10);
    const sd = Math.sqrt(extra.reduce((a, x) => a + (x - s.mean) ** 2, 0) / extra.length);
    expect(sd / (10 / Math.sqrt(3))).toBeGreaterThan(0.97);
    expect(sd / (10 / Math.sqrt(3))).toBeLessThan(1.03);
    let reordered = 0;
    for (let i = 1; i < dues.length; i++) if (dues[i] < dues[i - 1]) reordered++;
    expect(reordered).toBeGreaterThan(1000);
  });

  it('jitter without reorder: departures never decrease, delay ≥ delay−J, median shifted up by the clamp', () => {
    const l = new Link(profile({ delayMs: 40, jitterMs: 10 }), 5, 'down');
    const ts = arrivals(20_000, 1);
    let prev = -Infinity;
    const delays: number[] = [];
    for (const t of ts) {
      const d = l.admit(t, 1000);
      if (d.drop !== undefined) throw new Error('dropped');
      expect(d.due).toBeGreaterThanOrEqual(prev);
      prev = d.due;
      delays.push(d.due - t);
    }
    const s = summarize(delays);
    expect(s.min).toBeGreaterThanOrEqual(30);
    expect(s.max).toBeLessThanOrEqual(50);
    // At 1 packet/ms the clamp (head-of-line) pushes the median well above 40.
    expect(s.p50).toBeGreaterThan(40);
    // Sparse packets (one per 50 ms > 2J): the clamp never binds, median ≈ delay.
    const sparse = new Link(profile({ delayMs: 40, jitterMs: 10 }), 5, 'down');
    const sd = summarize(
      arrivals(5000, 50).map((t) => {
        const d = sparse.admit(t, 1000);
        return d.drop === undefined ? d.due - t : NaN;
      }),
    );
    expect(Math.abs(sd.p50 - 40)).toBeLessThan(0.5);
    expect(sd.min).toBeGreaterThanOrEqual(30);
  });

  it('normal jitter: sd = J', () => {
    const l = new Link(profile({ delayMs: 100, jitterMs: 5, reorder: true, jitterDistribution: 'normal' }), 9, 'up');
    const ex = arrivals(20_000, 1).map((t) => {
      const d = l.admit(t, 100);
      return d.drop === undefined ? d.due - t - 100 : NaN;
    });
    const m = ex.reduce((a, b) => a + b, 0) / ex.length;
    const sd = Math.sqrt(ex.reduce((a, x) => a + (x - m) ** 2, 0) / ex.length);
    expect(Math.abs(m)).toBeLessThan(0.15);
    expect(Math.abs(sd - 5)).toBeLessThan(0.15);
  });

  it('rate: serialization at rateBps (payload + 28 B overhead), drop-tail queue', () => {
    // 8 Mbit/s, 972 B payload + 28 B = 8000 bits → 1 ms per packet.
    const l = new Link(profile({ delayMs: 10, rateBps: 8e6, queuePackets: 50 }), 1, 'down');
    const res = Array.from({ length: 200 }, (_, i) => l.admit(1000 + i * 0.001, 972)); // a 0.2 ms burst
    const kept = res.filter((d) => d.drop === undefined);
    const drops = res.filter((d) => d.drop === 'queue');
    expect(drops.length).toBe(150);
    expect(kept.length).toBe(50);
    const dues = kept.map((d) => (d.drop === undefined ? d.due : NaN));
    for (let i = 1; i < dues.length; i++) expect(dues[i] - dues[i - 1]).toBeCloseTo(1, 6);
    expect(dues[0]).toBeCloseTo(1000 + 1 + 10, 6);
    // Once the queue has drained, packets are admitted again.
    expect(l.admit(1100, 972).drop).toBeUndefined();
  });

  it('live profile change keeps order (no reorder) when the delay drops', () => {
    const l = new Link(profile({ delayMs: 50 }), 1, 'down');
    const a = l.admit(0, 100);
    l.set({ delayMs: 10 });
    const b = l.admit(1, 100);
    const c = l.admit(100, 100);
    if (a.drop !== undefined || b.drop !== undefined || c.drop !== undefined) throw new Error('drop');
    expect(b.due).toBe(a.due); // clamped
    expect(c.due).toBe(110);
    expect(() => l.set({ delayMs: -1 })).toThrow(RangeError);
  });
});

describe('parseLinkArgs', () => {
  it('parses CLI strings into two profiles', () => {
    const r = parseLinkArgs({ delayDown: '20ms', delayUp: '5ms', jitter: '5ms', loss: '1%', rate: '20mbit' });
    expect(r.down).toEqual({
      delayMs: 20,
      jitterMs: 5,
      reorder: false,
      loss: { model: 'bernoulli', p: 0.01 },
      rateBps: 20e6,
      queuePackets: 1000,
    });
    expect(r.up.delayMs).toBe(5);
    const g = parseLinkArgs({ delay: '40ms', lossModel: 'gilbert:0.01,0.3', reorder: true });
    expect(g.down.loss).toEqual({ model: 'gilbert', p: 0.01, r: 0.3 });
    expect(g.up.delayMs).toBe(40);
    expect(g.up.reorder).toBe(true);
    expect(parseLinkArgs({ loss: 'gilbert:1%,30%,100%,0%' }).down.loss).toEqual({
      model: 'gilbert',
      p: 0.01,
      r: 0.3,
      lossInBad: 1,
      lossInGood: 0,
    });
    expect(parseLinkArgs({}).down).toEqual(cleanProfile());
    expect(() => parseLinkArgs({ loss: '5%', lossModel: 'gilbert:0.01,0.3' })).toThrow(/loss/);
    expect(() => parseLinkArgs({ loss: '150%' })).toThrow(RangeError);
    expect(() => parseLinkArgs({ delay: 'soon' })).toThrow(RangeError);
  });

  it('units', () => {
    expect(parseRate('20mbit')).toBe(20e6);
    expect(parseRate('500kbit')).toBe(5e5);
    expect(parseRate('20Mbps')).toBe(20e6);
    expect(parseRate('2MBps')).toBe(16e6);
    expect(parseRate('1gbit')).toBe(1e9);
    expect(parseLinkArgs({ delay: '500us' }).down.delayMs).toBe(0.5);
    expect(parseLinkArgs({ delay: '0.1s' }).down.delayMs).toBe(100);
    expect(parseLoss('0')).toEqual({ model: 'none' });
    expect(parseLoss('bernoulli:2%')).toEqual({ model: 'bernoulli', p: 0.02 });
  });
});

describe('netem backend (not exercisable here)', () => {
  it('maps profiles to netem arguments with the same semantics', () => {
    expect(netemArgs(parseLinkArgs({ delay: '20ms', jitter: '5ms', loss: '1%', rate: '20mbit' }).down)).toEqual(
      'netem limit 1000 delay 20ms 5ms loss random 1% rate 20000000bit'.split(' '),
    );
    expect(netemArgs(parseLinkArgs({ lossModel: 'gilbert:0.01,0.3' }).up)).toEqual(
      'netem limit 1000 loss gemodel 1% 30% 100% 0%'.split(' '),
    );
  });
  it('detectNetem answers a boolean (false on a kernel without sch_netem)', async () => {
    expect(typeof (await detectNetem())).toBe('boolean');
  });
});

describe('candidate rewriting', () => {
  const path: RelayPath = {
    host: { address: '127.0.0.1', port: 54321 },
    client: { address: '127.0.0.1', port: 40000 },
    hostFacing: { address: '127.0.0.1', port: 50001 },
    clientFacing: { address: '127.0.0.1', port: 50002 },
  };
  const chrome = 'candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host generation 0 ufrag abcd network-id 1';

  it('host candidate → clientFacing; client candidate → hostFacing; everything else kept', () => {
    expect(rewriteCandidate(chrome, path, 'host')).toBe(
      'candidate:1 1 udp 2122260223 127.0.0.1 50002 typ host generation 0 ufrag abcd network-id 1',
    );
    const c =
      'a=candidate:3 1 UDP 2122260223 127.0.0.1 40000 typ host generation 0 ufrag wxyz network-id 1 network-cost 10\r\n';
    expect(rewriteCandidate(c, path, 'client')).toBe(
      'a=candidate:3 1 UDP 2122260223 127.0.0.1 50001 typ host generation 0 ufrag wxyz network-id 1 network-cost 10\r\n',
    );
    expect(parseCandidate(chrome)).toMatchObject({ transport: 'udp', address: '127.0.0.1', port: 54321, type: 'host' });
  });

  it('drops TCP, non-loopback, other ports, non-host types; passes end-of-candidates', () => {
    expect(
      rewriteCandidate('candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0', path, 'host'),
    ).toBeNull();
    expect(
      rewriteCandidate('candidate:4 1 udp 2122260223 192.168.1.5 54321 typ host generation 0', path, 'host'),
    ).toBeNull();
    expect(
      rewriteCandidate('candidate:5 1 udp 2122260223 127.0.0.1 11111 typ host generation 0', path, 'host'),
    ).toBeNull();
    expect(
      rewriteCandidate(
        'candidate:6 1 udp 1686052607 127.0.0.1 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0',
        path,
        'host',
      ),
    ).toBeNull();
    expect(
      rewriteCandidate('candidate:7 1 udp 2122260223 abcd.local 54321 typ host generation 0', path, 'host'),
    ).toBeNull();
    expect(rewriteCandidate('', path, 'host')).toBe('');
    expect(rewriteCandidate('garbage', path, 'host')).toBeNull();
  });

  it('rewrites an SDP blob', () => {
    const sdp = [
      'v=0',
      'm=video 9 UDP/TLS/RTP/SAVPF 96',
      'a=candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host generation 0 network-id 1',
      'a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1',
      'a=candidate:3 1 udp 2122262783 ::1 54322 typ host generation 0 network-id 2',
      '',
    ].join('\r\n');
    expect(rewriteSdp(sdp, path, 'host')).toBe(
      [
        'v=0',
        'm=video 9 UDP/TLS/RTP/SAVPF 96',
        'a=candidate:1 1 udp 2122260223 127.0.0.1 50002 typ host generation 0 network-id 1',
        '',
      ].join('\r\n'),
    );
  });
});

describe('RTP parsing and frame grouping', () => {
  it('parses RTP, rejects RTCP/STUN/DTLS', () => {
    const p = buildRtp({ ssrc: 0xdeadbeef, seq: 65535, ts: 0xfffffff0, marker: true, pt: 96 }, 100);
    expect(parseRtp(p)).toEqual({ ssrc: 0xdeadbeef, seq: 65535, ts: 0xfffffff0, marker: true, pt: 96 });
    const rtcp = Buffer.from(p);
    rtcp[1] = 200; // SR
    expect(parseRtp(rtcp)).toBeUndefined();
    rtcp[1] = 206; // PSFB (PLI)
    expect(parseRtp(rtcp)).toBeUndefined();
    expect(parseRtp(Buffer.from([0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6]))).toBeUndefined(); // STUN
    expect(parseRtp(Buffer.from([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeUndefined(); // DTLS
    expect(parseRtp(Buffer.alloc(8, 0x80))).toBeUndefined();
  });

  it('groups packets into frames by (ssrc, RTP ts)', () => {
    const recs: PacketRecord[] = [
      { dir: 'down', seq: 0, size: 1000, tIn: 10, tOut: 50, rtp: { ssrc: 1, seq: 1, ts: 3000, marker: false, pt: 96 } },
      {
        dir: 'down',
        seq: 1,
        size: 1000,
        tIn: 11,
        dropped: 'loss',
        rtp: { ssrc: 1, seq: 2, ts: 3000, marker: false, pt: 96 },
      },
      { dir: 'down', seq: 2, size: 500, tIn: 12, tOut: 52, rtp: { ssrc: 1, seq: 3, ts: 3000, marker: true, pt: 96 } },
      { dir: 'down', seq: 3, size: 800, tIn: 27, tOut: 67, rtp: { ssrc: 1, seq: 4, ts: 6000, marker: true, pt: 96 } },
      { dir: 'up', seq: 0, size: 80, tIn: 13, tOut: 14 },
    ];
    const f = frameTimings(recs);
    expect(f).toHaveLength(2);
    expect(f[0]).toMatchObject({
      ssrc: 1,
      rtpTs: 3000,
      packets: 3,
      lost: 1,
      bytes: 2500,
      marker: true,
      firstIn: 10,
      lastIn: 12,
      firstOut: 50,
      lastOut: 52,
    });
  });
});
