/**
 * The client's two socket layers (io=native, the addon; io=dgram, node:dgram) give the same bytes and
 * the same errors, and the native layer's busy-wait (spin=) really takes completions without the
 * event loop when the adapter runs in another process.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readPhys, type PhysicalMemory } from '@pmi/core';
import { loadNativeIo } from '../src/adapter/index.js';
import { openNetTlp, type NetTlpClient } from '../src/client/index.js';
import { MemSource, randomData, seeded, startAdapterProcess, startTestAdapter, tmpDir } from './adapter-helpers.js';

const forcedDgram = process.env.PMI_NETTLP_IO === 'dgram';
const MODES: ('native' | 'dgram')[] = loadNativeIo() && !forcedDgram ? ['native', 'dgram'] : ['dgram'];

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('the native I/O addon is built (or PMI_NETTLP_IO=dgram says to run without it)', () => {
  // A silently missing addon would leave the default path untested: ./run setup builds it.
  if (forcedDgram) expect(MODES).toEqual(['dgram']);
  else expect(loadNativeIo(), 'build it: npm run build:native -w @pmi/nettlp').toBeDefined();
});

describe.each(MODES)('io=%s', (io) => {
  const SIZE = 4 << 20;
  const image = randomData(5, SIZE);

  async function pair(params = ''): Promise<NetTlpClient> {
    const adapter = await startTestAdapter({ source: new MemSource([{ start: 0, data: image }]), tags: 16 });
    cleanups.push(() => adapter.close());
    const client = await openNetTlp(
      `nettlp://127.0.0.2:${adapter.ports.first}?tags=16&ranges=0+4M&io=${io}${params ? `&${params}` : ''}`,
    );
    cleanups.push(() => client.close());
    return client;
  }

  it('reads of any alignment and length equal the source; the client reports its I/O', async () => {
    const client = await pair();
    expect(client.io).toBe(io);
    expect(client.info.uri).toContain(`io=${io}`);
    const rnd = seeded(9);
    const ops = Array.from({ length: 300 }, () => {
      const addr = Math.floor(rnd() * (SIZE - 9000));
      return { addr, buf: new Uint8Array(1 + Math.floor(rnd() * 9000)) };
    });
    expect(await client.readBatch(ops)).toEqual([]);
    for (const op of ops) expect(Buffer.compare(op.buf, image.subarray(op.addr, op.addr + op.buf.length))).toBe(0);
    const all = await readPhys(client, 0, SIZE);
    expect(Buffer.compare(all, image)).toBe(0);
  });

  it("an address outside the adapter's source is E_OUT_OF_RANGE naming it (UR), and the client goes on", async () => {
    const client = await pair();
    client.setRanges([{ start: 0, end: 8 << 20 }]); // claims more than the adapter serves
    const f = await client.readBatch([
      { addr: 0x500000, buf: new Uint8Array(16) },
      { addr: 0x1000, buf: new Uint8Array(16) },
    ]);
    expect(f).toHaveLength(1);
    expect(f[0].index).toBe(0);
    expect(f[0].error.code).toBe('E_OUT_OF_RANGE');
    expect(f[0].error.message).toContain('0x500000');
    expect(Buffer.compare(await readPhys(client, 0x1000, 16), image.subarray(0x1000, 0x1010))).toBe(0);
  });

  it('writes land in order and are read back (writable=1)', async () => {
    const data = new Uint8Array(64 << 10);
    const src = new MemSource([{ start: 0, data }]);
    const adapter = await startTestAdapter({ source: src, tags: 8, writable: true });
    cleanups.push(() => adapter.close());
    const client = await openNetTlp(
      `nettlp://127.0.0.2:${adapter.ports.first}?tags=8&ranges=0+64K&writable=1&io=${io}`,
    );
    cleanups.push(() => client.close());
    const payload = randomData(3, 3000);
    await client.writeBatch([{ addr: 0x123, buf: payload }]);
    expect(Buffer.compare(data.subarray(0x123, 0x123 + 3000), payload)).toBe(0);
    expect(Buffer.compare(await readPhys(client, 0x123, 3000), payload)).toBe(0);
  });
});

describe.runIf(MODES.includes('native'))('native I/O on both sides: GSO completions, GRO receive', () => {
  it("a request's CplDs leave the adapter as one GSO send and reach the client coalesced; bytes equal", async () => {
    const SIZE = 2 << 20;
    const image = randomData(8, SIZE);
    const adapter = await startTestAdapter({
      source: new MemSource([{ start: 0, data: image }]),
      tags: 8,
      io: 'native',
    });
    cleanups.push(() => adapter.close());
    const client = await openNetTlp(`nettlp://127.0.0.2:${adapter.ports.first}?tags=8&mrrs=4096&ranges=0+2M&io=native`);
    cleanups.push(() => client.close());
    // Unaligned start: completions of unequal length (RCB-cut first one) must split correctly too.
    const got = await readPhys(client, 0x1234, SIZE - 0x2000);
    expect(Buffer.compare(got, image.subarray(0x1234, SIZE - 0x2000 + 0x1234))).toBe(0);
    // 4 KiB requests at MPS 256 are 16 CplDs each: received as coalesced GRO buffers, split in the addon.
    expect(client.ioStats!.gro_segments).toBeGreaterThan(0);
    expect(client.metrics.completions).toBeGreaterThan(client.metrics.requests * 8);
  });
});

describe.runIf(MODES.includes('native'))('io=native busy-wait (spin=) against an adapter in another process', () => {
  let file: string;
  let child: ChildProcess;
  let portBase: number;
  const SIZE = 8 << 20;
  const image = randomData(21, SIZE);

  beforeAll(async () => {
    file = path.join(tmpDir(), 'spin.raw');
    fs.writeFileSync(file, image);
    portBase = 30000 + Math.floor(Math.random() * 300) * 64;
    child = await startAdapterProcess([
      '--source',
      `raw:${file}`,
      'adapter',
      '--listen',
      '127.0.0.2',
      '--port-base',
      String(portBase),
      '--tags',
      '16',
    ]);
  }, 30_000);
  afterAll(() => {
    child?.kill('SIGTERM');
  });

  /** Read everything, again while `more()` (at most 10 times: spinning pauses itself on a busy host). */
  async function readAll(
    params: string,
    more: (c: NetTlpClient) => boolean = () => false,
  ): Promise<PhysicalMemory & NetTlpClient> {
    // a generous timeout: the adapter is another process, which a loaded 2-core machine (CI runs the
    // unit files in parallel) can leave without a CPU for longer than the default 5 ms RTO × 6 tries
    const client = await openNetTlp(
      `nettlp://127.0.0.2:${portBase}?tags=16&ranges=0+8M&io=native&timeout=200&${params}`,
    );
    cleanups.push(() => client.close());
    for (let i = 0; i === 0 || (i < 10 && more(client)); i++) {
      const got = await readPhys(client, 0, SIZE);
      expect(Buffer.compare(got, image)).toBe(0);
    }
    return client;
  }

  it('spin=50 handles completions in the busy-wait; spin=0 never busy-waits; both read the same bytes', async () => {
    const spinning = await readAll('spin=50', (c) => c.ioStats!.spin_hits === 0);
    expect(spinning.ioStats!.spin_hits).toBeGreaterThan(0);
    await spinning.close(); // (frees the local ports for the next client)
    const sleeping = await readAll('spin=0');
    expect(sleeping.ioStats!.spin_hits + sleeping.ioStats!.spin_misses).toBe(0);
    expect(sleeping.ioStats!.batches).toBeGreaterThan(0);
  }, 30_000);
});
