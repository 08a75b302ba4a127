// Interleaved A/B(/C…) measurement inside ONE connection: the relay's link profile is switched
// live (setProfile) between conditions in short segments — A B C | C B A | A B C … — and every
// condition is compared with the baseline segment of the same round. Separate runs drift apart on
// a shared machine (CPU starvation grows the jitter buffer, the render cadence changes, and two
// runs a minute apart are not under the same load); alternating segments expose every condition
// to the same drift, the reversed order of every other round cancels a linear trend, and the
// median of the per-round paired differences is robust to a segment hit by a load spike.
//
// A segment's first `settleMs` after the switch is discarded (the switch's transient: packets
// held back by the no-reorder clamp, the receiver's delay estimators re-converging), and only
// events entirely inside a segment count (see AnalyzeOptions in measure.ts).
import { analyze, type Summary } from './measure.js';
import { defaultConfig, openLab, runPipeline, type Lab, type RunConfig, type ScheduleStep } from './pipeline.js';
import { dist, median, medianCI, type Dist } from './stats.js';
import type { LinkProfile } from './relay/index.js';

export interface Condition {
  name: string;
  down: LinkProfile;
  up: LinkProfile;
}

export interface InterleaveOptions {
  /** Length of one segment (one condition held), ms. Default 2000. */
  segmentMs?: number;
  /** Discarded start of every segment, ms. Default 500. */
  settleMs?: number;
  /** Rounds; each round holds every condition once. Default 6. */
  rounds?: number;
  /** 'balanced' (default): every other round in reverse order (A B C | C B A), cancelling a linear
   * drift within a pair of rounds; 'cyclic': always A B C. */
  order?: 'balanced' | 'cyclic';
  /** The condition the others are paired against. Default: the first. */
  baseline?: string;
}

/** Per-segment figures compared between conditions (each a median inside the segment). */
export const METRICS = {
  e2e: (s: Summary) => s.e2e.median,
  network_down: (s: Summary) => s.stages.network_down.median,
  input_uplink: (s: Summary) => s.stages.input_uplink.median,
  host_processing: (s: Summary) => s.stages.host_processing.median,
  receive_to_display: (s: Summary) => s.stages.receive_to_display.median,
  capture_to_display: (s: Summary) => s.stages.capture_to_display.median,
  jitter_buffer: (s: Summary) => s.stages.jitter_buffer.median,
  display_wait: (s: Summary) => s.stages.display_wait.median,
  /** DataChannel ping RTT (the clock estimator's exchanges, every clockIntervalMs): median, and
   * the 10th percentile (processing delay on the pages only adds to a ping's RTT; the low
   * quantile tracks the path and is what calibration compares). */
  rtt_datachannel: (s: Summary) => s.network.rtt_datachannel.median,
  rtt_datachannel_p10: (s: Summary) => s.network.rtt_datachannel_p10,
  /** WebRTC's RTCP RTT: ~1 sample/s, of which the first RTCP_STALE_MS of a segment are skipped. */
  rtt_rtcp: (s: Summary) => s.network.rtt_rtcp.median,
  /** Cross-check: host capture − rVFC captureTime, per frame (pixel vs WebRTC capture→display). */
  rvfc_minus_pixel: (s: Summary) => s.crosscheck.rvfc_minus_pixel.median,
} satisfies Record<string, (s: Summary) => number>;
export type Metric = keyof typeof METRICS;

export interface Segment {
  condition: string;
  round: number;
  index: number;
  /** Epoch ms (relay clock): the switch, and the analysed window [from, to). */
  switchAt: number;
  from: number;
  to: number;
  /** How late the switch was against the schedule, ms. */
  late: number;
  summary: Summary;
  /** Ground truth: the delay the relay actually applied (tOut − tIn), median per direction, ms. */
  relayDelay: { down: number; up: number };
  /** Sample counts behind the segment's medians. */
  n: { e2e: number; network_down: number; rtt_datachannel: number; rtt_rtcp: number; frames: number };
}

export interface PairedDelta {
  /** Median over rounds of (condition − baseline) of the per-segment medians. */
  median: number;
  /** Distribution-free (sign-test) interval of that median, and what it covers. */
  ci: [number, number];
  confidence: number;
  /** Rounds with both medians defined. */
  n: number;
  diffs: number[];
}

export interface ConditionStats {
  segments: number;
  /** Median of the per-segment medians. */
  medians: Record<Metric, number>;
  /** All samples of the condition's segments pooled (per input / per frame / per ping). */
  pooled: { e2e: Dist; network_down: Dist; rtt_datachannel: Dist; rvfc_minus_pixel: Dist };
}

export interface InterleavedResult {
  baseline: string;
  conditions: string[];
  options: Required<Omit<InterleaveOptions, 'baseline'>>;
  config: RunConfig;
  segments: Segment[];
  perCondition: Record<string, ConditionStats>;
  /** deltas[condition][metric]: paired against the baseline (absent for the baseline itself). */
  deltas: Record<string, Record<Metric, PairedDelta>>;
  /** The same pairing for the delay the relay actually applied (its records: tOut − tIn medians),
   * per direction and both ways: the injected truth, which under CPU starvation can exceed the
   * nominal profile by the relay's own scheduling lateness. */
  applied: Record<string, Record<'down' | 'up' | 'both', PairedDelta>>;
  /** Switch lateness (event-loop delay in Node), ms. */
  switchLate: Dist;
}

const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : NaN);

/** The segment order: rounds × conditions, every other round reversed when balanced. */
export function interleaveOrder(names: readonly string[], rounds: number, order: 'balanced' | 'cyclic'): string[][] {
  const out: string[][] = [];
  for (let r = 0; r < rounds; r++) out.push(order === 'balanced' && r % 2 === 1 ? [...names].reverse() : [...names]);
  return out;
}

/** Paired differences per round (condition − baseline), NaN pairs skipped. */
export function pairedDelta(cond: readonly number[], base: readonly number[]): PairedDelta {
  const diffs: number[] = [];
  for (let i = 0; i < Math.min(cond.length, base.length); i++) {
    const d = cond[i] - base[i];
    if (Number.isFinite(d)) diffs.push(r2(d));
  }
  const { ci, confidence } = medianCI(diffs);
  return { median: r2(median(diffs)), ci: [r2(ci[0]), r2(ci[1])], confidence, n: diffs.length, diffs };
}

/**
 * Run `conditions` interleaved in one connection (one browser pair, one relay path) and compare
 * each with the baseline, round by round. `base` configures the run (codec, resolution, fps,
 * seed…; its durationMs is replaced by rounds × conditions × segmentMs, and the warm-up runs under
 * the first condition).
 */
export async function runInterleaved(
  conditions: readonly Condition[],
  opts: InterleaveOptions = {},
  base: Partial<RunConfig> = {},
  lab?: Lab,
): Promise<InterleavedResult> {
  if (conditions.length < 2) throw new Error('runInterleaved: give at least two conditions');
  const names = conditions.map((c) => c.name);
  if (new Set(names).size !== names.length) throw new Error('runInterleaved: condition names must be unique');
  const o = {
    segmentMs: opts.segmentMs ?? 2000,
    settleMs: opts.settleMs ?? 500,
    rounds: opts.rounds ?? 6,
    order: opts.order ?? 'balanced',
  };
  if (!(o.settleMs >= 0 && o.settleMs < o.segmentMs)) throw new Error('runInterleaved: need 0 ≤ settleMs < segmentMs');
  const baseline = opts.baseline ?? names[0];
  if (!names.includes(baseline)) throw new Error(`runInterleaved: no condition named ${baseline}`);
  const byName = new Map(conditions.map((c) => [c.name, c]));
  const plan = interleaveOrder(names, o.rounds, o.order);
  const flat = plan.flatMap((round, r) => round.map((name) => ({ name, round: r })));
  const schedule: ScheduleStep[] = flat.map((s, i) => ({
    at: i * o.segmentMs,
    label: s.name,
    down: byName.get(s.name)!.down,
    up: byName.get(s.name)!.up,
  }));
  const first = byName.get(flat[0].name)!;
  const cfg = defaultConfig({
    ...base,
    relay: true,
    down: first.down,
    up: first.up,
    durationMs: flat.length * o.segmentMs,
  });
  const own = lab ? null : await openLab();
  let raw;
  try {
    raw = await runPipeline(cfg, lab ?? own!, { schedule });
  } finally {
    await own?.close();
  }
  if (raw.switches.length !== flat.length) throw new Error('runInterleaved: a scheduled switch did not happen');
  const windowEnd = raw.window.to;

  const segments: Segment[] = [];
  const pooled = new Map<string, { e2e: number[]; down: number[]; dc: number[]; xc: number[] }>(
    names.map((n) => [n, { e2e: [], down: [], dc: [], xc: [] }]),
  );
  for (let i = 0; i < flat.length; i++) {
    const sw = raw.switches[i];
    const end = i + 1 < raw.switches.length ? raw.switches[i + 1].t : windowEnd;
    const from = sw.t + o.settleMs;
    const to = end;
    const a = analyze(raw, `${flat[i].name}#${flat[i].round}`, { segment: { from, to } });
    const p = pooled.get(flat[i].name)!;
    const e2e = a.inputs.filter((x) => x.displayed !== undefined).map((x) => x.displayed! - x.emitted);
    const down = a.frames
      .filter((f) => f.sentFirst !== undefined && f.receiveLast !== undefined)
      .map((f) => f.receiveLast! - f.sentFirst!);
    const dcs = raw.client.clock.filter((c) => c.t0 >= from && c.t3 < to).map((c) => c.t3 - c.t0 - (c.t2 - c.t1));
    const xc = a.frames.filter((f) => f.webrtcCapture !== undefined).map((f) => f.capture - f.webrtcCapture!);
    p.e2e.push(...e2e);
    p.down.push(...down);
    p.dc.push(...dcs);
    p.xc.push(...xc);
    const applied = { down: [] as number[], up: [] as number[] };
    for (const rec of raw.relay?.records ?? [])
      if (rec.tIn >= from && rec.tIn < to && rec.tOut !== undefined) applied[rec.dir].push(rec.tOut - rec.tIn);
    segments.push({
      condition: flat[i].name,
      relayDelay: { down: r2(median(applied.down)), up: r2(median(applied.up)) },
      round: flat[i].round,
      index: i,
      switchAt: sw.t,
      from,
      to,
      late: sw.late,
      summary: a.summary,
      n: {
        e2e: a.summary.e2e.n,
        network_down: a.summary.stages.network_down.n,
        rtt_datachannel: a.summary.network.rtt_datachannel.n,
        rtt_rtcp: a.summary.network.rtt_rtcp.n,
        frames: a.summary.frames.stamped,
      },
    });
  }

  const metricNames = Object.keys(METRICS) as Metric[];
  /** Per-round values of a metric for one condition (rounds in order). */
  const series = (name: string, m: Metric) => {
    const xs = new Array<number>(o.rounds).fill(NaN);
    for (const s of segments) if (s.condition === name) xs[s.round] = METRICS[m](s.summary);
    return xs;
  };
  const perCondition: Record<string, ConditionStats> = {};
  for (const name of names) {
    const p = pooled.get(name)!;
    perCondition[name] = {
      segments: segments.filter((s) => s.condition === name).length,
      medians: Object.fromEntries(metricNames.map((m) => [m, r2(median(series(name, m)))])) as Record<Metric, number>,
      pooled: {
        e2e: dist(p.e2e),
        network_down: dist(p.down),
        rtt_datachannel: dist(p.dc),
        rvfc_minus_pixel: dist(p.xc),
      },
    };
  }
  const deltas: Record<string, Record<Metric, PairedDelta>> = {};
  for (const name of names) {
    if (name === baseline) continue;
    deltas[name] = Object.fromEntries(
      metricNames.map((m) => [m, pairedDelta(series(name, m), series(baseline, m))]),
    ) as Record<Metric, PairedDelta>;
  }
  const appliedSeries = (name: string, dir: 'down' | 'up' | 'both') => {
    const xs = new Array<number>(o.rounds).fill(NaN);
    for (const s of segments)
      if (s.condition === name) xs[s.round] = dir === 'both' ? s.relayDelay.down + s.relayDelay.up : s.relayDelay[dir];
    return xs;
  };
  const applied: Record<string, Record<'down' | 'up' | 'both', PairedDelta>> = {};
  for (const name of names) {
    if (name === baseline) continue;
    applied[name] = {
      down: pairedDelta(appliedSeries(name, 'down'), appliedSeries(baseline, 'down')),
      up: pairedDelta(appliedSeries(name, 'up'), appliedSeries(baseline, 'up')),
      both: pairedDelta(appliedSeries(name, 'both'), appliedSeries(baseline, 'both')),
    };
  }
  return {
    baseline,
    conditions: names,
    options: o,
    config: cfg,
    segments,
    perCondition,
    deltas,
    applied,
    switchLate: dist(raw.switches.map((s) => s.late)),
  };
}

/**
 * Measurement error against the injected truth, paired by round: for each round,
 * (metric(condition) − metric(baseline)) − (applied(condition) − applied(baseline)), where
 * `truth` names what the metric should move by: the relay's applied down, up or round-trip delay.
 */
export function pairedError(
  r: InterleavedResult,
  condition: string,
  metric: Metric,
  truth: 'down' | 'up' | 'both',
): PairedDelta {
  const d = r.deltas[condition]?.[metric];
  const a = r.applied[condition]?.[truth];
  if (!d || !a) throw new Error(`pairedError: no condition ${condition} (or it is the baseline)`);
  const m = new Array<number>(r.options.rounds).fill(NaN);
  const t = new Array<number>(r.options.rounds).fill(NaN);
  const val = (name: string, round: number, f: (s: Segment) => number) => {
    const s = r.segments.find((x) => x.condition === name && x.round === round);
    return s ? f(s) : NaN;
  };
  const applied = (s: Segment) => (truth === 'both' ? s.relayDelay.down + s.relayDelay.up : s.relayDelay[truth]);
  for (let k = 0; k < r.options.rounds; k++) {
    m[k] = val(condition, k, (s) => METRICS[metric](s.summary)) - val(r.baseline, k, (s) => METRICS[metric](s.summary));
    t[k] = val(condition, k, applied) - val(r.baseline, k, applied);
  }
  return pairedDelta(m, t);
}

/** A compact text table: per-condition medians and paired deltas vs the baseline. */
export function formatInterleaved(r: InterleavedResult, metrics: Metric[] = Object.keys(METRICS) as Metric[]): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
  const others = r.conditions.filter((c) => c !== r.baseline);
  const head = ['median of segment medians, ms', ...r.conditions, ...others.map((c) => `Δ ${c} (ci)`)];
  const rows = metrics.map((m) => [
    m,
    ...r.conditions.map((c) => f(r.perCondition[c].medians[m])),
    ...others.map((c) => {
      const d = r.deltas[c][m];
      return `${f(d.median)} (${f(d.ci[0])}…${f(d.ci[1])})`;
    }),
  ]);
  const w = head.map((_, i) => Math.max(head[i].length, ...rows.map((x) => x[i].length)));
  const line = (x: string[]) => x.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const conf = others.length ? r.deltas[others[0]].e2e.confidence : NaN;
  return [
    line(head),
    ...rows.map(line),
    '',
    `${r.options.rounds} rounds × ${r.conditions.length} conditions × ${r.options.segmentMs} ms segments ` +
      `(first ${r.options.settleMs} ms of each discarded, ${r.options.order} order); Δ = median of per-round ` +
      `paired differences vs ${r.baseline}, ci = sign-test interval (${(conf * 100).toFixed(1)}% coverage); ` +
      `switch lateness median ${f(r.switchLate.median)} ms, max ${f(r.switchLate.p99)} ms`,
  ].join('\n');
}
