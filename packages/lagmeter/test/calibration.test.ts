// Calibration against injected truth: the relay adds known delays / jitter / loss; lagmeter must
// see them in the right stages. Vitest project "lagmeter" (run on its own, after the others).
//
// Design (see README "Calibration"):
// - Delay deltas come from ONE connection whose relay profile is switched live, interleaved
//   base / delay-down-40 / delay-40 in 2.5 s segments (A B C | C B A | …, 6 rounds, the first 1 s
//   of each segment discarded), compared round by round (median of the paired differences of
//   per-segment medians). Load drift on this shared 2-vCPU box hits every condition alike;
//   separate runs a minute apart did not match (+157 instead of +80 under load).
// - The browser runs with zero playout delay (receiver renders each frame when complete), so the
//   receiver's adaptive jitter buffer — which reacts to a live delay step over many seconds and
//   absorbed 15–25 ms of the 40 — does not move with the condition.
// - RTT is the DataChannel ping RTT (the clock estimator's exchanges, 10/s; per segment its 10th
//   percentile — the pages' event-loop delay only adds to a ping, and under load it moved the
//   median by +6 ms): WebRTC's RTCP RTT comes ~1/s and a report reflects a sender report up to
//   ~1 s old, leaving 0–1 clean samples per segment. RTCP RTT is logged for comparison.
// - Counts (NACK, retransmissions, freezes) come from separate steady runs; the cross-check from
//   steady runs with symmetric paths (WebRTC's capture-time estimate assumes symmetry).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import {
  analyze,
  defaultConfig,
  formatInterleaved,
  openLab,
  runInterleaved,
  runPipeline,
  pairedError,
  type InterleavedResult,
  type Lab,
  type Metric,
  type RunConfig,
  type Summary,
} from 'lagmeter';
import { parseLinkArgs, type LinkArgs } from '../src/relay/index.js';

const CHROMIUM = process.env.LAGMETER_CHROMIUM ?? '/usr/bin/chromium';
// A missing browser is a failure, not a skip: the calibration is the evidence the numbers are right.
if (!existsSync(CHROMIUM)) {
  throw new Error(
    `lagmeter calibration needs Chromium at ${CHROMIUM}: apt-get install -y chromium (./run setup does), or set LAGMETER_CHROMIUM`,
  );
}
const DURATION = Number(process.env.LAGMETER_TEST_DURATION_MS ?? 4000);
const ROUNDS = Number(process.env.LAGMETER_TEST_ROUNDS ?? 6);

const BASE: Partial<RunConfig> = {
  w: 640,
  h: 360,
  fps: 30,
  warmupMs: 2000,
  seed: 7,
  // ~100 inputs/s: ~130 echoed inputs per analysed segment.
  inputIntervalMs: [5, 15],
};

let lab: Lab;
const results = new Map<string, Summary>();
let inter: InterleavedResult;

const log = (s: string) => console.log(`[lagmeter calibration] ${s}`);

async function measure(name: string, link: LinkArgs, extra: Partial<RunConfig> = {}): Promise<Summary> {
  const cfg = defaultConfig({ ...BASE, durationMs: DURATION, ...parseLinkArgs(link), ...extra });
  const s = analyze(await runPipeline(cfg, lab), name).summary;
  results.set(name, s);
  const st = s.stages;
  log(
    `${name}: e2e ${s.e2e.median} (n ${s.e2e.n}) network_down ${st.network_down.median} rtt_dc ${s.network.rtt_datachannel.median} ` +
      `rtt_rtcp ${s.network.rtt_rtcp.median} (n ${s.network.rtt_rtcp.n}) recv→disp ${st.receive_to_display.median} ` +
      `nack ${s.network.nack} retx ${s.network.retransmitted} freezes ${s.network.freezes} loss ${s.network.loss} ` +
      `relay lost ${s.network.relay?.down.lost} reordered ${s.network.relay?.down.reordered} ` +
      `clock ${s.clock.estimate?.offset}±${s.clock.estimate?.bound} rvfc−pixel ${s.crosscheck.rvfc_minus_pixel.median} (n ${s.crosscheck.rvfc_minus_pixel.n})`,
  );
  return s;
}

/** |measured − truth| ≤ tol, with the numbers in the failure message. */
function near(what: string, measured: number, truth: number, tol: number): void {
  expect(Math.abs(measured - truth), `${what}: ${measured} vs ${truth} ± ${tol}`).toBeLessThanOrEqual(tol);
}

describe('lagmeter calibration: delays (headless Chromium, relay, zero playout delay)', () => {
  beforeAll(async () => {
    lab = await openLab({ playout: 'zero' });
  }, 60_000);
  afterAll(async () => {
    await lab?.close();
  });

  it('baseline (steady run): every stage is measured, stamps readable, clock offset ≈ 0 within its bound', async () => {
    const s = await measure('baseline', {});
    expect(s.frames.stamped).toBeGreaterThan(100);
    expect(s.frames.unreadable).toBeLessThan(s.frames.stamped * 0.02);
    expect(s.e2e.n).toBeGreaterThan(100);
    const c = s.clock.estimate!;
    expect(Math.abs(c.offset)).toBeLessThanOrEqual(c.bound + 0.5);
    expect(Math.abs(c.offset)).toBeLessThan(2);
  }, 60_000);

  it('interleaved in one connection: base / --delay-down 40ms / --delay 40ms', async () => {
    inter = await runInterleaved(
      [
        { name: 'base', ...parseLinkArgs({}) },
        { name: 'delay-down-40', ...parseLinkArgs({ delayDown: '40ms' }) },
        { name: 'delay-40', ...parseLinkArgs({ delay: '40ms' }) },
      ],
      { segmentMs: 2500, settleMs: 1000, rounds: ROUNDS },
      BASE,
      lab,
    );
    log(`interleaved\n${formatInterleaved(inter)}`);
    const rtcpPerSeg = inter.segments.map((s) => s.n.rtt_rtcp);
    log(
      `samples per segment: e2e ${Math.min(...inter.segments.map((s) => s.n.e2e))}–${Math.max(...inter.segments.map((s) => s.n.e2e))}, ` +
        `network_down ${Math.min(...inter.segments.map((s) => s.n.network_down))}–${Math.max(...inter.segments.map((s) => s.n.network_down))}, ` +
        `DataChannel RTT ${Math.min(...inter.segments.map((s) => s.n.rtt_datachannel))}–${Math.max(...inter.segments.map((s) => s.n.rtt_datachannel))}, ` +
        `RTCP RTT ${Math.min(...rtcpPerSeg)}–${Math.max(...rtcpPerSeg)} (total ${rtcpPerSeg.reduce((a, b) => a + b, 0)} in ${rtcpPerSeg.length} segments)`,
    );
    for (const s of inter.segments) {
      expect(s.n.e2e, `${s.condition}#${s.round} echoed inputs`).toBeGreaterThan(50);
      expect(s.n.network_down, `${s.condition}#${s.round} frames`).toBeGreaterThan(20);
      expect(s.n.rtt_datachannel, `${s.condition}#${s.round} pings`).toBeGreaterThanOrEqual(8);
    }
    // The relay switched as told, segment by segment (its own records; the tight comparison is
    // against what it applied, below — under CPU starvation its timers run late by a few ms).
    for (const s of inter.segments) {
      const c = s.condition;
      near(`${c}#${s.round} relay down delay`, s.relayDelay.down, c === 'base' ? 0 : 40, 5);
      near(`${c}#${s.round} relay up delay`, s.relayDelay.up, c === 'delay-40' ? 40 : 0, 5);
    }
    for (const c of ['delay-down-40', 'delay-40'])
      log(
        `${c}: relay applied Δdown ${inter.applied[c].down.median} Δup ${inter.applied[c].up.median} Δboth ${inter.applied[c].both.median} ms (nominal ${c === 'delay-40' ? '40/40/80' : '40/0/40'})`,
      );
  }, 150_000);

  // Each figure is held to the injected truth — the relay's applied delay, paired by round
  // (= the nominal 40 / 80 ms when the relay keeps time; logged above) — with the issue's
  // tolerances; the nominal delta is asserted too, with the relay's own deviation allowed for.
  const check = (cond: string, metric: Metric, truth: 'down' | 'up' | 'both', nominal: number, tol: number) => {
    const err = pairedError(inter, cond, metric, truth);
    const d = inter.deltas[cond][metric];
    const a = inter.applied[cond][truth];
    log(
      `${cond} ${metric}: Δ ${d.median} (ci ${d.ci[0]}…${d.ci[1]}) vs applied ${a.median} → error ${err.median} (ci ${err.ci[0]}…${err.ci[1]}); nominal ${nominal} ± ${tol}`,
    );
    near(`${cond} ${metric} − applied truth`, err.median, 0, tol);
    near(
      `${cond} Δ${metric} (median of rounds) vs Δapplied (relay off nominal by ${(a.median - nominal).toFixed(2)})`,
      d.median,
      a.median,
      tol,
    );
  };

  it('--delay-down 40ms: network_down +40 ± 2, e2e +40 ± 5, RTT +40 ± 5 (paired, median of rounds)', () => {
    check('delay-down-40', 'network_down', 'down', 40, 2);
    check('delay-down-40', 'e2e', 'both', 40, 5);
    check('delay-down-40', 'rtt_datachannel_p10', 'both', 40, 5);
    check('delay-down-40', 'input_uplink', 'up', 0, 5);
  });

  it('--delay 40ms (both ways): e2e +80 ± 5, RTT +80 ± 5 (paired, median of rounds)', () => {
    check('delay-40', 'e2e', 'both', 80, 5);
    check('delay-40', 'rtt_datachannel_p10', 'both', 80, 5);
    check('delay-40', 'network_down', 'down', 40, 2);
    check('delay-40', 'input_uplink', 'up', 40, 5);
  });

  it('bursty 5% loss (Gilbert–Elliott): freezes are counted', async () => {
    // Bursts (mean 10 packets, ~5% average) on a 100 ms each-way path with zero playout delay: a
    // frame hit by a burst waits at least one 200 ms round trip for its retransmission, longer
    // than WebRTC's freeze threshold (max(3 × mean frame interval, mean + 150 ms) ≈ 183 ms at 30 fps).
    // The relay's loss pattern is seeded per packet, but which packets carry media (rather than
    // bandwidth probes or padding) varies from run to run: a run whose bursts all hit probes freezes
    // nothing (seen once in CI: 154 packets lost, 13 retransmitted, no freeze). So up to three runs
    // with other seeds; every run must show the loss and the retransmissions, one the freeze.
    let s!: Summary;
    for (const seed of [7, 8, 9]) {
      s = await measure(`gilbert-5 seed ${seed}`, { delay: '100ms', lossDown: 'gilbert:0.005,0.1' }, { seed });
      expect(s.network.relay!.down.lost).toBeGreaterThan(0);
      expect(s.network.retransmitted).toBeGreaterThan(0);
      if (s.network.freezes > 0) break;
    }
    expect(s.network.freezes).toBeGreaterThan(0);
  }, 120_000);
});

// Counts and the cross-check with Chromium's default (adaptive) playout, as `lagmeter run` uses it.
describe('lagmeter calibration: jitter, loss, cross-check (default adaptive playout)', () => {
  beforeAll(async () => {
    lab = await openLab();
  }, 60_000);
  afterAll(async () => {
    await lab?.close();
  });

  it('jitter 5ms without reordering: no NACK storm', async () => {
    const s = await measure('jitter-5', { delay: '10ms', jitter: '5ms' });
    expect(s.network.relay?.down.reordered).toBe(0);
    expect(s.network.nack).toBeLessThanOrEqual(5);
  }, 60_000);

  it('cross-check: pixel-stamped capture agrees frame by frame with WebRTC’s capture time (one per-stream constant; symmetric paths)', async () => {
    // Presentation is the same rVFC event on both sides, so capture→display differs by the capture
    // instants only. Every WebRTC capture time (abs-capture-time, rVFC captureTime, timing frames)
    // starts from the instant Chromium assigns the frame when it enters the track, and Chromium
    // 156.0.8078.129 maps the source's timestamps to its clock with a per-stream offset: per run it
    // read 0–16 ms (generator and canvas capture alike), yet within a run it moves < 1 ms (p95 of
    // the spread). (Chromium .73 read −0.5…+0.8 ms: see README "Cross-check".) So:
    // - per frame, pixel − abs-capture-time stays within 3 ms of the run's own constant: the pixel
    //   stamps time every frame as WebRTC does;
    // - the constant is below one frame interval minus 3 ms: both sides name the same frame (an
    //   off-by-one decode would shift it by a whole frame interval);
    // - rVFC captureTime carries the same constant plus half the RTCP path asymmetry (sender
    //   reports, symmetric-path assumption; on loopback bounded by RTT/2): within 3 + RTT/2 of
    //   abs-capture-time.
    await measure('baseline-adaptive', {});
    for (const name of ['baseline', 'baseline-adaptive', 'jitter-5']) {
      const s = results.get(name)!;
      const x = s.crosscheck.rvfc_minus_pixel;
      const a = s.crosscheck.abs_capture_minus_pixel;
      const spread = s.crosscheck.abs_capture_spread;
      const rtt = s.network.rtt_rtcp.median;
      const frame = 1000 / BASE.fps!;
      log(
        `cross-check ${name}: per-frame (pixel − WebRTC) capture: abs-capture-time median ${a.median} ms ` +
          `(spread p95 ${spread.p95}, n ${a.n}), rVFC captureTime ${x.median} ms (n ${x.n}, ` +
          `tolerance vs abs ${(3 + rtt / 2).toFixed(2)} = 3 + RTCP RTT ${rtt}/2); DataChannel RTT ${s.network.rtt_datachannel.median}`,
      );
      expect(a.n).toBeGreaterThan(20);
      near(`${name} |pixel − abs-capture-time − run constant| p95`, spread.p95, 0, 3);
      near(`${name} pixel − abs-capture-time constant (same frame)`, a.median, 0, frame - 3);
      // ≥ half of the 120 frames of the window (under load some are dropped or lack captureTime).
      expect(x.n).toBeGreaterThanOrEqual(60);
      expect(Number.isFinite(rtt)).toBe(true);
      near(`${name} rVFC − abs-capture-time constants`, x.median, a.median, 3 + rtt / 2);
    }
  }, 60_000);

  it('5% loss: retransmissions are counted', async () => {
    const s = await measure('loss-5', { delay: '40ms', lossDown: '5%' });
    expect(s.network.relay!.down.lost).toBeGreaterThan(0);
    expect(s.network.nack).toBeGreaterThan(0);
    expect(s.network.retransmitted).toBeGreaterThan(0);
  }, 60_000);
});
