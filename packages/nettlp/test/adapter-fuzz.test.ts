/**
 * The adapter survives any datagram: ≥ 200k (PMI_LONG=1: 1M) seeded random and mutated
 * datagrams through the socket-free AdapterCore, then 20k over real UDP. Checks: never throws,
 * every datagram lands in exactly one counter, every reply is a well-formed completion whose
 * data equals the source, and a guard source sees no access outside the source's ranges.
 */
import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import {
  CPL_SC,
  CPL_UR,
  DECODE_OK,
  MAX_DATAGRAM,
  Tlp,
  TlpKind,
  completionDataBytes,
  decodeTlp,
  encodeCompletion,
  encodeMemRead,
  encodeMemWrite,
} from '../src/codec/tlp.js';
import { AdapterCore, parseCidrList, type AdapterStats, type Peer } from '../src/adapter/index.js';
import {
  CLIENT_IP,
  GuardSource,
  MemSource,
  Requester,
  randomData,
  readVia,
  seeded,
  sleep,
  startTestAdapter,
} from './adapter-helpers.js';

const G4 = 0x1_0000_0000;
const LONG = process.env.PMI_LONG === '1';
const N_CORE = LONG ? 10_000_000 : 1_000_000;
const N_UDP = 20_000;

function makeSource(sync: boolean): MemSource {
  return new MemSource(
    [
      { start: 0x1000, data: randomData(21, 0x8000 + 3) }, // odd end
      { start: G4 + 0x2040, data: randomData(22, 0x3000) }, // above 4 GiB, unaligned start
    ],
    sync,
  );
}

/** Interesting addresses: range edges ± a few bytes, 4 KiB/4 GiB edges, absurd values. */
const EDGES = [
  0,
  4,
  0xffc,
  0x1000,
  0x1001,
  0x1ffc,
  0x8ffc,
  0x9000,
  0x9002,
  0x9003,
  0x9004,
  0xfffffffc,
  G4,
  G4 + 0x2000,
  G4 + 0x2040,
  G4 + 0x203c,
  G4 + 0x5000,
  G4 + 0x503c,
  G4 + 0x5040,
  2 ** 52 - 4,
  2 ** 40,
];

function templates(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const r = seeded(99);
  for (let i = 0; i < 64; i++) {
    const b = new Uint8Array(MAX_DATAGRAM);
    const edge = EDGES[i % EDGES.length] + Math.floor(r() * 9) - 4;
    const addr = Math.max(0, Math.min(2 ** 52 - 1, edge));
    const count = 1 + Math.floor(r() * (r() < 0.5 ? 16 : 4096));
    let n: number;
    switch (i % 4) {
      case 0:
      case 1:
        n = encodeMemRead(b, addr, count, 0x1b00, i);
        break;
      case 2:
        n = encodeMemWrite(b, addr, randomData(i, 1 + (count % 300)), 0x1b00, i);
        break;
      default:
        n = encodeCompletion(b, CPL_SC, 0, 0x1b00, i, count, addr & 0x7f, randomData(i, Math.min(count, 256)));
    }
    out.push(b.slice(0, n));
  }
  return out;
}

interface Checker {
  replies: number;
  problems: string[];
  reply: (buf: Uint8Array, len: number, to: Peer) => void;
}

/** Validates every reply as a completion; SC data must equal the source bytes at the request's address. */
function makeChecker(
  src: MemSource,
  mps: number,
  current: () => { addr: number; byteLen: number } | undefined,
): Checker {
  const t = new Tlp();
  const c: Checker = {
    replies: 0,
    problems: [],
    reply: (buf, len) => {
      c.replies++;
      const rc = decodeTlp(buf, len, t);
      const bad = (m: string) => c.problems.length < 20 && c.problems.push(m);
      if (rc !== DECODE_OK || t.kind !== TlpKind.Completion) return void bad(`reply does not decode (${rc})`);
      if (len !== t.payloadOffset + t.payloadLength) bad('reply has trailing bytes');
      if (t.payloadLength > mps) bad(`reply payload ${t.payloadLength} > MPS`);
      const req = current();
      if (t.status !== CPL_SC && t.payloadLength !== 0) bad('error completion with data');
      if (req && t.status === CPL_SC && t.payloadLength > 0) {
        const n = completionDataBytes(t);
        if (req.byteLen === 0) return; // zero-length read: no valid bytes
        const off = req.byteLen - t.byteCount;
        if ((req.addr + off) % 128 !== t.lowerAddress) bad('LowerAddress mismatch');
        const p = t.payloadOffset + (t.lowerAddress & 3);
        for (let i = 0; i < n; i++) {
          if (buf[p + i] !== src.byteAt(req.addr + off + i)) {
            bad(`data mismatch at 0x${(req.addr + off + i).toString(16)}`);
            break;
          }
        }
      }
    },
  };
  return c;
}

function accounted(s: AdapterStats): number {
  const m = s.malformed;
  return (
    s.denied +
    m.truncated +
    m.unsupported_type +
    m.bad_length +
    m.bad_address +
    m.reserved_bits +
    s.requests_read +
    s.requests_write
  );
}

/** Produce datagram #i into buf; returns its length. Seeded, cheap. */
function mutator(seed: number) {
  const r = seeded(seed);
  const tpl = templates();
  const ri = (n: number) => Math.floor(r() * n);
  return (buf: Uint8Array): number => {
    const mode = r();
    if (mode < 0.1) {
      // Fully random bytes, random length (often short).
      const len = ri(r() < 0.8 ? 40 : MAX_DATAGRAM + 64);
      for (let i = 0; i < len; i++) buf[i] = ri(256);
      if (len > 6 && r() < 0.5) buf[6] = [0x00, 0x20, 0x40, 0x60, 0x0a, 0x4a][ri(6)];
      return len;
    }
    const t = tpl[ri(tpl.length)];
    buf.set(t);
    let len = t.length;
    if (mode < 0.25) return len; // valid as built
    const muts = 1 + ri(3);
    for (let k = 0; k < muts; k++) {
      const what = ri(9);
      if (what === 0)
        buf[ri(len)] ^= 1 << ri(8); // flip a bit anywhere
      else if (what === 1)
        buf[6 + ri(Math.min(16, len - 6))] ^= 1 << ri(8); // flip a header bit
      else if (what === 2)
        len = ri(len + 1); // truncate
      else if (what === 3) {
        const add = ri(r() < 0.9 ? 8 : 5000); // extend
        const end = Math.min(buf.length, len + add);
        for (let i = len; i < end; i++) buf[i] = ri(256);
        len = end;
      } else if (what === 4) {
        buf[8] = (buf[8] & 0xfc) | ri(4); // random Length
        buf[9] = ri(256);
      } else if (what === 5)
        buf[6] = ri(256); // random fmt/type
      else if (what === 6)
        buf[13] = ri(256); // random byte enables
      else if (what === 7) {
        // random address word(s)
        for (let i = 14; i < 22 && i < len; i++) buf[i] = r() < 0.5 ? ri(256) : [0, 0xff][ri(2)];
      } else buf[8] ^= 0x0c; // AT bits
    }
    return len;
  };
}

function runCore(n: number, seed: number, sync: boolean, writable: boolean) {
  const mem = makeSource(sync);
  const guard = new GuardSource(mem, sync);
  const core = new AdapterCore({
    source: guard,
    writable,
    allow: parseCidrList('127.0.0.0/8'),
    mps: 256,
    rcb: 64,
  });
  const req = new Tlp();
  const cur = { addr: 0, byteLen: 0 };
  // Replies of reads queued behind posted writes (writable) or of async reads come later:
  // their request is no longer `cur`, so only their structure is checked.
  const checker = makeChecker(mem, 256, () => (sync && !writable ? cur : undefined));
  const gen = mutator(seed);
  const buf = new Uint8Array(MAX_DATAGRAM + 64);
  const peers: Peer[] = [
    { address: '127.0.0.1', port: 12288 },
    { address: '127.9.9.9', port: 1 },
    { address: '10.0.0.1', port: 12288 }, // denied
    { address: 'not-an-ip', port: 0 }, // denied
  ];
  const r = seeded(seed ^ 0x5555);
  let bytesAsked = 0;
  let readsOk = 0;
  for (let i = 0; i < n; i++) {
    const len = gen(buf);
    if (decodeTlp(buf, len, req) === DECODE_OK) {
      cur.addr = req.address;
      cur.byteLen = req.byteLen;
    }
    const before = checker.replies;
    const p = r() < 0.98 ? peers[i & 1] : peers[2 + (i & 1)];
    core.handle(buf, len, p, checker.reply);
    if (sync && checker.replies > before && req.kind === TlpKind.MemRead) {
      readsOk++;
      bytesAsked += req.byteLen;
    }
  }
  return { core, guard, checker, readsOk, bytesAsked };
}

describe('fuzz: AdapterCore survives any datagram', () => {
  it(`${N_CORE} seeded random/mutated datagrams (sync source, read-only)`, () => {
    const t0 = performance.now();
    const { core, guard, checker } = runCore(N_CORE, 1, true, false);
    const ms = performance.now() - t0;
    const s = core.stats;
    expect(guard.violations).toEqual([]);
    expect(guard.violationCount).toBe(0);
    expect(checker.problems).toEqual([]);
    expect(accounted(s)).toBe(N_CORE);
    // The mix exercises every path.
    expect(s.requests_read).toBeGreaterThan(N_CORE / 20);
    expect(s.requests_write).toBeGreaterThan(N_CORE / 50);
    expect(s.bytes_read).toBeGreaterThan(0);
    expect(s.unsupported_request).toBeGreaterThan(0);
    expect(s.writes_dropped_readonly).toBeGreaterThan(0);
    expect(s.denied).toBeGreaterThan(0);
    for (const [k, v] of Object.entries(s.malformed)) expect(v, k).toBeGreaterThan(0);
    console.log(`fuzz: ${N_CORE} datagrams in ${ms.toFixed(0)} ms; ${checker.replies} replies;`, JSON.stringify(s));
  });

  it('200k datagrams with writes applied (writable); accesses stay in range', async () => {
    const { core, guard, checker } = runCore(200_000, 2, true, true);
    await core.idle();
    expect(guard.violations).toEqual([]);
    expect(checker.problems).toEqual([]);
    expect(accounted(core.stats)).toBe(200_000);
    expect(core.stats.bytes_written).toBeGreaterThan(0);
    expect(core.stats.errors).toBe(0);
  });

  it('20k datagrams through the async (readBatch) path', async () => {
    const { core, guard, checker } = runCore(20_000, 3, false, true);
    await core.idle();
    expect(guard.violations).toEqual([]);
    expect(checker.problems).toEqual([]);
    expect(accounted(core.stats)).toBe(20_000);
    expect(checker.replies).toBeGreaterThan(0);
  });
});

describe('fuzz over real UDP', () => {
  it(`${N_UDP} mutated datagrams to the sockets; the adapter keeps serving`, async () => {
    const mem = makeSource(true);
    const guard = new GuardSource(mem, true);
    const a = await startTestAdapter({ source: guard, tags: 8 });
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, CLIENT_IP, () => r()));
    let replies = 0;
    sock.on('message', () => replies++);
    const gen = mutator(7);
    const buf = new Uint8Array(MAX_DATAGRAM + 64);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      let sent = 0;
      for (let i = 0; i < N_UDP; i++) {
        let len = gen(buf);
        if (len > 9000) len = 9000; // stay under what the loopback MTU carries in one datagram
        sock.send(buf.subarray(0, len), a.ports.first + (i % 8), '127.0.0.2');
        sent++;
        if (i % 128 === 127) {
          for (let k = 0; k < 500 && accounted(a.stats()) < sent; k++) await sleep(1);
        }
      }
      for (let k = 0; k < 2000 && accounted(a.stats()) < sent; k++) await sleep(1);
      const s = a.stats();
      expect(accounted(s)).toBe(sent);
      expect(s.completions).toBeGreaterThan(0);
      expect(guard.violations).toEqual([]);
      // Still serving correct data afterwards.
      const req = await Requester.open(CLIENT_IP, a.ports.first + 3);
      try {
        const res = await readVia(req, 0x1ff5, 7, 3);
        expect(res.status).toBe(CPL_SC);
        expect([...res.data]).toEqual([...Array(7).keys()].map((k) => mem.byteAt(0x1ff5 + k)));
        const ur = await readVia(req, 0x9001, 4, 3);
        expect(ur.status).toBe(CPL_UR);
      } finally {
        await req.close();
      }
      await sleep(20);
      expect(unhandled).toEqual([]);
      expect(replies).toBeGreaterThan(0);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await new Promise<void>((r) => sock.close(() => r()));
      await a.close();
    }
  });
});
