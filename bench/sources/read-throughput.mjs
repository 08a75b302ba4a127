#!/usr/bin/env node
// Read throughput of @pmi/sources `raw:` against plain fs on the same file.
//
//   npx tsc -b packages/sources && node bench/sources/read-throughput.mjs [--size 512M] [--file PATH] [--seconds 1.5]
//
// Measures 4 KiB random reads/s and sequential MB/s (1 MiB reads) through
//   - fs.readSync            (baseline: what any reader would do by hand)
//   - raw: readSync          (pmi's synchronous fast path)
//   - raw: readBatch         (pmi's batched primitive; batches of info.idealBatchSize)
//   - fs.read async ×batch   (libuv thread-pool reads, all ops of a batch in flight: the design
//                             readBatch did NOT choose; shown to justify that choice)
// The file is written with random bytes and read once before timing (page-cache warm), so the
// figures are per-call overheads, not disk speed. Ratios are relative to fs.readSync.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const distIndex = path.join(here, '../../packages/sources/dist/index.js');
if (!fs.existsSync(distIndex)) {
  console.error(`missing ${distIndex}: run 'npx tsc -b packages/sources' first`);
  process.exit(1);
}
const { openRaw } = await import(distIndex);

const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const parseSize = (s) => {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()];
};
const seconds = Number(arg('seconds', '1.5'));
let file = arg('file');
let tmp;
if (!file) {
  const size = parseSize(arg('size', '512M'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pmi-bench-'));
  file = path.join(tmp, 'image.raw');
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  let x = 0x12345678;
  for (let i = 0; i < chunk.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    chunk.writeUInt32LE(x >>> 0, i);
  }
  for (let off = 0; off < size; off += chunk.length)
    fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  fs.closeSync(fd);
}
const size = fs.statSync(file).size;
const fd = fs.openSync(file, 'r');
// Warm the page cache.
{
  const b = Buffer.alloc(4 * 1024 * 1024);
  for (let off = 0; off < size; off += b.length) fs.readSync(fd, b, 0, b.length, off);
}

const mem = await openRaw(`raw:${file}`, file, {});
const batchSize = mem.info.idealBatchSize;
const PAGE = 4096;
const pages = Math.floor(size / PAGE);

// Pre-generated random page addresses, shared by every variant.
const N_ADDR = 1 << 16;
const addrs = new Float64Array(N_ADDR);
{
  let s = 42;
  for (let i = 0; i < N_ADDR; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    addrs[i] = (s % pages) * PAGE;
  }
}

/** Run `step` (which does `per` reads of `bytes` each) repeatedly for ~seconds. */
async function timeIt(step, per, bytes) {
  for (let i = 0; i < 50; i++) await step(i); // warm-up / JIT
  let ops = 0;
  let iter = 0;
  const t0 = process.hrtime.bigint();
  const limit = BigInt(Math.round(seconds * 1e9));
  let dt;
  for (;;) {
    for (let k = 0; k < 64; k++) {
      await step(iter++);
      ops += per;
    }
    dt = process.hrtime.bigint() - t0;
    if (dt > limit) break;
  }
  const s = Number(dt) / 1e9;
  return { opsPerSec: ops / s, mbPerSec: (ops * bytes) / s / 1e6 };
}

const page = new Uint8Array(PAGE);
const pageBufs = Array.from({ length: batchSize }, () => new Uint8Array(PAGE));
const ops = pageBufs.map((buf) => ({ addr: 0, buf }));

const rnd = {
  'fs.readSync (baseline)': () =>
    timeIt(
      (i) => {
        fs.readSync(fd, page, 0, PAGE, addrs[i & (N_ADDR - 1)]);
      },
      1,
      PAGE,
    ),
  'raw: readSync': () =>
    timeIt(
      (i) => {
        mem.readSync(addrs[i & (N_ADDR - 1)], page);
      },
      1,
      PAGE,
    ),
  [`raw: readBatch (${batchSize}/batch)`]: () =>
    timeIt(
      async (i) => {
        const base = (i * batchSize) & (N_ADDR - 1);
        for (let k = 0; k < batchSize; k++) ops[k].addr = addrs[(base + k) & (N_ADDR - 1)];
        const f = await mem.readBatch(ops);
        if (f.length) throw f[0].error;
      },
      batchSize,
      PAGE,
    ),
  [`fs.read async (${batchSize} in flight)`]: () =>
    timeIt(
      (i) => {
        const base = (i * batchSize) & (N_ADDR - 1);
        return Promise.all(
          pageBufs.map(
            (buf, k) =>
              new Promise((res, rej) =>
                fs.read(fd, buf, 0, PAGE, addrs[(base + k) & (N_ADDR - 1)], (e) => (e ? rej(e) : res())),
              ),
          ),
        );
      },
      batchSize,
      PAGE,
    ),
};

const SEQ = 1024 * 1024;
const seqBuf = new Uint8Array(SEQ);
const seqSteps = Math.floor(size / SEQ);
const SEQ_BATCH = 16;
const seqBatchBufs = Array.from({ length: SEQ_BATCH }, () => new Uint8Array(SEQ));
const seqOps = seqBatchBufs.map((buf) => ({ addr: 0, buf }));
const seq = {
  'fs.readSync (baseline)': () =>
    timeIt(
      (i) => {
        fs.readSync(fd, seqBuf, 0, SEQ, (i % seqSteps) * SEQ);
      },
      1,
      SEQ,
    ),
  'raw: readSync': () =>
    timeIt(
      (i) => {
        mem.readSync((i % seqSteps) * SEQ, seqBuf);
      },
      1,
      SEQ,
    ),
  [`raw: readBatch (${SEQ_BATCH}×1 MiB/batch)`]: () =>
    timeIt(
      async (i) => {
        for (let k = 0; k < SEQ_BATCH; k++) seqOps[k].addr = ((i * SEQ_BATCH + k) % seqSteps) * SEQ;
        const f = await mem.readBatch(seqOps);
        if (f.length) throw f[0].error;
      },
      SEQ_BATCH,
      SEQ,
    ),
};

function table(title, results, unit) {
  const base = Object.values(results)[0];
  console.log(`\n${title}`);
  console.log(`${'variant'.padEnd(34)} ${'reads/s'.padStart(12)} ${'MB/s'.padStart(10)} ${'vs baseline'.padStart(12)}`);
  for (const [name, r] of Object.entries(results)) {
    const ratio = unit === 'ops' ? r.opsPerSec / base.opsPerSec : r.mbPerSec / base.mbPerSec;
    console.log(
      `${name.padEnd(34)} ${Math.round(r.opsPerSec).toLocaleString('en-US').padStart(12)} ${r.mbPerSec.toFixed(0).padStart(10)} ${ratio.toFixed(2).padStart(11)}x`,
    );
  }
}

console.log(
  `@pmi/sources read throughput — node ${process.version}, ${os.cpus()[0]?.model ?? '?'} ×${os.cpus().length}, ` +
    `file ${(size / 1024 ** 2).toFixed(0)} MiB (page cache warm), ${seconds}s per variant`,
);
const rr = {};
for (const [k, f] of Object.entries(rnd)) rr[k] = await f();
table('4 KiB random reads', rr, 'ops');
const sr = {};
for (const [k, f] of Object.entries(seq)) sr[k] = await f();
table('sequential 1 MiB reads', sr, 'mb');

await mem.close();
fs.closeSync(fd);
if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
