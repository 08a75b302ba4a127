#!/usr/bin/env node
// Translations/s of pmi's x86-64 walk on two u32 halves (hi, lo) against a BigInt implementation
// of the same walk, in the same process, on the same synthetic page tables.
//
//   npx tsc -b packages/kernel && node bench/paging/translate.mjs [--levels 4|5] [--seconds 0.5]
//
// Both walkers read entries through the same source (BufferMemory.readSync, 8 bytes per entry)
// when no cache is on; with the table cache they read entries from cached 4 KiB table pages
// (pmi: Uint32Array halves; BigInt: DataView.getBigUint64); with the TLB both look up a Map
// (pmi: key hi * 2^20 + (lo >>> 12) as a number; BigInt: key va >> 12n). The address set mixes
// 4 KiB pages (vmalloc-like, scattered frames) and 2 MiB pages (direct-map-like), random order.
// Results are cross-checked: both walkers must return the same physical address for every VA.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const distIndex = path.join(here, '../../packages/kernel/dist/index.js');
if (!fs.existsSync(distIndex)) {
  console.error(`missing ${distIndex}: run 'npx tsc -b packages/kernel' first`);
  process.exit(1);
}
const { PageTableBuilder, X86Paging, vaSplit } = await import(distIndex);

const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const levels = Number(arg('levels', '4'));
const seconds = Number(arg('seconds', '0.5'));
const K = 4096;
const M2 = 2 * 1024 * 1024;

// ---------------------------------------------------------------- synthetic address space
let seed = 0x9e3779b9;
const rnd = () => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 4294967296;
};
const b = new PageTableBuilder({ levels, ramSize: 64 * 1024 * 1024 });
const VMALLOC = levels === 5 ? 0xffa0c90000000000n : 0xffffc90000000000n;
const DIRECT = levels === 5 ? 0xff11000000000000n : 0xffff888000000000n;
const NPAGES = 8192; // 32 MiB of 4 KiB pages (16 page tables)
for (let i = 0; i < NPAGES; i++) b.map(VMALLOC + BigInt(i * K), Math.floor(rnd() * 2 ** 28) * K, K, { nx: true });
b.map(DIRECT, 0, 1024 * M2, { pageSize: '2M', nx: true, pat: true }); // 2 GiB direct map
const mem = b.memory();
const N = 1 << 16;
const vas = [];
for (let i = 0; i < N; i++) {
  vas.push(
    rnd() < 0.7 ? VMALLOC + BigInt(Math.floor(rnd() * NPAGES * K)) : DIRECT + BigInt(Math.floor(rnd() * 1024 * M2)),
  );
}
const his = new Uint32Array(N);
const los = new Uint32Array(N);
for (let i = 0; i < N; i++) {
  const s = vaSplit(vas[i]);
  his[i] = s.hi;
  los[i] = s.lo;
}

// ---------------------------------------------------------------- the BigInt walker
const SHIFTS = levels === 5 ? [48n, 39n, 30n, 21n, 12n] : [39n, 30n, 21n, 12n];
const LARGE = levels === 5 ? [false, false, true, true, false] : [false, true, true, false];
const ADDR = 0x000ffffffffff000n;
class BigIntPaging {
  constructor(memory, dtb, { tlb, tableCache }) {
    this.mem = memory;
    this.dtb = BigInt(dtb);
    this.tlb = tlb ? new Map() : undefined;
    this.tables = tableCache ? new Map() : undefined;
    this.buf = new Uint8Array(8);
    this.dv = new DataView(this.buf.buffer);
  }
  entry(table, idx) {
    if (this.tables) {
      let dv = this.tables.get(table);
      if (dv === undefined) {
        const page = new Uint8Array(4096);
        this.mem.readSync(Number(table), page);
        dv = new DataView(page.buffer);
        this.tables.set(table, dv);
      }
      return dv.getBigUint64(Number(idx) * 8, true);
    }
    this.mem.readSync(Number(table + idx * 8n), this.buf);
    return this.dv.getBigUint64(0, true);
  }
  translate(va) {
    const key = va >> 12n;
    if (this.tlb) {
      const p = this.tlb.get(key);
      if (p !== undefined) return Number(p | (va & 0xfffn));
    }
    let table = this.dtb;
    for (let i = 0; i < SHIFTS.length; i++) {
      const idx = (va >> SHIFTS[i]) & 0x1ffn;
      const e = this.entry(table, idx);
      if ((e & 1n) === 0n) return -1;
      const last = i === SHIFTS.length - 1;
      if (last || (LARGE[i] && (e & 0x80n) !== 0n)) {
        const size = 1n << SHIFTS[i];
        const pa = (e & ADDR & ~(size - 1n)) | (va & (size - 1n));
        if (this.tlb) this.tlb.set(key, pa & ~0xfffn);
        return Number(pa);
      }
      table = e & ADDR;
    }
    return -1;
  }
}

// ---------------------------------------------------------------- timing
function bench(fn) {
  // warm-up, then the best of 3 timed runs of ≥ seconds/3 each
  fn(N);
  let best = 0;
  for (let rep = 0; rep < 3; rep++) {
    let done = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < (seconds * 1000) / 3) {
      fn(N);
      done += N;
      t = performance.now();
    }
    best = Math.max(best, done / ((t - t0) / 1000));
  }
  return best;
}

const MODES = [
  ['no cache (8-byte readSync per entry)', { tlb: false, tableCache: false }],
  ['table-page cache', { tlb: false, tableCache: true }],
  ['table cache + TLB', { tlb: true, tableCache: true }],
];
const rows = [];
let sink = 0;
for (const [name, opts] of MODES) {
  const p = new X86Paging(mem, b.dtb, levels, opts);
  const q = new BigIntPaging(mem, b.dtb, opts);
  for (let i = 0; i < N; i++) {
    const a = p.translateHiLo(his[i], los[i]);
    const c = q.translate(vas[i]);
    if (a !== c || a < 0) throw new Error(`mismatch at ${vas[i].toString(16)}: ${a} vs ${c}`);
  }
  const hilo = bench((n) => {
    for (let i = 0; i < n; i++) sink += p.translateHiLo(his[i], los[i]);
  });
  const edge = bench((n) => {
    for (let i = 0; i < n; i++) sink += p.translateSync(vas[i]);
  });
  const big = bench((n) => {
    for (let i = 0; i < n; i++) sink += q.translate(vas[i]);
  });
  rows.push({ name, hilo, edge, big });
}

const fmt = (x) => (x / 1e6).toFixed(2).padStart(8);
console.log(
  `x86-64 ${levels}-level translation, ${N} random VAs (70% 4 KiB pages, 30% 2 MiB pages), node ${process.version}`,
);
console.log('');
console.log(
  `| ${'mode'.padEnd(38)} | hi/lo translateHiLo M/s | bigint edge translateSync M/s | BigInt walk M/s | hi/lo ÷ BigInt | edge ÷ BigInt |`,
);
console.log(
  `|${'-'.repeat(40)}|------------------------:|------------------------------:|----------------:|---------------:|--------------:|`,
);
for (const r of rows) {
  console.log(
    `| ${r.name.padEnd(38)} | ${fmt(r.hilo).padStart(23)} | ${fmt(r.edge).padStart(29)} | ${fmt(r.big).padStart(15)} | ${(r.hilo / r.big).toFixed(1).padStart(13)}× | ${(r.edge / r.big).toFixed(1).padStart(12)}× |`,
  );
}
if (sink === 0.5) console.log(sink);
