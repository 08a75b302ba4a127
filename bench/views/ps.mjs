#!/usr/bin/env node
/**
 * `ps` of thousands of processes: a lab guest (default 4 GiB, 6.12, 5-level) starts N extra idle
 * processes (startLabVm extraProcesses), its RAM is snapshotted, and `listTasks` (every process
 * with its command line read through its own page tables) is timed over the snapshot file and
 * over nettlp:// (the software adapter serving the same snapshot in a child process:
 * `pmi --source SNAP adapter --listen 127.0.0.2 --port-base P --tags 64`).
 * Discovery is done once on the file and not timed (nettlp:// reuses its symbols, BTF and DTB — the
 * same kernel); each ps is run `--runs` times (first = cold). nettlp:// is timed with the IDR link
 * prefetch (the default on remote sources) and link by link.
 *
 *   npm run build && node bench/views/ps.mjs [--procs 5000] [--memory 4G] [--kernel 6.12] [--paging 5]
 *   node bench/views/ps.mjs --snapshot /dev/shm/x.ram [--machine pc]   (an existing snapshot)
 *
 * The snapshot is the guest's RAM file (low RAM first), so it is opened as `qemu:SNAP?machine=pc`
 * (RAM above 3 GiB sits at 4 GiB in the physical map) — `raw:` is the same for guests < 3 GiB.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { openSource } = await import(path.join(root, 'packages/core/dist/index.js'));
await import(path.join(root, 'packages/sources/dist/index.js'));
await import(path.join(root, 'packages/nettlp/dist/index.js'));
const { discoverKernel, X86Paging } = await import(path.join(root, 'packages/kernel/dist/index.js'));
const { listTasks } = await import(path.join(root, 'packages/linux/dist/index.js'));
const { startLabVm } = await import(path.join(root, 'lab/dist/index.js'));

const { values } = parseArgs({
  options: {
    procs: { type: 'string', default: '5000' },
    memory: { type: 'string', default: '4G' },
    kernel: { type: 'string', default: '6.12' },
    paging: { type: 'string', default: '5' },
    snapshot: { type: 'string' },
    machine: { type: 'string', default: 'pc' },
    runs: { type: 'string', default: '3' },
    tags: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '50' },
    'client-params': { type: 'string', default: '' }, // appended to the nettlp:// URI, e.g. spin=0
    'adapter-args': { type: 'string', default: '' }, // extra `pmi adapter` flags, e.g. '--spin 0'
  },
});
const runs = Math.max(1, Number(values.runs));

async function time(label, uri, variants = [{}], known) {
  const mem = await openSource(uri);
  try {
    const t0 = performance.now();
    // nettlp:// reuses the file's discovery (symbols, BTF, DTB): only the memory changes
    const d = known
      ? { ...known, mem, paging: new X86Paging(mem, known.facts.dtb, known.facts.levels) }
      : await discoverKernel(mem);
    const discoverMs = performance.now() - t0;
    const out = [];
    for (const v of variants) {
      const ms = [];
      const reqs = [];
      let r;
      for (let i = 0; i < runs; i++) {
        const q0 = mem.metrics?.requests ?? 0;
        const t = performance.now();
        r = await listTasks(d, v);
        ms.push(performance.now() - t);
        reqs.push((mem.metrics?.requests ?? 0) - q0);
      }
      const user = r.rows.filter((x) => !x.kthread);
      out.push({
        source: label + (v.prefetch === undefined ? '' : v.prefetch ? ', IDR prefetch' : ', link by link'),
        processes: r.rows.length,
        with_cmdline: user.filter((x) => x.cmdline !== '').length,
        partial: r.partial,
        discover_ms: known ? 'reused' : Math.round(discoverMs),
        ps_cold_ms: Math.round(ms[0]),
        ps_warm_ms: Math.round(Math.min(...ms.slice(1).concat(ms[0]))),
        // NetTLP read requests (MRd) of the cold and the last run
        mrd_cold: mem.metrics ? reqs[0] : '',
        mrd_warm: mem.metrics ? reqs[reqs.length - 1] : '',
        rows: r.rows,
      });
    }
    out.discovered = d;
    return out;
  } finally {
    await mem.close();
  }
}

function startAdapterChild(fileUri, portBase, tags) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        path.join(root, 'packages/cli/bin/pmi.js'),
        '--source',
        fileUri,
        'adapter',
        '--listen',
        '127.0.0.2',
        '--port-base',
        String(portBase),
        '--tags',
        String(tags),
        ...values['adapter-args'].split(' ').filter(Boolean),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (b) => {
      out += b;
      if (out.includes('\n')) resolve(child);
    });
    child.stderr.on('data', () => {});
    child.on('exit', (code) => reject(new Error(`adapter exited ${code}: ${out}`)));
  });
}

let vm;
let snap = values.snapshot;
try {
  if (!snap) {
    const t0 = performance.now();
    vm = await startLabVm({
      kernel: values.kernel,
      paging: Number(values.paging),
      memory: values.memory,
      name: `bench-ps-${process.pid}`,
      extraProcesses: Number(values.procs),
      collectTruth: false,
      bootTimeoutMs: 1_800_000,
      log: (m) => process.stderr.write(m + '\n'),
    });
    process.stderr.write(
      `guest up with ${values.procs} extra processes in ${Math.round((performance.now() - t0) / 1000)} s\n`,
    );
    snap = `/dev/shm/pmi-bench-ps-${process.pid}.ram`;
    await vm.snapshot(snap);
    await vm.stop();
    vm = undefined;
  }
  const fileUri = `qemu:${snap}?machine=${values.machine}`;
  const files = await time('file (qemu: snapshot)', fileUri);
  const [file] = files;
  console.table([file].map(({ rows: _rows, ...r }) => r));
  const mem = await openSource(fileUri);
  const ranges = mem.info.ranges.map((r) => `0x${r.start.toString(16)}-0x${r.end.toString(16)}`).join(',');
  await mem.close();
  const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
  const tags = Number(values.tags);
  const adapter = await startAdapterChild(fileUri, portBase, tags);
  let nets;
  try {
    nets = await time(
      `nettlp:// (adapter child, ${tags} tags)`,
      `nettlp://127.0.0.2:${portBase}?tags=${tags}&mrrs=4096&timeout=${values.timeout}&ranges=${ranges}` +
        (values['client-params'] ? `&${values['client-params']}` : ''),
      [{ prefetch: true }, { prefetch: false }],
      files.discovered,
    );
  } finally {
    adapter.kill('SIGTERM');
  }
  console.table([file, ...nets].map(({ rows: _rows, ...r }) => r));
  for (const net of nets) {
    const same = JSON.stringify(file.rows) === JSON.stringify(net.rows);
    console.log(
      `${net.source}: ratio nettlp/file cold ${(net.ps_cold_ms / file.ps_cold_ms).toFixed(2)}×, ` +
        `warm ${(net.ps_warm_ms / file.ps_warm_ms).toFixed(2)}× (goal ≤ 3×); identical rows: ${same}`,
    );
  }
} finally {
  if (vm) await vm.stop();
  if (!values.snapshot && snap && !values.keep) rmSync(snap, { force: true });
}
