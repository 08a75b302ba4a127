#!/usr/bin/env node
// lagmeter relay bench: throughput (packets/s, the relay process's CPU) and delay accuracy.
//
//   npx tsc -b packages/lagmeter && node bench/lagmeter/relay.mjs [--seconds 2] [--json]
//
// The relay runs in a child process (so its CPU is measured alone); this process plays host and
// client: it sends numbered datagrams host→client through the relay and timestamps them on both
// ends. Tables:
//   1. throughput: offered vs forwarded packets/s (1200 B datagrams, no impairment) and the
//      relay's CPU (% of one core, µs per packet); 'max' sends as fast as the sender can.
//   2. delay accuracy at 0/20/40 ms for each scheduler ('worker' = default futex-timed thread,
//      'timers' = setTimeout only, 'spin' = setImmediate spinning in the last 2 ms): error of the
//      delay the relay applied (its own tOut − tIn) and end to end (receive − send, minus the
//      median of the 0 ms run of the same scheduler), p50/p95/p99, and the relay's CPU.
// The machine is shared: run it a few times; medians are robust, tails are not.
import { fork } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const distIndex = path.join(here, '../../packages/lagmeter/dist/relay/index.js');
if (!fs.existsSync(distIndex)) {
  console.error(`missing ${distIndex}: run 'npx tsc -b packages/lagmeter' first`);
  process.exit(1);
}
const lag = await import(distIndex);

// ---- child: the relay -------------------------------------------------------------------------
if (process.argv[2] === '--child') {
  let relay;
  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  process.on('message', async (m) => {
    if (m.cmd === 'start') {
      relay = await lag.startRelay({
        down: { ...lag.cleanProfile(), delayMs: m.delayMs },
        up: lag.cleanProfile(),
        seed: 1,
        scheduler: m.scheduler,
        recordLimit: 0,
      });
      const p = await relay.addPath(m.host, m.client);
      process.send({ path: p });
    } else if (m.cmd === 'mark') {
      cpu0 = process.cpuUsage();
      t0 = performance.now();
      relay.resetStats();
      process.send({ ok: true });
    } else if (m.cmd === 'report') {
      const c = process.cpuUsage(cpu0);
      process.send({ cpuMs: (c.user + c.system) / 1000, wallMs: performance.now() - t0, stats: relay.stats() });
    } else if (m.cmd === 'stop') {
      await relay.close();
      process.exit(0);
    }
  });
  await new Promise(() => {});
}

// ---- parent: host + client ----------------------------------------------------------------------
const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const seconds = Number(arg('seconds', '2'));
const asJson = args.includes('--json');

async function udp() {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

function rpc(child, msg) {
  return new Promise((resolve) => {
    child.once('message', resolve);
    child.send(msg);
  });
}

async function withRelay(delayMs, scheduler, fn) {
  const child = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.on('exit', (code) => {
    if (code !== 0 && code !== null) {
      console.error(`relay child exited with ${code}`);
      process.exit(1);
    }
  });
  const host = await udp();
  const client = await udp();
  const ep = (s) => ({ address: '127.0.0.1', port: s.address().port });
  const { path: p } = await rpc(child, { cmd: 'start', delayMs, scheduler, host: ep(host), client: ep(client) });
  await sleep(100);
  try {
    return await fn({
      host,
      client,
      path: p,
      mark: () => rpc(child, { cmd: 'mark' }),
      report: () => rpc(child, { cmd: 'report' }),
    });
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.send({ cmd: 'stop' });
    await Promise.race([exited, sleep(2000)]);
    if (child.exitCode === null) child.kill();
    host.close();
    client.close();
  }
}

/** Send at `rate` packets/s (Infinity = as fast as possible) for `sec` s; returns send/receive times. */
async function stream({ host, client, path: p }, rate, sec, size = 1200) {
  const sent = [];
  const got = new Map();
  client.on('message', (m) => got.set(m.readUInt32BE(0), performance.now()));
  const t0 = performance.now();
  let i = 0;
  while (performance.now() - t0 < sec * 1000) {
    const due = rate === Infinity ? i + 64 : Math.floor(((performance.now() - t0) / 1000) * rate);
    while (i < due) {
      const buf = Buffer.alloc(size); // dgram sends asynchronously: one buffer per datagram
      buf.writeUInt32BE(i, 0);
      sent.push(performance.now());
      host.send(buf, p.hostFacing.port, '127.0.0.1');
      i++;
    }
    if (rate === Infinity) await new Promise((r) => setImmediate(r));
    else await sleep(1);
  }
  const tEnd = performance.now();
  await sleep(300);
  client.removeAllListeners('message');
  return { sent, got, sendMs: tEnd - t0 };
}

const fmt = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : '—');
function table(title, cols, rows) {
  const w = cols.map((c, j) => Math.max(c.length, ...rows.map((r) => String(r[j]).length)));
  const line = (r) => '| ' + r.map((v, j) => String(v).padStart(w[j])).join(' | ') + ' |';
  console.log(
    `\n${title}\n${line(cols)}\n|${w.map((x) => '-'.repeat(x + 2)).join('|')}|\n${rows.map(line).join('\n')}`,
  );
}

const results = { throughput: [], accuracy: [] };

// 1. Throughput
for (const rate of [1000, 5000, 20000, Infinity]) {
  const r = await withRelay(0, 'worker', async (h) => {
    await h.mark();
    const s = await stream(h, rate, seconds);
    const rep = await h.report();
    const recvTimes = [...s.got.values()].sort((a, b) => a - b);
    const fwdRate = s.got.size / (s.sendMs / 1000);
    return {
      offered: s.sent.length / (s.sendMs / 1000),
      forwarded: fwdRate,
      lossPct: (100 * (s.sent.length - s.got.size)) / s.sent.length,
      cpuPct: (100 * rep.cpuMs) / rep.wallMs,
      usPerPkt: (1000 * rep.cpuMs) / Math.max(1, rep.stats.down.forwarded),
      n: recvTimes.length,
    };
  });
  results.throughput.push({ rate: rate === Infinity ? 'max' : rate, ...r });
}

// 2. Delay accuracy
for (const scheduler of ['worker', 'timers', 'spin']) {
  let base = NaN;
  for (const delayMs of [0, 20, 40]) {
    const r = await withRelay(delayMs, scheduler, async (h) => {
      await h.mark();
      const s = await stream(h, 1000, seconds, 1200);
      const rep = await h.report();
      const e2e = [];
      for (const [i, t] of s.got) e2e.push(t - s.sent[i]);
      return { e2e: lag.summarize(e2e), relay: rep.stats.down.delay, cpuPct: (100 * rep.cpuMs) / rep.wallMs };
    });
    if (delayMs === 0) base = r.e2e.p50;
    results.accuracy.push({
      scheduler,
      delayMs,
      relayErr: { p50: r.relay.p50 - delayMs, p95: r.relay.p95 - delayMs, p99: r.relay.p99 - delayMs },
      e2eErr: { p50: r.e2e.p50 - base - delayMs, p95: r.e2e.p95 - base - delayMs, p99: r.e2e.p99 - base - delayMs },
      baselineMs: base,
      cpuPct: r.cpuPct,
      n: r.relay.n,
    });
  }
}

if (asJson) {
  console.log(JSON.stringify(results, null, 2));
} else {
  table(
    `relay throughput (1200 B datagrams, no impairment, ${seconds}s per row; CPU = relay process only)`,
    ['offered pkt/s', 'forwarded pkt/s', 'not delivered %', 'relay CPU % core', 'µs CPU / pkt'],
    results.throughput.map((r) => [
      r.rate === 'max' ? `max (${Math.round(r.offered)})` : Math.round(r.offered),
      Math.round(r.forwarded),
      fmt(r.lossPct, 2),
      fmt(r.cpuPct, 1),
      fmt(r.usPerPkt, 1),
    ]),
  );
  table(
    `delay accuracy (1000 pkt/s, ${seconds}s per row; errors in ms; end-to-end minus the 0 ms run's median)`,
    ['scheduler', 'delay ms', 'relay p50', 'relay p95', 'relay p99', 'e2e p50', 'e2e p95', 'e2e p99', 'relay CPU %'],
    results.accuracy.map((r) => [
      r.scheduler,
      r.delayMs,
      fmt(r.relayErr.p50),
      fmt(r.relayErr.p95),
      fmt(r.relayErr.p99),
      fmt(r.e2eErr.p50),
      fmt(r.e2eErr.p95),
      fmt(r.e2eErr.p99),
      fmt(r.cpuPct, 1),
    ]),
  );
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`\nload average during the run: ${load} (2 vCPUs, shared)`);
}
