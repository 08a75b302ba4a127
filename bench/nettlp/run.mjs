#!/usr/bin/env node
// NetTLP benchmark: pmi's DMA client (nettlp://) against pmi's software adapter, with baselines.
//
//   npx tsc -b && node bench/nettlp/run.mjs [--size 256M] [--quick] [--json] [--reps 3] [--seconds 2]
//                                           [--port-base 61000] [--no-c] [--variants dgram,native+mps,c,cli]
//
// The adapter runs in a child process (`pmi adapter`, or bench/nettlp/adapter-child.mjs for adapter
// options the CLI does not expose), serving a random file in /dev/shm through `raw:`; the client runs
// in this process. Every figure is the median of --reps runs of --seconds each. Reported:
//   - sequential read MB/s, tags 1/4/16/64 × (MRRS 512, adapter MPS 256) and (MRRS 4096, MPS 4096)
//   - random 4 KiB reads/s (16 tags), single 4-byte read latency (one outstanding: median, p99), pmi
//     and the C client taking turns, with the ratio per round
//   - baselines: raw: directly (file speed), a bare node:dgram ping-pong (per-datagram ceiling),
//     the C client (bench/nettlp/c/nettlp_bench.c, built here with gcc -O2) against the same adapter
//   - CPU seconds of adapter and client per case (from /proc and process.cpuUsage)
//   - latency twice: as is, and with two nice-19 busy loops keeping the vCPUs from halting (on this
//     VM an idle vCPU takes ~50-80 µs to wake, which dominates any one-outstanding round trip)
// Variants (adapter side): dgram | native (the addon) [+mps: first completion up to MPS],
// cli (`pmi adapter` as shipped: native when built, else dgram), c (the minimal C completer in
// c/nettlp_bench.c `serve`: mmap + recvmmsg + one GSO send per request — the far side at its cheapest,
// so "C client vs c" is the ceiling of this protocol over loopback on this machine).
//   - the published card figures (NetTLP paper: 450 MB/s at 16 tags MRRS 512/MPS 256; 12 µs median)
// --json also writes bench/nettlp/results/<date>.json. --quick: a few seconds in total (CI smoke).
import { spawn, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const dist = (p) => path.join(root, 'packages', p, 'dist/index.js');
for (const p of ['core', 'sources', 'nettlp', 'cli']) {
  if (!fs.existsSync(dist(p))) {
    console.error(`missing ${dist(p)}: run 'npx tsc -b' first`);
    process.exit(1);
  }
}
const core = await import(dist('core'));
await import(dist('sources'));
const nettlp = await import(dist('nettlp'));

// ------------------------------------------------------------------ options
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const parseSize = (s) => {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()];
};
const quick = flag('quick');
const SIZE = parseSize(opt('size', quick ? '64M' : '256M'));
const REPS = Number(opt('reps', quick ? '1' : '3'));
const SECONDS = Number(opt('seconds', quick ? '0.2' : '2'));
const LAT_N = Number(opt('lat-n', quick ? '300' : '20000'));
const PORT_BASE = Number(opt('port-base', '61000'));
const HOST = '127.0.0.2';
const TAGS_LIST = (opt('tags', quick ? '16' : '1,4,16,64') || '').split(',').map(Number);
const VARIANTS = opt('variants', quick ? 'cli' : 'dgram,native+mps,c').split(',');
const withC = !flag('no-c');
const CLIENT_PARAMS = opt('client-params', ''); // appended to the nettlp:// URI, e.g. "timeout=20&retries=20"
const log = (...a) => console.error(...a);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

// ------------------------------------------------------------------ the served file
const file = path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `pmi-nettlp-bench-${process.pid}.raw`);
{
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(16 << 20);
  let x = 0x9e3779b9;
  for (let off = 0; off < SIZE; off += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      chunk.writeInt32LE(x | 0, i);
    }
    fs.writeSync(fd, chunk, 0, Math.min(chunk.length, SIZE - off));
  }
  fs.closeSync(fd);
}
const image = fs.readFileSync(file);
const cleanup = [() => fs.rmSync(file, { force: true })];
process.on('exit', () => cleanup.forEach((f) => f()));
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));
// A client failure surfacing outside the awaited call must not end the run: log it, keep measuring.
let stray = 0;
process.on('unhandledRejection', (e) => {
  stray++;
  console.error(`  (unhandled rejection #${stray}: ${e?.code ?? ''} ${e?.message ?? e})`);
});

// ------------------------------------------------------------------ CPU accounting
const CLK = 100; // USER_HZ
const procCpu = (pid) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK; // utime + stime (fields 14, 15)
  } catch {
    return NaN;
  }
};
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// ------------------------------------------------------------------ adapter child
async function startAdapterChild({ mps, variant }) {
  const served = ['--listen', HOST, '--port-base', String(PORT_BASE), '--tags', '256', '--mps', String(mps)];
  const args =
    variant === 'cli'
      ? [
          path.join(root, 'packages/cli/bin/pmi.js'),
          '--source',
          `raw:${file}`,
          'adapter',
          ...served,
          '--rcb',
          String(mps >= 4096 ? 128 : 64),
        ]
      : [
          path.join(here, 'adapter-child.mjs'),
          JSON.stringify({ file, listen: HOST, portBase: PORT_BASE, tags: 256, mps, variant }),
        ];
  // `c` = the minimal C completer (c/nettlp_bench.c serve): the far side at its cheapest, the ceiling.
  const child =
    variant === 'c'
      ? spawn(cBin, ['serve', ...served, '--file', file], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`adapter exited (${code}): ${err}`)));
  });
  const stop = async () => {
    if (child.exitCode !== null) return;
    const done = new Promise((r) => child.on('exit', r));
    child.kill('SIGTERM');
    await done;
  };
  cleanup.push(() => child.exitCode === null && child.kill('SIGKILL'));
  return { child, stop, stats: () => err };
}

// ------------------------------------------------------------------ vCPU spinners (latency)
async function withSpinners(f) {
  const kids = [0, 1].map(() => spawn('nice', ['-n', '19', process.execPath, '-e', 'for(;;){}'], { stdio: 'ignore' }));
  cleanup.push(() => kids.forEach((k) => k.exitCode === null && k.kill('SIGKILL')));
  await new Promise((r) => setTimeout(r, 100));
  try {
    return await f();
  } finally {
    kids.forEach((k) => k.kill('SIGKILL'));
  }
}

// ------------------------------------------------------------------ measurement helpers
/** Runs body(deadline) REPS times; body returns {value, ...}; collects CPU of adapter and self. */
async function repeat(adapterPid, body) {
  const runs = [];
  for (let r = 0; r < REPS; r++) {
    const a0 = adapterPid ? procCpu(adapterPid) : 0;
    const c0 = selfCpu();
    const t0 = performance.now();
    const res = await body();
    const wall = (performance.now() - t0) / 1000;
    runs.push({
      ...res,
      wall_s: wall,
      adapter_cpu: adapterPid ? (procCpu(adapterPid) - a0) / wall : undefined,
      client_cpu: (selfCpu() - c0) / wall,
    });
  }
  const keys = Object.keys(runs[0]).filter((k) => typeof runs[0][k] === 'number');
  const out = { runs: runs.length };
  for (const k of keys) out[k] = median(runs.map((x) => x[k]));
  out.all = runs.map((x) => x.value);
  return out;
}

function check(buf, addr) {
  if (Buffer.compare(Buffer.from(buf.buffer, buf.byteOffset, buf.length), image.subarray(addr, addr + buf.length))) {
    throw new Error(`data mismatch at ${addr}`);
  }
}

async function seqRead(mem, chunk) {
  const buf = new Uint8Array(chunk);
  let addr = 0;
  let bytes = 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  while (performance.now() < end) {
    const f = await mem.readBatch([{ addr, buf }]);
    if (f.length) throw f[0].error;
    bytes += chunk;
    addr = (addr + chunk) % SIZE;
  }
  const s = (performance.now() - t0) / 1000;
  check(buf, (addr - chunk + SIZE) % SIZE);
  return { value: bytes / 1e6 / s };
}

async function randomReads(mem, batch = 64) {
  let x = 12345;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), x / 2 ** 32);
  const ops = Array.from({ length: batch }, () => ({ addr: 0, buf: new Uint8Array(4096) }));
  let reads = 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  while (performance.now() < end) {
    for (const op of ops) op.addr = Math.floor(rnd() * (SIZE / 4096)) * 4096;
    const f = await mem.readBatch(ops);
    if (f.length) throw f[0].error;
    reads += batch;
  }
  check(ops[0].buf, ops[0].addr);
  return { value: reads / ((performance.now() - t0) / 1000) };
}

async function latency(mem) {
  const buf = new Uint8Array(4);
  const lat = new Float64Array(LAT_N);
  let addr = 0;
  for (let i = -200; i < LAT_N; i++) {
    const t0 = performance.now();
    const f = await mem.readBatch([{ addr, buf }]);
    const t = performance.now() - t0;
    if (f.length) throw f[0].error;
    if (i >= 0) lat[i] = t * 1000;
    addr = (addr + 4096 * 7 + 64) % (SIZE - 4096);
  }
  lat.sort();
  return { value: pct(lat, 0.5), p99: pct(lat, 0.99) };
}

// ------------------------------------------------------------------ dgram ping-pong baseline
const PINGPONG_SERVER = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
const bufs = {};
s.on('message', (m, r) => { const n = m.readUInt32BE(0); const b = (bufs[n] ??= Buffer.alloc(n)); s.send(b, 0, n, r.port, r.address); });
s.bind(0, '127.0.0.2', () => { s.setRecvBufferSize(4 << 20); s.setSendBufferSize(4 << 20); process.stdout.write(String(s.address().port) + '\\n'); });
`;
async function pingPong(replySize, inFlight) {
  const child = spawn(process.execPath, ['-e', PINGPONG_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanup.push(() => child.exitCode === null && child.kill('SIGKILL'));
  const port = await new Promise((r) => child.stdout.once('data', (d) => r(Number(String(d).trim()))));
  const sock = dgram.createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  sock.setRecvBufferSize(4 << 20);
  sock.connect(port, '127.0.0.2');
  await new Promise((r) => sock.once('connect', r));
  const req = Buffer.alloc(22);
  req.writeUInt32BE(replySize, 0);
  const res = await repeat(child.pid, async () => {
    let got = 0;
    const lat = [];
    let sentAt = 0;
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await new Promise((resolve) => {
      setTimeout(resolve, SECONDS * 1000 + 300); // a lost datagram must not hang the bench
      sock.on('message', () => {
        got++;
        if (inFlight === 1) lat.push((performance.now() - sentAt) * 1000);
        if (performance.now() < end) {
          sentAt = performance.now();
          sock.send(req);
        } else if (--inFlight0 === 0) resolve();
      });
      let inFlight0 = inFlight;
      for (let i = 0; i < inFlight; i++) {
        sentAt = performance.now();
        sock.send(req);
      }
    });
    sock.removeAllListeners('message');
    const s = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    return { value: got / s, mb_s: (got * replySize) / 1e6 / s, p50_us: lat.length ? pct(lat, 0.5) : undefined };
  });
  sock.close();
  child.kill('SIGTERM');
  return res;
}

// ------------------------------------------------------------------ C client
let cBin;
if (withC) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmi-nettlp-c-'));
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  try {
    cBin = path.join(dir, 'nettlp_bench');
    execFileSync('gcc', ['-O2', '-o', cBin, path.join(here, 'c/nettlp_bench.c')], { stdio: 'inherit' });
  } catch (e) {
    log(`C client not built (${e.message}); its rows are skipped`);
    cBin = undefined;
  }
}
const runC = (args) =>
  JSON.parse(execFileSync(cBin, [...args, '--host', HOST, '--port-base', String(PORT_BASE), '--span', String(SIZE)]));
async function cThroughput(adapterPid, tags, mrrs) {
  return repeat(adapterPid, async () => {
    // Size the run to about SECONDS at the rate of a first short probe.
    const probe = runC(['throughput', '--tags', String(tags), '--mrrs', String(mrrs), '--bytes', String(mrrs * 2000)]);
    const bytes = Math.max(mrrs * 1000, Math.floor(probe.mb_s * 1e6 * SECONDS));
    const r = runC(['throughput', '--tags', String(tags), '--mrrs', String(mrrs), '--bytes', String(bytes)]);
    return { value: r.mb_s, reads_s: r.reads_s, datagrams_s: r.datagrams_s, c_cpu: r.cpu_s / r.seconds };
  });
}

/**
 * 4-byte read latency, pmi (default spin, and spin=0) and the C client taking turns against the same
 * adapter (max(REPS, 3) rounds; each pmi round opens a fresh 16-tag client, since the C client binds
 * tag 0's port), so the ratio compares like with like even when the machine's load drifts.
 */
async function latencyPairs(variant, pid, open, suffix) {
  const rounds = Math.max(REPS, 3);
  const sets = { pmi: [], pmi0: [], c: [] };
  const cpu = { pmi: [], c: [] };
  for (let r = 0; r < rounds; r++) {
    for (const [key, params] of [
      ['pmi', ''],
      ['pmi0', 'spin=0'],
    ]) {
      const c = await open(16, params);
      try {
        const a0 = procCpu(pid);
        const c0 = selfCpu();
        const t0 = performance.now();
        sets[key].push(await latency(c));
        if (key === 'pmi') {
          const wall = (performance.now() - t0) / 1000;
          cpu.pmi.push({ adapter: (procCpu(pid) - a0) / wall, client: (selfCpu() - c0) / wall });
        }
      } finally {
        await c.close();
      }
    }
    if (cBin) {
      const a0 = procCpu(pid);
      const t0 = performance.now();
      const out = runC(['latency', '--n', String(LAT_N)]);
      const wall = (performance.now() - t0) / 1000;
      sets.c.push({ value: out.median_us, p99: out.p99_us });
      cpu.c.push({ adapter: (procCpu(pid) - a0) / wall, client: out.cpu_s / wall });
    }
  }
  const summary = (xs, cp) => ({
    value: median(xs.map((x) => x.value)),
    p99: median(xs.map((x) => x.p99)),
    all: xs.map((x) => x.value),
    ...(cp && cp.length
      ? { adapter_cpu: median(cp.map((x) => x.adapter)), client_cpu: median(cp.map((x) => x.client)) }
      : {}),
  });
  const pmi = summary(sets.pmi, cpu.pmi);
  put(variant, `pmi 4-byte latency (tags=16)${suffix}`, 'µs median', pmi);
  put(variant, `pmi 4-byte latency (tags=16, spin=0)${suffix}`, 'µs median', summary(sets.pmi0));
  if (sets.c.length) {
    const c = summary(sets.c, cpu.c);
    put(variant, `C 4-byte latency${suffix}`, 'µs median', c);
    const ratios = sets.pmi.map((x, i) => x.value / sets.c[i].value);
    put(variant, `latency ratio pmi / C, same round${suffix}`, '×', { value: median(ratios), all: ratios });
  }
}

// ------------------------------------------------------------------ run
const results = {
  date: new Date().toISOString(),
  command: `node bench/nettlp/run.mjs ${argv.join(' ')}`.trim(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, kernel: os.release() },
  load_before: os.loadavg(),
  size: SIZE,
  reps: REPS,
  seconds: SECONDS,
  published: { seq_16tags_mrrs512_mb_s: 450, seq_1tag_mrrs512_mb_s: 41, latency_median_us: 12, latency_p99_us: 25 },
  rows: [],
};
const row = (r) => {
  results.rows.push(r);
  const v = r.value;
  log(
    `  ${r.variant.padEnd(11)} ${r.what.padEnd(42)} ${(typeof v === 'number' ? v.toFixed(1) : String(v)).padStart(10)} ${r.unit}` +
      (r.p99 !== undefined ? `  p99 ${r.p99.toFixed(1)}` : '') +
      (r.adapter_cpu !== undefined
        ? `  cpu adapter ${r.adapter_cpu.toFixed(2)} client ${r.client_cpu.toFixed(2)}`
        : ''),
  );
};
const put = (variant, what, unit, res, extra = {}) => {
  const { all, runs, wall_s, c_cpu, ...rest } = res;
  if (c_cpu !== undefined) rest.client_cpu = c_cpu; // the C client's own CPU, not this process's
  void runs;
  void wall_s;
  row({ variant, what, unit, ...rest, all, ...extra });
};

log(
  `NetTLP bench: ${SIZE >> 20} MiB in ${file}, ${REPS}×${SECONDS}s per figure, load ${os.loadavg().map((x) => x.toFixed(2))}`,
);

// (a) raw: file speed
{
  const raw = await core.openSource(`raw:${file}`);
  put('raw', 'sequential 1 MiB reads', 'MB/s', await repeat(0, () => seqRead(raw, 1 << 20)));
  put('raw', 'random 4 KiB reads (batches of 64)', 'reads/s', await repeat(0, () => randomReads(raw)));
  put('raw', '4-byte read latency', 'µs median', await repeat(0, () => latency(raw)));
  await raw.close();
}

// (b) node:dgram ping-pong: 274 B = one 256 B CplD, 4114 B = one 4096 B CplD
for (const size of quick ? [274] : [274, 4114]) {
  put('dgram', `ping-pong ${size} B replies, 32 in flight`, 'replies/s', await pingPong(size, 32));
}
put('dgram', 'ping-pong 22 B, one outstanding (RTT)', 'replies/s', await pingPong(22, 1));

for (const variant of VARIANTS) {
  for (const [mrrs, mps] of [
    [512, 256],
    [4096, 4096],
  ]) {
    const ad = await startAdapterChild({ mps, variant });
    const pid = ad.child.pid;
    const open = (tags, params = '') =>
      nettlp.openNetTlp(
        `nettlp://${HOST}:${PORT_BASE}?tags=${tags}&mrrs=${mrrs}&mps=${mps}&ranges=0+${SIZE}` +
          (CLIENT_PARAMS ? `&${CLIENT_PARAMS}` : '') +
          (params ? `&${params}` : ''),
      );
    /** A failing case (e.g. E_TIMEOUT on an overloaded machine) is recorded, not fatal. */
    const attempt = async (what, unit, f, extra = {}) => {
      try {
        put(variant, what, unit, await f(), extra);
      } catch (e) {
        log(`  ${variant} ${what}: FAILED ${e.code ?? ''} ${e.message}`);
        results.rows.push({
          variant,
          what,
          unit,
          value: NaN,
          error: `${e.code ?? ''} ${e.message}`,
          all: [],
          ...extra,
        });
      }
    };
    try {
      for (const tags of TAGS_LIST) {
        const c = await open(tags);
        await attempt(
          `pmi seq tags=${tags} MRRS ${mrrs} / MPS ${mps}`,
          'MB/s',
          () => repeat(pid, () => seqRead(c, 1 << 20)),
          {
            tags,
            mrrs,
            mps,
          },
        );
        results.rows.at(-1).client_metrics = { ...c.metrics };
        await c.close();
      }
      {
        const c = await open(16);
        await attempt(
          `pmi random 4 KiB tags=16 MRRS ${mrrs} / MPS ${mps}`,
          'reads/s',
          () => repeat(pid, () => randomReads(c)),
          { mrrs, mps },
        );
        await c.close();
      }
      if (mrrs === 512) {
        await latencyPairs(variant, pid, open, '');
        if (!quick) await withSpinners(() => latencyPairs(variant, pid, open, ', vCPUs kept awake'));
      }
      if (cBin) {
        for (const tags of TAGS_LIST) {
          put(variant, `C seq tags=${tags} MRRS ${mrrs} / MPS ${mps}`, 'MB/s', await cThroughput(pid, tags, mrrs), {
            tags,
            mrrs,
            mps,
          });
        }
      }
    } finally {
      await ad.stop();
    }
  }
}
results.load_after = os.loadavg();
results.unhandled_rejections = stray;
log(`load after: ${results.load_after.map((x) => x.toFixed(2))}`);

// ------------------------------------------------------------------ output
/** MRd requests per second behind a row (for CPU per request: robust against other load on the machine). */
const requestsPerS = (r) =>
  r.unit === 'MB/s' && r.mrrs
    ? (r.value * 1e6) / r.mrrs
    : r.unit === 'reads/s' && r.mrrs
      ? (r.value * 4096) / r.mrrs
      : NaN;
for (const r of results.rows) {
  const q = requestsPerS(r);
  if (q > 0 && r.adapter_cpu !== undefined) r.adapter_cpu_us_per_request = (r.adapter_cpu / q) * 1e6;
}
const md = [
  '| variant | workload | median | unit | p99 | adapter CPU | client CPU | adapter CPU µs / MRd | runs |',
  '|---|---|---:|---|---:|---:|---:|---:|---|',
  ...results.rows.map(
    (r) =>
      `| ${r.variant} | ${r.what} | ${r.error ? 'failed: ' + r.error.slice(0, 60) : r.value.toFixed(1)} | ${r.unit} | ${r.p99 !== undefined ? r.p99.toFixed(1) : ''} | ` +
      `${r.adapter_cpu !== undefined ? r.adapter_cpu.toFixed(2) : ''} | ${r.client_cpu !== undefined ? r.client_cpu.toFixed(2) : ''} | ${r.adapter_cpu_us_per_request !== undefined ? r.adapter_cpu_us_per_request.toFixed(1) : ''} | ${r.all.map((x) => x.toFixed(r.unit === '×' ? 2 : 0)).join(' ')} |`,
  ),
  '',
  `Published (NetTLP card, MPS 256 / MRRS 512): 450 MB/s with 16 tags, ~41 MB/s with 1 tag; read latency median 12 µs, p99 ≈ 25 µs.`,
  `Load average before/after: ${results.load_before.map((x) => x.toFixed(2)).join(' ')} / ${results.load_after.map((x) => x.toFixed(2)).join(' ')} (${results.machine.cpus} CPUs).`,
].join('\n');
console.log(md);
if (flag('json')) {
  const dir = path.join(here, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const f = path.join(
    dir,
    `${results.date.slice(0, 19).replace(/:/g, '-')}${opt('label') ? '-' + opt('label') : ''}.json`,
  );
  fs.writeFileSync(f, JSON.stringify(results, null, 2) + '\n');
  try {
    // Committed results must pass the repository's `prettier --check .`.
    execFileSync(process.execPath, [path.join(root, 'node_modules/prettier/bin/prettier.cjs'), '--write', f], {
      stdio: 'ignore',
    });
  } catch {
    /* prettier not installed: the file is still valid JSON */
  }
  log(`wrote ${path.relative(root, f)}`);
}
process.exit(0);
