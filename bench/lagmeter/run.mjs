// lagmeter benchmark: longer calibration runs (interleaved A/B/C in one connection) and the
// measurement overhead (pixel stamping + rVFC read-back on vs off). Run: npm run bench:lagmeter
// (needs `tsc -b` first; the npm script does it). Env: LAGMETER_BENCH_DURATION_MS (default 15000),
// LAGMETER_BENCH_ROUNDS (interleaved calibration rounds, default 12).
import {
  analyze,
  defaultConfig,
  formatInterleaved,
  openLab,
  runInterleaved,
  runPipeline,
} from '../../packages/lagmeter/dist/index.js';
import { parseLinkArgs } from '../../packages/lagmeter/dist/relay/index.js';

const DURATION = Number(process.env.LAGMETER_BENCH_DURATION_MS ?? 15000);
const ROUNDS = Number(process.env.LAGMETER_BENCH_ROUNDS ?? 12);
const lab = await openLab();
const out = {};
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
async function run(name, link, over = {}) {
  const cfg = defaultConfig({
    w: 640,
    h: 360,
    fps: 30,
    durationMs: DURATION,
    warmupMs: 3000,
    seed: 11,
    ...parseLinkArgs(link),
    ...over,
  });
  const a = analyze(await runPipeline(cfg, lab), name);
  out[name] = a.summary;
  return a;
}
try {
  console.log(`lagmeter bench: ${DURATION / 1000}s per run, 640x360@30 VP8, software codecs on this machine`);
  console.log('\n== calibration: interleaved in one connection, zero playout delay (paired Δ vs base) ==');
  const zero = await openLab({ playout: 'zero' });
  try {
    const r = await runInterleaved(
      [
        { name: 'base', ...parseLinkArgs({}) },
        { name: 'delay-down-40', ...parseLinkArgs({ delayDown: '40ms' }) },
        { name: 'delay-40', ...parseLinkArgs({ delay: '40ms' }) },
      ],
      { segmentMs: 3000, settleMs: 1000, rounds: ROUNDS },
      { w: 640, h: 360, fps: 30, warmupMs: 3000, seed: 11, inputIntervalMs: [5, 15] },
      zero,
    );
    out.interleaved = r.deltas;
    console.log(formatInterleaved(r));
    console.log(
      'truth: delay-down-40 → network_down/e2e/rtt +40; delay-40 → e2e/rtt +80, network_down/input_uplink +40',
    );
  } finally {
    await zero.close();
  }
  console.log('\n== counts (separate steady runs, default adaptive playout) ==');
  for (const [name, link] of [
    ['jitter-5', { delay: '10ms', jitter: '5ms' }],
    ['jitter-5-reorder', { delay: '10ms', jitter: '5ms', reorder: true }],
    ['loss-5', { delay: '40ms', lossDown: '5%' }],
    ['gilbert-5', { delay: '40ms', lossDown: 'gilbert:0.005,0.1' }],
  ]) {
    const s = (await run(name, link)).summary;
    const n = s.network;
    console.log(
      `${name.padEnd(17)} nack ${n.nack} retx ${n.retransmitted} pli ${n.pli} freezes ${n.freezes} (${n.freeze_ms} ms) e2e ${fmt(s.e2e.median)}`,
    );
  }
  console.log('\n== measurement overhead (stamp + read-back on vs off, same conditions) ==');
  const med = (xs) => {
    const a = xs.filter(Number.isFinite).sort((x, y) => x - y);
    return a.length ? a[Math.floor(a.length / 2)] : NaN;
  };
  const fig = async (on) => {
    const raw = await runPipeline(
      defaultConfig({
        w: 640,
        h: 360,
        fps: 30,
        durationMs: DURATION,
        warmupMs: 3000,
        seed: 11,
        stamp: on,
        observe: on,
      }),
      lab,
    );
    const s = analyze(raw, on ? 'on' : 'off').summary;
    const d = raw.client.displayed.filter(
      (x) => x.presentationTime >= raw.window.from && x.presentationTime < raw.window.to,
    );
    return {
      'encode ms/frame (getStats)': s.codec.encodeMsAvg,
      'decode ms/frame (getStats)': s.codec.decodeMsAvg,
      'receive→present median (rVFC)': med(d.map((x) => x.presentationTime - x.receiveTime)),
      'capture→present median (rVFC)': med(d.map((x) => x.presentationTime - x.captureTime)),
      'presented fps': d.length / ((raw.window.to - raw.window.from) / 1000),
      'stamp draw ms/frame (host)': on ? med(raw.host.frames.map((f) => f.stampCost)) : NaN,
      'read-back ms/frame (client)': on ? med(d.map((x) => x.readCost ?? NaN)) : NaN,
    };
  };
  const on = await fig(true);
  const off = await fig(false);
  for (const k of Object.keys(on)) console.log(`${k.padEnd(32)} on ${fmt(on[k])}  off ${fmt(off[k])}`);
} finally {
  await lab.close();
}
