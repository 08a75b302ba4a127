#!/usr/bin/env node
// Locate + decode kallsyms in a memory image and print timings and memory. Needs `npx tsc -b`
// first (imports packages/*/dist).
//   node bench/kallsyms/decode.mjs IMAGE [--runs N] [--json]
// IMAGE is any source URI or path pmi opens (raw:FILE, lime:FILE, elf:FILE, qemu:…, or a bare path).
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const image = args.find((a) => !a.startsWith('--'));
if (!image) {
  console.error('usage: node bench/kallsyms/decode.mjs IMAGE [--runs N] [--json]');
  process.exit(2);
}
const runsIdx = args.indexOf('--runs');
const runs = runsIdx >= 0 ? Number(args[runsIdx + 1]) : 5;
const json = args.includes('--json');
const dist = (p) => fileURLToPath(new URL(`../../packages/${p}/dist/index.js`, import.meta.url));
await import(dist('sources'));
const { openSource } = await import(dist('core'));
const { locateKallsyms } = await import(dist('kernel'));

const mb = (n) => +(n / 2 ** 20).toFixed(1);
const mem = await openSource(image);
const rss0 = process.memoryUsage().rss;
const runsOut = [];
let ks;
try {
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    ks = await locateKallsyms(mem);
    runsOut.push({ ms: performance.now() - t0, ...ks.timing });
  }
} finally {
  await mem.close();
}
const rss = process.memoryUsage().rss;
// lookups: name → address, address → name
const names = ['_text', 'init_task', 'sys_call_table', 'init_top_pgt', 'modules', 'prb', 'page_offset_base'];
let t0 = performance.now();
const firstLookup = ks.lookup('init_task');
const firstLookupMs = performance.now() - t0;
t0 = performance.now();
let found = 0;
for (let r = 0; r < 10000; r++) found += ks.lookup(names[r % names.length]).length;
const lookupUs = ((performance.now() - t0) * 1000) / 10000;
const text = ks.addressOf('_text');
t0 = performance.now();
for (let r = 0; r < 100000; r++) ks.byAddress(text + BigInt(r * 4096));
const byAddrUs = ((performance.now() - t0) * 1000) / 100000;

const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = {
  image,
  symbols: ks.count,
  variant: ks.layout.variant,
  runs,
  total_ms_median: +med(runsOut.map((r) => r.ms)).toFixed(1),
  scan_ms_median: +med(runsOut.map((r) => r.scanMs)).toFixed(1),
  decode_ms_median: +med(runsOut.map((r) => r.decodeMs)).toFixed(1),
  scanned_mib: mb(runsOut[0].scannedBytes),
  scan_mib_per_s: +(runsOut[0].scannedBytes / 2 ** 20 / (med(runsOut.map((r) => r.scanMs)) / 1000)).toFixed(0),
  first_lookup_ms: +firstLookupMs.toFixed(1),
  lookup_us: +lookupUs.toFixed(2),
  by_address_us: +byAddrUs.toFixed(2),
  found_anchor_lookups: found,
  table_mib: mb(ks.storageBytes),
  rss_mib: mb(rss),
  rss_growth_mib: mb(rss - rss0),
  init_task: firstLookup.map((s) => '0x' + s.address.toString(16)),
};
if (json) console.log(JSON.stringify(out));
else for (const [k, v] of Object.entries(out)) console.log(`${k.padEnd(22)} ${Array.isArray(v) ? v.join(', ') : v}`);
