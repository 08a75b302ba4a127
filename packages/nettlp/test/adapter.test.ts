/**
 * The software adapter over real UDP on loopback: a raw requester (node:dgram + codec) on
 * 127.0.0.1:portBase+tag talks to the adapter on 127.0.0.2:portBase+tag. Truth is the bytes
 * of a file written here and the PCIe/NetTLP rules, never the adapter's own output.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPmiError, type PhysicalMemory } from '@pmi/core';
import { openSource } from '@pmi/core';
import '@pmi/sources';
import { writeLimeFile } from '@pmi/sources';
import { CPL_SC, CPL_UR, FMT_CPL, MAX_DATAGRAM, encodeMemWrite, encodeMemRead } from '../src/codec/tlp.js';
import { startAdapter, type NetTlpAdapter } from '../src/adapter/index.js';
import {
  ADAPTER_IP,
  CLIENT_IP,
  Requester,
  checkSplit,
  expectedSplit,
  randomData,
  readVia,
  sleep,
  startTestAdapter,
  tmpDir,
} from './adapter-helpers.js';

const dir = tmpDir();
const SIZE = (1 << 20) - 96; // the end is not page-aligned: reads can straddle it legally
const image = randomData(1, SIZE);
const rawPath = path.join(dir, 'mem.raw');
fs.writeFileSync(rawPath, image);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function withAdapter<T>(
  source: PhysicalMemory,
  opts: Partial<Parameters<typeof startAdapter>[0]>,
  tags: number[],
  f: (a: NetTlpAdapter, reqs: Requester[]) => Promise<T>,
  clientIp = CLIENT_IP,
): Promise<T> {
  const a = await startTestAdapter({ source, tags: 8, ...opts });
  const reqs: Requester[] = [];
  try {
    for (const t of tags) reqs.push(await Requester.open(clientIp, a.ports.first + t));
    return await f(a, reqs);
  } finally {
    for (const r of reqs) await r.close();
    await a.close();
  }
}

describe('MRd → CplD over UDP', () => {
  let src: PhysicalMemory;
  beforeAll(async () => {
    src = await openSource(`raw:${rawPath}`);
  });
  afterAll(() => src.close());

  // [addr, count]: aligned and unaligned starts/ends, 1 byte, whole pages, RCB/MPS edges.
  const cases: [number, number][] = [
    [0, 4],
    [0, 1],
    [3, 1],
    [0x1001, 2],
    [0x1003, 2],
    [0x2f000, 16],
    [0x2000, 4096],
    [0x3001, 4095],
    [0x3000, 4095],
    [0x4003, 61],
    [0x4003, 62],
    [0x403f, 1],
    [0x403f, 2],
    [0x5000, 64],
    [0x5000, 65],
    [0x5010, 512],
    [0x5ffc, 4],
    [0x6001, 300],
    [0x7005, 2047],
    [Math.floor(SIZE / 4096) * 4096 - 4096, 4096],
    [SIZE - 1, 1],
  ];

  for (const [mps, rcb] of [
    [256, 64],
    [128, 128],
    [512, 64],
    [4096, 128],
  ]) {
    it(`matches the file, split per RCB ${rcb} / MPS ${mps}`, async () => {
      await withAdapter(src, { mps, rcb }, [0, 5], async (a, [r0, r5]) => {
        for (const [i, [addr, count]] of cases.entries()) {
          const req = i % 2 === 0 ? r0 : r5;
          const tag = i % 2 === 0 ? 0 : 5;
          const res = await readVia(req, addr, count, tag);
          expect(res.status, `read ${addr.toString(16)}+${count}`).toBe(CPL_SC);
          expect(
            Buffer.from(res.data).equals(Buffer.from(image.subarray(addr, addr + count))),
            `data ${addr}+${count}`,
          ).toBe(true);
          expect(checkSplit(addr, count, res.cpls, mps, rcb), `split ${addr}+${count}`).toEqual([]);
          for (const c of res.cpls) expect(c.completer).toBe(0);
        }
        const s = a.stats();
        expect(s.requests_read).toBe(cases.length);
        expect(s.bytes_read).toBe(cases.reduce((n, [, c]) => n + c, 0));
        expect(s.unsupported_request).toBe(0);
      });
    });
  }

  it('random reads (seeded) all match the file and the splitting rules', async () => {
    await withAdapter(src, {}, [1, 2, 3], async (a, reqs) => {
      let seed = 7;
      const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
      for (let i = 0; i < 300; i++) {
        const addr = Math.floor(rnd() * (SIZE - 4096));
        const maxLen = 4096 - (addr % 4096);
        const count = 1 + Math.floor(rnd() * Math.min(maxLen, rnd() < 0.5 ? 64 : 4096));
        const k = i % 3;
        const res = await readVia(reqs[k], addr, count, k + 1);
        expect(res.status).toBe(CPL_SC);
        expect(Buffer.from(res.data).equals(Buffer.from(image.subarray(addr, addr + count)))).toBe(true);
        expect(checkSplit(addr, count, res.cpls, 256, 64)).toEqual([]);
      }
      expect(a.stats().completions).toBeGreaterThan(300);
    });
  });

  it('answers a hand-built LibTLP MRd (spec vector layout) with the file bytes', async () => {
    await withAdapter(src, {}, [3], async (_a, [r]) => {
      // 00 00 00 04 | 1b 00 03 ff | 00 02 f0 00 : read 4 DW at 0x2f000, requester 1b:00, tag 3
      const wire = Buffer.from('000000000000' + '00000004' + '1b0003ff' + '0002f000', 'hex');
      r.inbox.length = 0;
      r.send(wire);
      expect(await r.waitFor(() => r.inbox.length >= 1)).toBe(true);
      const raw = r.inbox[0].raw;
      // 4a 00 00 04 | 00 00 00 10 | 1b 00 03 00 | 16 data bytes (the root-complex CplD of the spec)
      expect(Buffer.from(raw.subarray(6, 18)).toString('hex')).toBe('4a000004' + '00000010' + '1b000300');
      expect(Buffer.from(raw.subarray(18)).equals(Buffer.from(image.subarray(0x2f000, 0x2f010)))).toBe(true);
      expect(raw.length).toBe(6 + 12 + 16);
    });
  });

  it('echoes TC and attributes of the request in its completions', async () => {
    await withAdapter(src, {}, [0], async (_a, [r]) => {
      const buf = new Uint8Array(64);
      const n = encodeMemRead(buf, 0x100, 8, 0x0100, 0);
      buf[7] |= 0x30; // TC 3
      buf[8] |= 0x20; // relaxed ordering
      r.inbox.length = 0;
      r.send(buf, n);
      expect(await r.waitFor(() => r.inbox.length >= 1)).toBe(true);
      expect(r.inbox[0].raw[7] >>> 4).toBe(3);
      expect((r.inbox[0].raw[8] >>> 4) & 3).toBe(2);
    });
  });

  it('a read leaving the source → one Cpl UR with ByteCount = request length, no data', async () => {
    await withAdapter(src, {}, [0], async (a, [r]) => {
      for (const [addr, count] of [
        [SIZE - 4, 8],
        [SIZE, 4],
        [0x200000, 4096],
        [0x7_0000_0000, 16],
      ]) {
        const res = await readVia(r, addr, count, 0);
        expect(res.status).toBe(CPL_UR);
        expect(res.cpls.length).toBe(1);
        expect(res.cpls[0].raw[6]).toBe(FMT_CPL);
        expect(res.cpls[0].byteCount).toBe(count);
        expect(res.cpls[0].data.length).toBe(0);
        expect(res.cpls[0].raw.length).toBe(18);
      }
      await r.quiet(50);
      expect(r.rawInbox.length).toBe(4);
      expect(a.stats().unsupported_request).toBe(4);
    });
  });

  it('drops (no reply) and counts an MRd crossing a 4 KiB boundary; keeps serving', async () => {
    await withAdapter(src, {}, [0], async (a, [r]) => {
      r.sendRead(0x1ffe, 4, 0); // crosses 0x2000
      r.sendRead(0x1800, 4096, 0);
      await r.quiet(100);
      expect(r.rawInbox.length).toBe(0);
      expect(a.stats().malformed.bad_length).toBe(2);
      const res = await readVia(r, 0x1ffc, 4, 0);
      expect(Buffer.from(res.data).equals(Buffer.from(image.subarray(0x1ffc, 0x2000)))).toBe(true);
    });
  });
});

describe('addresses above 4 GiB (4DW MRd)', () => {
  const G4 = 0x1_0000_0000;
  const low = randomData(2, 0xffd0);
  const high = randomData(3, 0x20000);
  const limePath = path.join(dir, 'mem.lime');
  let src: PhysicalMemory;
  beforeAll(async () => {
    writeLimeFile(limePath, [
      { start: 0, data: low },
      { start: G4 + 0x100040, data: high },
    ]);
    src = await openSource(`lime:${limePath}`);
  });
  afterAll(() => src.close());

  it('reads above 4 GiB match, and the gap and the ends answer UR', async () => {
    await withAdapter(src, {}, [0, 1], async (a, [r0, r1]) => {
      const base = G4 + 0x100040;
      for (const [off, count] of [
        [0xfc0, 4096],
        [1, 3],
        [0x1fff, 1],
        [0x10003, 2000],
        [0x1efc0, 4096],
      ]) {
        const res = await readVia(r0, base + off, count, 0);
        expect(res.status).toBe(CPL_SC);
        expect(Buffer.from(res.data).equals(Buffer.from(high.subarray(off, off + count)))).toBe(true);
        expect(checkSplit(base + off, count, res.cpls, 256, 64)).toEqual([]);
        expect(res.cpls[0].raw[6]).toBe(0x4a);
      }
      const lowRes = await readVia(r1, 0xffc0, 16, 1);
      expect(Buffer.from(lowRes.data).equals(Buffer.from(low.subarray(0xffc0, 0xffd0)))).toBe(true);
      for (const [addr, count] of [
        [0x10000, 4], // gap after the low range
        [0xffd0, 4], // just past the end of the low range
        [0xffcc, 8], // straddles the end of the low range
        [G4, 64], // in the gap above 4 GiB
        [base - 4, 8], // straddles the start of the high range
        [base + 0x20000 - 2, 4], // straddles the end
        [base + 0x20000, 1024],
      ]) {
        const res = await readVia(r1, addr, count, 1);
        expect(res.status, `0x${addr.toString(16)}+${count}`).toBe(CPL_UR);
        expect(res.cpls[0].byteCount).toBe(count);
      }
      expect(a.stats().unsupported_request).toBe(7);
    });
  });

  it('a 4DW MRd carrying an address below 4 GiB is malformed (dropped, counted)', async () => {
    await withAdapter(src, {}, [0], async (a, [r]) => {
      const wire = Buffer.from('000000000000' + '20000001' + '1b00000f' + '00000000' + '00001000', 'hex');
      r.send(wire);
      await r.quiet(100);
      expect(r.rawInbox.length).toBe(0);
      expect(a.stats().malformed.bad_address).toBe(1);
    });
  });

  it('a sparse raw image above 4 GiB', async () => {
    const sparse = path.join(dir, 'sparse.raw');
    const fd = fs.openSync(sparse, 'w');
    const data = randomData(4, 8000);
    fs.writeSync(fd, data, 0, data.length, G4 + 0x3000);
    const top = randomData(6, 4096); // 0xfffff000: a 3DW address with bit 31 set
    fs.writeSync(fd, top, 0, top.length, 0xfffff000);
    fs.closeSync(fd);
    const s = await openSource(`raw:${sparse}`);
    try {
      await withAdapter(s, {}, [2], async (_a, [r]) => {
        const res = await readVia(r, G4 + 0x3005, 1000, 2);
        expect(Buffer.from(res.data).equals(Buffer.from(data.subarray(5, 1005)))).toBe(true);
        for (const [off, count] of [
          [0, 4096],
          [0xffd, 3],
        ]) {
          const res32 = await readVia(r, 0xfffff000 + off, count, 2);
          expect(res32.cpls[0].raw[6]).toBe(0x4a);
          expect(Buffer.from(res32.data).equals(Buffer.from(top.subarray(off, off + count)))).toBe(true);
        }
        const hole = await readVia(r, 0x8000_0000, 16, 2); // a hole in a sparse file exists: zeros are its content
        expect(hole.status).toBe(CPL_SC);
        expect(hole.data.every((b) => b === 0)).toBe(true);
        const past = await readVia(r, G4 + 0x3000 + 8000 - 4, 8, 2);
        expect(past.status).toBe(CPL_UR);
      });
    } finally {
      await s.close();
      fs.rmSync(sparse);
    }
  });
});

describe('MWr', () => {
  it('read-only (default): writes are dropped and counted, the file is unchanged', async () => {
    const p = path.join(dir, 'ro.raw');
    fs.writeFileSync(p, image.subarray(0, 65536));
    const src = await openSource(`raw:${p}`);
    try {
      await withAdapter(src, {}, [0], async (a, [r]) => {
        const buf = new Uint8Array(MAX_DATAGRAM);
        const n = encodeMemWrite(buf, 0x100, new Uint8Array(16).fill(0xee), 0x0100, 0);
        r.send(buf, n);
        await r.quiet(100);
        expect(r.rawInbox.length).toBe(0); // posted: never a completion
        const s = a.stats();
        expect(s.requests_write).toBe(1);
        expect(s.writes_dropped_readonly).toBe(1);
        expect(s.bytes_written).toBe(0);
      });
      expect(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(image.subarray(0, 65536)))).toBe(true);
    } finally {
      await src.close();
    }
  });

  it('writable: unaligned and multi-DW writes land in the file; reads after them see them', async () => {
    const p = path.join(dir, 'rw.raw');
    const expected = Buffer.from(image.subarray(0, 65536));
    fs.writeFileSync(p, expected);
    const src = await openSource(`raw:${p}`, { writable: true });
    try {
      await withAdapter(src, { writable: true }, [0, 1], async (a, [r0, r1]) => {
        const buf = new Uint8Array(MAX_DATAGRAM);
        const writes: [number, Uint8Array][] = [
          [0x101, randomData(10, 1)],
          [0x203, randomData(11, 2)],
          [0x302, randomData(12, 7)],
          [0x1001, randomData(13, 255)],
          [0x2000, randomData(14, 256)],
          [0x3ffd, randomData(15, 3)],
        ];
        for (const [addr, data] of writes) {
          const n = encodeMemWrite(buf, addr, data, 0x0100, 0);
          r0.send(buf, n);
          expected.set(data, addr);
        }
        await r0.quiet(100);
        expect(a.stats().bytes_written).toBe(writes.reduce((n, [, d]) => n + d.length, 0));
        // Read back through the adapter on another tag.
        for (const [addr, data] of writes) {
          const back = await readVia(r1, addr, data.length, 1);
          expect(Buffer.from(back.data).equals(Buffer.from(data))).toBe(true);
        }
        // MWr larger than MPS is malformed.
        const big = encodeMemWrite(buf, 0x8000, randomData(16, 512), 0x0100, 0);
        r0.send(buf, big);
        await r0.quiet(100);
        expect(a.stats().malformed.bad_length).toBe(1);
      });
      expect(Buffer.from(fs.readFileSync(p)).equals(expected)).toBe(true);
    } finally {
      await src.close();
    }
  });

  it('non-contiguous byte enables write only the enabled bytes', async () => {
    const p = path.join(dir, 'be.raw');
    const expected = Buffer.from(image.subarray(0, 8192));
    fs.writeFileSync(p, expected);
    const src = await openSource(`raw:${p}`, { writable: true });
    try {
      await withAdapter(src, { writable: true }, [0], async (_a, [r]) => {
        // MWr 3DW, Length 1, first BE 0b1001 at 0x40: bytes 0x40 and 0x43 only.
        r.send(Buffer.from('000000000000' + '40000001' + '01000009' + '00000040' + 'a1b2c3d4', 'hex'));
        expected[0x40] = 0xa1;
        expected[0x43] = 0xd4;
        await r.quiet(100);
      });
      expect(Buffer.from(fs.readFileSync(p)).equals(expected)).toBe(true);
    } finally {
      await src.close();
    }
  });

  it.each([-1, 1.5, 20_000])('spinUs=%s is refused (E_USAGE naming spin)', async (spinUs) => {
    const src = await openSource(`raw:${rawPath}`);
    try {
      await expect(
        startAdapter({ source: src, listen: ADAPTER_IP, portBase: 30000, tags: 1, spinUs }),
      ).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('spin') });
    } finally {
      await src.close();
    }
  });

  it('writable on a read-only source is refused', async () => {
    const src = await openSource(`raw:${rawPath}`);
    try {
      await expect(
        startAdapter({ source: src, listen: ADAPTER_IP, portBase: 30000, tags: 1, writable: true }),
      ).rejects.toMatchObject({
        code: 'E_USAGE',
      });
    } finally {
      await src.close();
    }
  });
});

describe('allow-list', () => {
  let src: PhysicalMemory;
  beforeAll(async () => {
    src = await openSource(`raw:${rawPath}`);
  });
  afterAll(() => src.close());

  it('a client outside allow gets nothing and is counted; an allowed one is served', async () => {
    await withAdapter(
      src,
      { allow: ['127.0.0.1/32'] },
      [0],
      async (a, [r]) => {
        r.sendRead(0x100, 4, 0);
        r.sendRead(0x200, 4, 0);
        await r.quiet(150);
        expect(r.rawInbox.length).toBe(0);
        const s = a.stats();
        expect(s.denied).toBe(2);
        expect(s.requests_read).toBe(0);
        const ok = await Requester.open(CLIENT_IP, a.ports.first + 1);
        try {
          const res = await readVia(ok, 0x100, 4, 1);
          expect(Buffer.from(res.data).equals(Buffer.from(image.subarray(0x100, 0x104)))).toBe(true);
        } finally {
          await ok.close();
        }
      },
      '127.0.0.3',
    );
  });

  it('refuses to listen on a non-loopback address without allow (E_USAGE)', async () => {
    const e = await startAdapter({ source: src, listen: '192.168.10.1', tags: 1 }).catch((x: unknown) => x);
    expect(isPmiError(e) && e.code === 'E_USAGE').toBe(true);
    expect(String((e as Error).message)).toMatch(/allow/);
    await expect(startAdapter({ source: src, listen: 'localhost', tags: 1 })).rejects.toMatchObject({
      code: 'E_USAGE',
    });
    await expect(
      startAdapter({ source: src, listen: '127.0.0.2', tags: 1, allow: ['10.0.0.1/8'] }),
    ).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});

describe('pcap', () => {
  it('records every datagram in and out with the right IPs and ports', async () => {
    const src = await openSource(`raw:${rawPath}`);
    const pcapPath = path.join(dir, 'a.pcap');
    try {
      let first = 0;
      await withAdapter(src, { pcap: pcapPath }, [4], async (a, [r]) => {
        first = a.ports.first;
        await readVia(r, 0x1001, 300, 4); // 2 completions: 63 bytes to the RCB boundary, then 237
        await readVia(r, 0xf00000, 4, 4); // UR
        await r.quiet(50);
      });
      const pc = fs.readFileSync(pcapPath);
      expect(pc.readUInt32LE(0)).toBe(0xa1b23c4d);
      let o = 24;
      const recs: { src: string; sport: number; dst: string; dport: number; len: number }[] = [];
      while (o < pc.length) {
        const incl = pc.readUInt32LE(o + 8);
        const f = pc.subarray(o + 16, o + 16 + incl);
        const ip = (b: Buffer, i: number) => `${b[i]}.${b[i + 1]}.${b[i + 2]}.${b[i + 3]}`;
        recs.push({
          src: ip(f, 26),
          dst: ip(f, 30),
          sport: f.readUInt16BE(34),
          dport: f.readUInt16BE(36),
          len: incl - 42,
        });
        o += 16 + incl;
      }
      const port = first + 4;
      const inbound = recs.filter((x) => x.dst === ADAPTER_IP);
      const outbound = recs.filter((x) => x.src === ADAPTER_IP);
      expect(inbound.length).toBe(2);
      expect(outbound.length).toBe(expectedSplit(0x1001, 300, 256, 64).length + 1);
      for (const x of inbound) expect(x).toMatchObject({ src: CLIENT_IP, sport: port, dport: port, len: 18 });
      for (const x of outbound) expect(x).toMatchObject({ dst: CLIENT_IP, sport: port, dport: port });
    } finally {
      await src.close();
    }
  });
});

describe('close()', () => {
  it('releases every socket and timer; idempotent', async () => {
    const src = await openSource(`raw:${rawPath}`);
    const count = (kind: string) => process.getActiveResourcesInfo().filter((x) => x === kind).length;
    const udp = () => count('UDPWrap') + count('UDPWRAP');
    for (let i = 0; i < 100 && udp() > 0; i++) await sleep(10); // handles of earlier tests
    const before = udp();
    const timersBefore = count('Timeout'); // vitest's own come and go
    // Long delay and reorder flush: a timer the adapter forgot would still be pending below.
    const a = await startTestAdapter({
      source: src,
      tags: 16,
      fault: 'reorder=0.5,delay=5s,delayrate=0.5,flush=5s,seed=3',
    });
    expect(udp()).toBeGreaterThanOrEqual(before + 16);
    const r = await Requester.open(CLIENT_IP, a.ports.first);
    r.sendRead(0, 1024, 0); // 17 completions: some delayed, some held back
    await sleep(20);
    const f = a.stats().fault;
    expect(f.delayed + f.reordered).toBeGreaterThan(0);
    expect(count('Timeout')).toBeGreaterThan(timersBefore);
    await r.close();
    await a.close();
    await a.close();
    for (let i = 0; i < 100 && udp() > before; i++) await sleep(10); // the requester's handle
    expect(udp()).toBeLessThanOrEqual(before);
    for (let i = 0; i < 50 && count('Timeout') > timersBefore; i++) await sleep(10);
    expect(count('Timeout')).toBeLessThanOrEqual(timersBefore);
    await src.close();
  });
});
