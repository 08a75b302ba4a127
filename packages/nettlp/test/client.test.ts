import { afterEach, describe, expect, it } from 'vitest';
import { openSource, readPhys, writePhys, type PhysicalMemory, PmiError } from '@pmi/core';
import '@pmi/nettlp';
import { NetTlpClient, openNetTlp } from '../src/client/index.js';
import { prng, randomBytes, startPair, type Responder } from './client-responder.js';

const G4 = 2 ** 32;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  client: NetTlpClient;
  responder: Responder;
  low: Uint8Array;
  high: Uint8Array;
  base: number;
}

async function setup(params = '', opts: { lowSize?: number; highSize?: number; tags?: number } = {}): Promise<Setup> {
  const low = randomBytes(opts.lowSize ?? 4 << 20, 17);
  const high = randomBytes(opts.highSize ?? 1 << 20, 18);
  const ranges = `ranges=0-${low.length},${G4}+${high.length}`;
  const { client, responder, base } = await startPair(
    {
      tags: opts.tags ?? 16,
      regions: [
        { start: 0, data: low },
        { start: G4, data: high },
      ],
    },
    (b) => openNetTlp(`nettlp://127.0.0.2:${b}?${ranges}${params ? '&' + params : ''}`),
  );
  cleanups.push(() => responder.close());
  cleanups.push(() => client.close());
  return { client, responder, low, high, base };
}

async function read(m: PhysicalMemory, addr: number, len: number): Promise<Uint8Array> {
  return readPhys(m, addr, len);
}

describe('NetTLP client reads against the test responder', () => {
  it('reads aligned, unaligned, 1 byte, exactly MRRS, crossing 4 KiB, several MiB', async () => {
    const { client, low } = await setup('', { lowSize: 8 << 20 });
    const cases: [number, number][] = [
      [0, 4],
      [0x1000, 4096],
      [3, 1],
      [0x2001, 1],
      [0x3003, 2],
      [0x4000, 512],
      [0x5001, 512],
      [0x6ffd, 7], // crosses 4 KiB
      [0x7f00, 0x300], // crosses 4 KiB
      [0x9003, 5000],
      [0x10_0001, 3 << 20],
      [low.length - 5, 5],
    ];
    for (const [a, n] of cases) {
      const got = await read(client, a, n);
      expect(Buffer.from(got).equals(Buffer.from(low.subarray(a, a + n))), `read ${n} at 0x${a.toString(16)}`).toBe(
        true,
      );
    }
    // (timeouts may happen when other test files load the CPU: they are retried, not errors)
    expect(client.metrics.dropped_invalid, JSON.stringify(client.metrics)).toBe(0);
  });

  it('random reads of random lengths equal the source bytes', async () => {
    const { client, low } = await setup('mrrs=256');
    const rnd = prng(42);
    for (let i = 0; i < 300; i++) {
      const n = 1 + Math.floor(rnd() * (rnd() < 0.2 ? 20000 : 700));
      const a = Math.floor(rnd() * (low.length - n));
      const got = await read(client, a, n);
      expect(Buffer.compare(got, low.subarray(a, a + n))).toBe(0);
    }
  });

  it('readBatch with hundreds of ops keeps the tags busy and fills every buffer', async () => {
    const { client, low, responder } = await setup();
    const rnd = prng(9);
    const ops = Array.from({ length: 600 }, () => {
      const n = 1 + Math.floor(rnd() * 300);
      return { addr: Math.floor(rnd() * (low.length - n)), buf: new Uint8Array(n) };
    });
    const failures = await client.readBatch(ops);
    expect(failures).toEqual([]);
    for (const op of ops) expect(Buffer.compare(op.buf, low.subarray(op.addr, op.addr + op.buf.length))).toBe(0);
    expect(responder.stats.mrd).toBeGreaterThanOrEqual(600);
    expect(client.info.idealBatchSize).toBe(64);
    expect(client.info.maxInFlight).toBe(16);
  });

  it('reads above 4 GiB (4DW TLPs)', async () => {
    const { client, high } = await setup();
    for (const [off, n] of [
      [0, 16],
      [0x1233, 3000],
      [high.length - 700, 700],
    ]) {
      const got = await read(client, G4 + off, n);
      expect(Buffer.compare(got, high.subarray(off, off + n))).toBe(0);
    }
  });

  it('UR → E_OUT_OF_RANGE with the address; batch failures are reported per op', async () => {
    // The client is told a range the responder does not serve: the UR answer must surface.
    const low = randomBytes(1 << 20, 3);
    const { client, responder } = await startPair({ tags: 4, regions: [{ start: 0, data: low }] }, (b) =>
      openNetTlp(`nettlp://127.0.0.2:${b}?tags=4&ranges=0-0x200000`),
    );
    cleanups.push(() => responder.close());
    cleanups.push(() => client.close());
    const e = await read(client, 0x180000, 16).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PmiError);
    expect((e as PmiError).code).toBe('E_OUT_OF_RANGE');
    expect((e as PmiError).data.address).toBe('0x180000');
    expect((e as PmiError).data.cpl_status).toBe('UR');
    expect(String((e as PmiError).message)).toContain('0x180000');

    const ops = [
      { addr: 0x1000, buf: new Uint8Array(100) },
      { addr: 0xff000, buf: new Uint8Array(0x2000) }, // straddles the responder's end: UR on the second page
      { addr: 0x300000, buf: new Uint8Array(8) }, // outside ranges=: refused without traffic
      { addr: 0x2000, buf: new Uint8Array(5) },
    ];
    const failures = await client.readBatch(ops);
    expect(failures.map((f) => [f.index, f.error.code, f.error.data.address])).toEqual([
      [1, 'E_OUT_OF_RANGE', '0x100000'],
      [2, 'E_OUT_OF_RANGE', '0x300000'],
    ]);
    expect(Buffer.compare(ops[0].buf, low.subarray(0x1000, 0x1064))).toBe(0);
    expect(Buffer.compare(ops[3].buf, low.subarray(0x2000, 0x2005))).toBe(0);
  });

  it('probing finds [0, low end) and [4 GiB, high end) of a responder with a hole', async () => {
    const lowSize = 0x2b_3000;
    const highSize = 0x31_7000;
    const { client, responder } = await startPair(
      {
        tags: 16,
        regions: [
          { start: 0, data: new Uint8Array(lowSize) },
          { start: G4, data: new Uint8Array(highSize) },
        ],
      },
      (b) => openNetTlp(`nettlp://127.0.0.2:${b}`),
    );
    cleanups.push(() => responder.close());
    cleanups.push(() => client.close());
    expect(responder.stats.ur).toBeGreaterThan(10);
    expect(client.info.ranges).toEqual([
      { start: 0, end: lowSize },
      { start: G4, end: G4 + highSize },
    ]);
    expect(client.info.uri).toContain(
      `ranges=0x0-0x${lowSize.toString(16)},0x100000000-0x${(G4 + highSize).toString(16)}`,
    );
    // Reads in the hole are refused locally now.
    await expect(read(client, 0x8000_0000, 4)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    client.setRanges([{ start: 0, end: 0x1000 }]);
    expect(client.info.ranges).toEqual([{ start: 0, end: 0x1000 }]);
    await expect(read(client, 0x2000, 4)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
  });

  it('probing a responder without high RAM gives one range', async () => {
    const { client, responder } = await startPair(
      { tags: 2, regions: [{ start: 0, data: new Uint8Array(0x10_0000) }] },
      (b) => openNetTlp(`nettlp://127.0.0.2:${b}?tags=2`),
    );
    cleanups.push(() => responder.close());
    cleanups.push(() => client.close());
    expect(client.info.ranges).toEqual([{ start: 0, end: 0x10_0000 }]);
  });

  it('writes split at MPS with unaligned ends land in the responder; read-only by default', async () => {
    const { client, low } = await setup();
    await expect(writePhys(client, 0x1000, new Uint8Array(4))).rejects.toMatchObject({ code: 'E_READ_ONLY' });
    expect(client.info.readOnly).toBe(true);

    const w = await setup('writable=1&mps=128');
    expect(w.client.info.readOnly).toBe(false);
    const rnd = prng(5);
    const expected = Buffer.from(w.low);
    for (const [a, n] of [
      [0x1001, 1],
      [0x2003, 2],
      [0x3001, 0x1000 - 2],
      [0x4ffe, 0x305], // crosses a page
      [0x10_0003, 70_001],
    ]) {
      const data = Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
      const before = w.client.metrics.writes;
      await writePhys(w.client, a, data);
      expected.set(data, a);
      expect(Buffer.compare(w.low, expected), `write ${n} at 0x${a.toString(16)}`).toBe(0);
      expect(w.client.metrics.writes - before).toBeGreaterThanOrEqual(Math.ceil(n / 128));
      expect(Buffer.compare(await read(w.client, a, n), data)).toBe(0);
    }
    // A write outside the ranges is refused before anything is sent.
    await expect(writePhys(w.client, 0x7000_0000, new Uint8Array(4))).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    void low;
  });

  it("openSource('nettlp://…') from @pmi/core works after importing the package", async () => {
    const low = randomBytes(1 << 16, 11);
    const {
      client: m,
      responder,
      base,
    } = await startPair({ tags: 4, regions: [{ start: 0, data: low }] }, (b) =>
      openSource(`nettlp://127.0.0.2:${b}?local=127.0.0.1&tags=4&requester=1b:00&timeout=10`),
    );
    cleanups.push(() => responder.close());
    cleanups.push(() => m.close());
    expect(m.info.kind).toBe('nettlp');
    expect(m.info.live).toBe(true);
    expect(m.info.ranges).toEqual([{ start: 0, end: 1 << 16 }]);
    expect(Buffer.compare(await readPhys(m, 0x123, 999), low.subarray(0x123, 0x123 + 999))).toBe(0);
    await expect(openSource(`nettlp://127.0.0.2:${base}?tags=0`)).rejects.toMatchObject({
      code: 'E_SOURCE_URI',
      data: { parameter: 'tags' },
    });
  });

  it('adoptMemoryMap narrows probed ranges to the RAM inside them, and leaves given ranges alone', async () => {
    const low = randomBytes(4 << 20, 3);
    const { client, responder } = await startPair({ tags: 2, regions: [{ start: 0, data: low }] }, (b) =>
      openNetTlp(`nettlp://127.0.0.2:${b}?tags=2`),
    );
    cleanups.push(() => responder.close());
    cleanups.push(() => client.close());
    expect(client.info.ranges).toEqual([{ start: 0, end: 4 << 20 }]); // probed
    expect(
      client.adoptMemoryMap([
        { start: 0x1000, end: 0x9f000 },
        { start: 0x100000, end: 0x4000000 },
      ]),
    ).toBe(true);
    expect(client.info.ranges).toEqual([
      { start: 0x1000, end: 0x9f000 },
      { start: 0x100000, end: 4 << 20 },
    ]);
    await expect(readPhys(client, 0xa0000, 4)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    expect(Buffer.compare(await readPhys(client, 0x2000, 16), low.subarray(0x2000, 0x2010))).toBe(0);
    expect(client.adoptMemoryMap([{ start: 1 << 30, end: 2 << 30 }])).toBe(false); // disjoint: keep what we have
    expect(client.info.ranges).toHaveLength(2);

    const given = await openNetTlp(`nettlp://127.0.0.2:${client.options.portBase}?tags=2&local=127.0.0.3&ranges=0+1M`);
    cleanups.push(() => given.close());
    expect(given.adoptMemoryMap([{ start: 0x1000, end: 0x9f000 }])).toBe(false);
    expect(given.info.ranges).toEqual([{ start: 0, end: 1 << 20 }]);
  });

  it('close() rejects pending reads with E_CLOSED and leaves no handles', async () => {
    const { client, responder } = await startPair({ tags: 2, regions: [], silent: true }, (b) =>
      openNetTlp(`nettlp://127.0.0.2:${b}?tags=2&ranges=0-1M&timeout=1000`),
    );
    cleanups.push(() => responder.close());
    // (settled into a value at once: the rejection happens while close() still awaits the sockets)
    const p = read(client, 0, 4096).then(
      () => null,
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 20));
    await client.close();
    expect(await p).toMatchObject({ code: 'E_CLOSED' });
    await expect(read(client, 0, 4)).rejects.toMatchObject({ code: 'E_CLOSED' });
    await client.close(); // idempotent
    // The sockets are gone: the same local ports bind again at once.
    const again = await NetTlpClient.connect({ ...client.options });
    await again.close();
    expect(client.tagStates()).toMatchObject({ busy: 0 });
  });

  it('pcap= records the traffic', async () => {
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'nettlp-pcap-'));
    const file = join(dir, 'c.pcap');
    const { client } = await setup(`pcap=${encodeURIComponent(file)}&tags=2`, { tags: 2 });
    await read(client, 0x40, 300); // 1 MRd + 2 CplD (MPS 256 ending at the RCB boundary 0x140)
    await client.close();
    const pcap = readFileSync(file);
    expect(pcap.readUInt32LE(0)).toBe(0xa1b23c4d);
    let o = 24;
    let n = 0;
    while (o < pcap.length) {
      o += 16 + pcap.readUInt32LE(o + 8);
      n++;
    }
    expect(n).toBe(3);
  });
});
