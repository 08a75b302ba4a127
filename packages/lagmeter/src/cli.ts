// lagmeter command line: `lagmeter run` (one measured run) and `lagmeter sweep` (a hypothesis sweep).
import { Command, Option } from 'commander';
import { join } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { parseLinkArgs, parseDuration, type LinkArgs } from './relay/index.js';
import { defaultConfig, openLab, runPipeline, type Playout, type RunConfig } from './pipeline.js';
import { formatInterleaved, runInterleaved } from './interleave.js';
import { analyze, type Summary } from './measure.js';
import { formatSummary, writeRun } from './report.js';

interface RunOpts extends LinkArgs {
  codec: string;
  res: string;
  fps: string;
  duration: string;
  warmup: string;
  seed: string;
  out?: string;
  json?: boolean;
  relay: boolean;
  capture: string;
  playout: Playout;
  interleave?: boolean;
  segment: string;
  settle: string;
  rounds: string;
}

function linkOptions(cmd: Command): Command {
  return cmd
    .option('--delay <d>', 'one-way delay, both directions (e.g. 20ms)')
    .option('--delay-down <d>', 'host → client delay')
    .option('--delay-up <d>', 'client → host delay')
    .option('--jitter <d>', 'per-packet delay variation ±J (no reordering unless --reorder)')
    .option('--reorder', 'let jitter reorder packets')
    .option('--loss <p>', 'loss rate (e.g. 1%)')
    .option('--loss-model <m>', 'bernoulli | gilbert:p,r')
    .option('--rate <r>', 'bottleneck rate (e.g. 20mbit)')
    .option('--queue <n>', 'rate-limiter queue, packets');
}

function commonOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--codec <c>', 'video codec').choices(['vp8', 'vp9', 'h264', 'av1']).default('vp8'))
    .option('--res <WxH>', 'resolution', '1280x720')
    .option('--fps <n>', 'frame rate', '60')
    .option('--duration <d>', 'measured duration', '20s')
    .option('--warmup <d>', 'discarded warm-up (bitrate ramp-up)', '3s')
    .option('--seed <n>', 'seed for the relay and the input schedule', '1')
    .addOption(new Option('--capture <m>', 'capture path').choices(['generator', 'canvas']).default('generator'))
    .addOption(
      new Option('--playout <p>', "receiver playout: Chromium's adaptive jitter buffer, or zero playout delay")
        .choices(['adaptive', 'zero'])
        .default('adaptive'),
    )
    .option('--no-relay', 'direct loopback path, no impairment relay')
    .option('--out <dir>', 'output directory (default ./lagmeter-runs/<timestamp>)')
    .option('--json', 'print the summary as JSON on stdout');
}

function toConfig(o: RunOpts, link: { down: RunConfig['down']; up: RunConfig['up'] }): RunConfig {
  const m = /^(\d+)x(\d+)$/.exec(o.res);
  if (!m) throw new Error(`--res: expected WxH, got ${o.res}`);
  return defaultConfig({
    codec: o.codec as RunConfig['codec'],
    w: Number(m[1]),
    h: Number(m[2]),
    fps: Number(o.fps),
    durationMs: parseDuration(o.duration),
    warmupMs: parseDuration(o.warmup),
    seed: Number(o.seed),
    relay: o.relay,
    capture: o.capture as RunConfig['capture'],
    ...link,
  });
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, '-');

async function run(o: RunOpts): Promise<void> {
  const cfg = toConfig(o, parseLinkArgs(o));
  const lab = await openLab({ playout: o.playout });
  let raw;
  try {
    raw = await runPipeline(cfg, lab);
  } finally {
    await lab.close();
  }
  const a = analyze(raw, stamp());
  const dir = o.out ?? join('lagmeter-runs', stamp());
  await writeRun(dir, a);
  if (o.json) process.stdout.write(JSON.stringify(a.summary) + '\n');
  else process.stdout.write(formatSummary(a.summary) + `\n\nwritten to ${dir}\n`);
}

/** Sweep: one parameter takes a comma list (e.g. --delay-down 0,20,40,80ms); one run per value. */
async function sweep(o: RunOpts): Promise<void> {
  const keys: (keyof LinkArgs)[] = ['delay', 'delayDown', 'delayUp', 'jitter', 'loss', 'rate'];
  const swept = keys.filter((k) => typeof o[k] === 'string' && (o[k] as string).includes(','));
  if (swept.length !== 1)
    throw new Error('sweep: give exactly one parameter as a comma list, e.g. --delay-down 0,20,40,80ms');
  const key = swept[0];
  const spec = o[key] as string;
  const unit = /[a-z%]+$/i.exec(spec)?.[0] ?? '';
  const values = spec.split(',').map((v) => (/[a-z%]$/i.test(v) ? v : v + unit));
  if (o.interleave) return sweepInterleaved(o, key, values);
  const lab = await openLab({ playout: o.playout });
  const results: { value: string; summary: Summary }[] = [];
  const base = o.out ?? join('lagmeter-runs', `sweep-${stamp()}`);
  try {
    for (const v of values) {
      const cfg = toConfig(o, parseLinkArgs({ ...o, [key]: v }));
      const a = analyze(await runPipeline(cfg, lab), `${key}=${v}`);
      await writeRun(join(base, `${key}-${v}`), a);
      results.push({ value: v, summary: a.summary });
      if (!o.json) process.stderr.write(`${key}=${v}: e2e median ${a.summary.e2e.median} ms\n`);
    }
  } finally {
    await lab.close();
  }
  if (o.json) {
    process.stdout.write(JSON.stringify({ parameter: key, runs: results }) + '\n');
    return;
  }
  const names = ['e2e', ...Object.keys(results[0].summary.stages), 'rtt'];
  const get = (s: Summary, n: string) =>
    n === 'e2e' ? s.e2e.median : n === 'rtt' ? s.network.rtt.median : s.stages[n].median;
  const head = ['median ms', ...values.map((v) => `${key}=${v}`), `Δ(last−first)`];
  const rows = names.map((n) => {
    const xs = results.map((r) => get(r.summary, n));
    return [n, ...xs.map((x) => (Number.isFinite(x) ? x.toFixed(1) : '–')), (xs[xs.length - 1] - xs[0]).toFixed(1)];
  });
  const w = head.map((_, i) => Math.max(head[i].length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  process.stdout.write([line(head), ...rows.map(line)].join('\n') + `\n\nwritten to ${base}\n`);
}

/** Sweep values as conditions of one connection, switched live and compared round by round. */
async function sweepInterleaved(o: RunOpts, key: keyof LinkArgs, values: string[]): Promise<void> {
  if (!o.relay) throw new Error('sweep --interleave needs the relay');
  const cfg = toConfig(o, parseLinkArgs({ ...o, [key]: values[0] }));
  const conditions = values.map((v) => ({ name: `${key}=${v}`, ...parseLinkArgs({ ...o, [key]: v }) }));
  const lab = await openLab({ playout: o.playout });
  let r;
  try {
    r = await runInterleaved(
      conditions,
      { segmentMs: parseDuration(o.segment), settleMs: parseDuration(o.settle), rounds: Number(o.rounds) },
      cfg,
      lab,
    );
  } finally {
    await lab.close();
  }
  const base = o.out ?? join('lagmeter-runs', `sweep-${stamp()}`);
  await mkdir(base, { recursive: true });
  await writeFile(join(base, 'interleaved.json'), JSON.stringify(r, null, 2) + '\n');
  if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
  else process.stdout.write(formatInterleaved(r) + `\n\nwritten to ${base}\n`);
}

export function main(argv = process.argv): Promise<void> {
  const program = new Command('lagmeter').description(
    'per-frame, per-stage latency of a WebRTC game stream in headless Chromium',
  );
  linkOptions(commonOptions(program.command('run').description('one measured run'))).action((o: RunOpts) => run(o));
  linkOptions(commonOptions(program.command('sweep').description('one run per value of a comma-listed parameter')))
    .option('--interleave', 'all values in one connection, switched live in segments, paired against the first')
    .option('--segment <d>', 'with --interleave: segment length', '2.5s')
    .option('--settle <d>', 'with --interleave: discarded start of each segment', '1s')
    .option('--rounds <n>', 'with --interleave: rounds (each holds every value once)', '6')
    .action((o: RunOpts) => sweep(o));
  return program.parseAsync(argv).then(() => undefined);
}

main().catch((e: unknown) => {
  process.stderr.write(`lagmeter: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
