#!/usr/bin/env node
// Parse a BTF blob (raw /sys/kernel/btf/vmlinux copy, or an ELF vmlinux with .BTF) and print timings
// and memory. Needs `npx tsc -b` first (imports packages/kernel/dist).
//   node bench/btf/parse.mjs FILE [--runs N] [--json]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (!file) {
  console.error('usage: node bench/btf/parse.mjs FILE [--runs N] [--json]');
  process.exit(2);
}
const runsIdx = args.indexOf('--runs');
const runs = runsIdx >= 0 ? Number(args[runsIdx + 1]) : 10;
const json = args.includes('--json');
const dist = fileURLToPath(new URL('../../packages/kernel/dist/index.js', import.meta.url));
const { parseBtfFile, BtfKind } = await import(dist);

const bytes = readFileSync(file);
const mb = (n) => +(n / 2 ** 20).toFixed(1);
const rss0 = process.memoryUsage().rss;
const parseMs = [];
let btf;
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  btf = parseBtfFile(bytes);
  parseMs.push(performance.now() - t0);
}
const rssParsed = process.memoryUsage().rss;
let t0 = performance.now();
btf.findType('task_struct');
const indexMs = performance.now() - t0;
t0 = performance.now();
let structs = 0;
let rows = 0;
for (let id = 1; id < btf.count; id++) {
  if (btf.kind(id) !== BtfKind.STRUCT) continue;
  structs++;
  rows += btf.structLayout(id).rows.length;
}
const layoutMs = performance.now() - t0;
t0 = performance.now();
const fields = ['comm', 'tasks', 'pid', 'tgid', 'mm', 'parent', 'real_parent', 'signal.rlim'];
for (let i = 0; i < 100_000; i++) btf.field('task_struct', fields[i % fields.length]);
const fieldNs = ((performance.now() - t0) * 1e6) / 100_000;
const sorted = [...parseMs].sort((a, b) => a - b);
const out = {
  file,
  bytes: bytes.length,
  types: btf.typeCount,
  runs,
  parse_ms_first: +parseMs[0].toFixed(2),
  parse_ms_median: +sorted[Math.floor(runs / 2)].toFixed(2),
  parse_ms_min: +sorted[0].toFixed(2),
  name_index_ms: +indexMs.toFixed(2),
  all_struct_layouts_ms: +layoutMs.toFixed(1),
  structs,
  layout_rows: rows,
  cached_field_lookup_ns: +fieldNs.toFixed(0),
  rss_mib_before: mb(rss0),
  rss_mib_after_parse: mb(rssParsed),
  rss_mib_end: mb(process.memoryUsage().rss),
};
if (json) console.log(JSON.stringify(out));
else for (const [k, v] of Object.entries(out)) console.log(`${k.padEnd(24)} ${v}`);
