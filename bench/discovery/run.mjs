#!/usr/bin/env node
/**
 * Cold `pmi info` (kernel discovery from memory alone) on lab guests of 256 MiB and 4 GiB:
 * wall time and peak RSS of a fresh process, against a baseline in the same script — one
 * sequential pass over the whole image with plain fs reads (the cost of a full scan).
 *
 *   npm run build && node bench/discovery/run.mjs [--sizes 256M,4G] [--kernel 6.12] [--paging 5]
 *   node bench/discovery/run.mjs --uri qemu:/dev/shm/x.ram     (an existing target)
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startLabVm } from '../../lab/dist/index.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '256M,4G' },
    kernel: { type: 'string', default: '6.12' },
    paging: { type: 'string', default: '5' },
    uri: { type: 'string' },
    runs: { type: 'string', default: '3' },
  },
});
const child = fileURLToPath(new URL('./info-child.mjs', import.meta.url));

function coldInfo(uri) {
  const r = spawnSync(process.execPath, [child, uri], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const stats = JSON.parse(r.stderr.trim().split('\n').at(-1));
  if (stats.code !== 0) throw new Error(`pmi info failed on ${uri}: ${r.stderr}`);
  return { ...stats, info: JSON.parse(r.stdout) };
}

function fullScanMs(path) {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(8 << 20);
  const t0 = performance.now();
  let pos = 0;
  for (;;) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n <= 0) break;
    pos += n;
  }
  closeSync(fd);
  return { ms: Math.round(performance.now() - t0), bytes: pos };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(label, uri, ramPath) {
  const runs = [];
  for (let i = 0; i < Number(values.runs); i++) runs.push(coldInfo(uri));
  const scan = ramPath ? fullScanMs(ramPath) : undefined;
  const info = runs[0].info;
  return {
    target: label,
    release: info.release,
    paging: info.paging_levels,
    wall_ms_median: median(runs.map((r) => r.wall_ms)),
    discovery_ms_median: median(runs.map((r) => r.info.total_ms)),
    max_rss_mib: Math.max(...runs.map((r) => r.max_rss_mib)),
    full_scan_ms: scan?.ms,
    ratio_to_full_scan: scan ? +(median(runs.map((r) => r.wall_ms)) / Math.max(1, scan.ms)).toFixed(2) : undefined,
    steps: Object.fromEntries(info.steps.map((s) => [s.stage, s.ms])),
  };
}

const rows = [];
if (values.uri) {
  rows.push(await measure(values.uri, values.uri));
} else {
  for (const size of values.sizes.split(',')) {
    const vm = await startLabVm({
      kernel: values.kernel,
      paging: Number(values.paging),
      memory: size,
      name: `bench-disc-${process.pid}-${size}`,
    });
    try {
      rows.push(await measure(`${values.kernel} ${size} paging ${values.paging}`, vm.sourceUri, vm.ramPath));
    } finally {
      await vm.stop();
    }
  }
}
console.table(rows.map(({ steps: _steps, ...r }) => r));
console.log('per-stage ms:', JSON.stringify(rows.map((r) => ({ target: r.target, ...r.steps }))));
console.log('goal: cold info ≤ 2000 ms and ≤ 256 MiB RSS on 4 GiB');
