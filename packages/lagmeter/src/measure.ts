// From raw page/relay events to per-frame and per-input records, stages and the summary.
//
// Event model: every event is {run, frame|input, event, t, clock}; a stage is the interval between
// two named events. All t are epoch ms; `clock` names the clock that took it ('client', 'host',
// 'relay', 'webrtc' = CLOCK_MONOTONIC of WebRTC's timing-frame info, converted). On one machine
// these share one clock; the DataChannel offset estimate (reported next to one-way figures)
// says how well that holds.
import type { RawRun, StatsSnapshot } from './pipeline.js';
import { bootstrapMedianCI, dist, median, type Dist } from './stats.js';
import { estimateOffset, type ClockEstimate } from './clock.js';

export type Clock = 'client' | 'host' | 'relay' | 'webrtc';

export interface LagEvent {
  run: string;
  frame?: number;
  input?: number;
  event: string;
  t: number;
  clock: Clock;
}

/** Per displayed frame (first presentation of each stamped frame id inside the window). */
export interface FrameRecord {
  frame: number;
  rtpTimestamp: number | null;
  inputSeq: number;
  /** Epoch ms. */
  render?: number;
  capture: number;
  encodeStart?: number;
  encodeEnd?: number;
  pacerExit?: number;
  sentFirst?: number;
  sentLast?: number;
  relayOutLast?: number;
  receiveLast?: number;
  decodeStart?: number;
  decodeEnd?: number;
  presented: number;
  /** rVFC captureTime (WebRTC's estimate of the sender's capture instant, converted to the client's clock). */
  webrtcCapture?: number;
  packets?: number;
  timingSampled: boolean;
}

export interface InputRecord {
  input: number;
  emitted: number;
  received?: number;
  appliedFrame?: number;
  captured?: number;
  displayedFrame?: number;
  displayed?: number;
}

export type StageSource = 'per-frame' | 'per-input' | 'timing-frames' | 'getStats' | 'none';
export type Stage = Dist & { source: StageSource };

export interface Summary {
  e2e: Dist & { ci95: [number, number] };
  stages: Record<string, Stage>;
  network: {
    rtt: Stage;
    rtt_ice: Dist;
    rtt_datachannel: Dist;
    loss: number;
    nack: number;
    pli: number;
    freezes: number;
    freeze_ms: number;
    retransmitted: number;
    packets_received: number;
    relay?: {
      down: { lost: number; forwarded: number; reordered: number };
      up: { lost: number; forwarded: number; reordered: number };
    };
  };
  clock: { mode: 'shared'; estimate: ClockEstimate | null; note: string };
  crosscheck: {
    /** Pixel-stamped (host capture → client presentation) − WebRTC's (rVFC captureTime → presentation), per frame. */
    rvfc_minus_pixel: Dist;
    /** Pixel (host capture → decode end) − googTimingFrameInfo (capture → decode end), sampled frames. */
    timing_minus_pixel: Dist;
    capture_to_display_pixel: Dist;
    capture_to_display_rvfc: Dist;
  };
  frames: { displayed: number; stamped: number; unreadable: number; host_rendered: number; fps_displayed: number };
  inputs: { emitted: number; echoed: number };
  codec: {
    negotiated: string | null;
    absCaptureTime: boolean;
    capture: string;
    encodeMsAvg: number;
    decodeMsAvg: number;
    targetBitrate: number | null;
    qualityLimitation: string | null;
    resolution: string | null;
  };
  config: Record<string, unknown>;
}

type Timing = {
  rtp: number;
  capture: number;
  encodeStart: number;
  encodeEnd: number;
  packetized: number;
  pacerExit: number;
  recvStart: number;
  recvFinish: number;
  decodeStart: number;
  decodeEnd: number;
  render: number;
  outlier: boolean;
  timer: boolean;
};

/** Parse googTimingFrameInfo (15 comma-separated fields); times converted to epoch ms. */
export function parseTimingFrameInfo(s: string, monoToEpoch: number): Timing | null {
  const f = s.split(',').map(Number);
  if (f.length < 15 || f.some((x) => !Number.isFinite(x))) return null;
  // Before the receiver has an RTCP-based NTP estimate, the sender-side fields are deltas around 0.
  if (f[1] <= 0 || f[8] <= 0) return null;
  const e = (x: number) => x + monoToEpoch;
  return {
    rtp: f[0] >>> 0,
    capture: e(f[1]),
    encodeStart: e(f[2]),
    encodeEnd: e(f[3]),
    packetized: e(f[4]),
    pacerExit: e(f[5]),
    recvStart: e(f[8]),
    recvFinish: e(f[9]),
    decodeStart: e(f[10]),
    decodeEnd: e(f[11]),
    render: e(f[12]),
    outlier: f[13] === 1,
    timer: f[14] === 1,
  };
}

function num(o: unknown, k: string): number {
  const v = (o as Record<string, unknown> | undefined)?.[k];
  return typeof v === 'number' ? v : NaN;
}

/** Counter delta of stats[type][key] over the window (last snapshot before `from` → last snapshot). */
function delta(stats: StatsSnapshot[], from: number, type: string, key: string): number {
  const before = [...stats].reverse().find((s) => s.t <= from && s[type]) ?? stats.find((s) => s[type]);
  const after = [...stats].reverse().find((s) => s[type]);
  if (!before || !after) return NaN;
  return num(after[type], key) - num(before[type], key);
}

/** Per-measurement samples of a cumulative total/count pair (e.g. totalRoundTripTime / roundTripTimeMeasurements). */
function perMeasurement(
  stats: StatsSnapshot[],
  from: number,
  to: number,
  type: string,
  total: string,
  count: string,
  scale = 1000,
): number[] {
  const out: number[] = [];
  let prev: StatsSnapshot | null = null;
  for (const s of stats) {
    if (!s[type]) continue;
    if (prev && s.t >= from && s.t <= to + 1000) {
      const dn = num(s[type], count) - num(prev[type], count);
      const dt = num(s[type], total) - num(prev[type], total);
      if (dn > 0 && Number.isFinite(dt)) out.push((dt / dn) * scale);
    }
    prev = s;
  }
  return out;
}

export interface Analysis {
  events: LagEvent[];
  frames: FrameRecord[];
  inputs: InputRecord[];
  summary: Summary;
}

const stage = (xs: number[], source: StageSource): Stage => ({ ...dist(xs), source: xs.length ? source : 'none' });

export function analyze(raw: RawRun, runId = 'run'): Analysis {
  const { from, to } = raw.window;
  const hostFrames = new Map(raw.host.frames.map((f) => [f.id, f]));
  const hostInputs = new Map(raw.host.inputs.map((i) => [i.seq, i]));

  // Timing-frame samples, deduplicated by RTP timestamp.
  const timing = new Map<number, Timing>();
  for (const s of raw.client.stats) {
    const g = (s['inbound-rtp'] as Record<string, unknown> | undefined)?.googTimingFrameInfo;
    if (typeof g !== 'string') continue;
    const t = parseTimingFrameInfo(g, raw.monoToEpoch);
    if (t) timing.set(t.rtp, t);
  }

  // Relay truth: first/last packet per RTP timestamp of the video SSRC (down direction).
  const videoSsrc = num([...raw.client.stats].reverse().find((s) => s['inbound-rtp'])?.['inbound-rtp'], 'ssrc');
  const relayFrames = new Map<number, { firstIn: number; lastIn: number; lastOut: number; packets: number }>();
  for (const r of raw.relay?.records ?? []) {
    if (r.dir !== 'down' || !r.rtp || r.rtp.ssrc !== videoSsrc) continue;
    const ts = r.rtp.ts >>> 0;
    const e = relayFrames.get(ts);
    const out = r.tOut ?? NaN;
    if (!e) relayFrames.set(ts, { firstIn: r.tIn, lastIn: r.tIn, lastOut: out, packets: 1 });
    else {
      e.firstIn = Math.min(e.firstIn, r.tIn);
      e.lastIn = Math.max(e.lastIn, r.tIn);
      if (Number.isFinite(out)) e.lastOut = Number.isFinite(e.lastOut) ? Math.max(e.lastOut, out) : out;
      e.packets++;
    }
  }

  // Displayed frames: first presentation of each stamped id.
  const seen = new Set<number>();
  const frames: FrameRecord[] = [];
  let unreadable = 0;
  const inWindow = raw.client.displayed.filter(
    (d) => (d.presentationTime ?? d.tCb) >= from && (d.presentationTime ?? d.tCb) < to,
  );
  for (const d of inWindow) {
    if (d.frameId === null) {
      if (raw.config.observe) unreadable++;
      continue;
    }
    if (seen.has(d.frameId)) continue;
    seen.add(d.frameId);
    const h = hostFrames.get(d.frameId);
    if (!h) continue;
    const rtp = d.rtpTimestamp === null ? null : d.rtpTimestamp >>> 0;
    const t = rtp === null ? undefined : timing.get(rtp);
    const rf = rtp === null ? undefined : relayFrames.get(rtp);
    frames.push({
      frame: d.frameId,
      rtpTimestamp: rtp,
      inputSeq: d.inputSeq ?? 0,
      render: h.tTick,
      capture: h.tCapture,
      // Sender-side timing fields are offsets from the sender's own capture timestamp: anchor them
      // on the host's capture event (the receiver's estimate of that capture instant is only as good
      // as RTCP's NTP mapping, which the cross-check measures separately).
      encodeStart: t ? h.tCapture + (t.encodeStart - t.capture) : undefined,
      encodeEnd: t ? h.tCapture + (t.encodeEnd - t.capture) : undefined,
      pacerExit: t ? h.tCapture + (t.pacerExit - t.capture) : undefined,
      sentFirst: rf?.firstIn,
      sentLast: rf?.lastIn,
      relayOutLast: rf && Number.isFinite(rf.lastOut) ? rf.lastOut : undefined,
      receiveLast: d.receiveTime ?? undefined,
      decodeStart: t?.decodeStart,
      decodeEnd: t?.decodeEnd,
      presented: d.presentationTime ?? d.tCb,
      webrtcCapture: d.captureTime ?? undefined,
      packets: rf?.packets,
      timingSampled: !!t,
    });
  }

  // Inputs: the echo is the first displayed frame whose stamped input sequence covers the input.
  const shown = inWindow.filter((d) => d.inputSeq !== null);
  const inputs: InputRecord[] = [];
  let k = 0;
  const emitted = raw.client.inputs.filter((i) => i.tEmit >= from && i.tEmit < to - 300);
  for (const i of emitted) {
    while (k < shown.length && (shown[k].presentationTime ?? shown[k].tCb) < i.tEmit) k++;
    const hit = shown.slice(k).find((d) => (d.inputSeq ?? -1) >= i.seq);
    const hi = hostInputs.get(i.seq);
    const applied = hi ? hostFrames.get(hi.frameId) : undefined;
    inputs.push({
      input: i.seq,
      emitted: i.tEmit,
      received: hi?.tRecv,
      appliedFrame: hi?.frameId,
      captured: applied?.tCapture,
      displayedFrame: hit?.frameId ?? undefined,
      displayed: hit ? (hit.presentationTime ?? hit.tCb) : undefined,
    });
  }

  // Events (the uniform model), for the JSONL.
  const events: LagEvent[] = [];
  const ev = (e: Omit<LagEvent, 'run'>) => Number.isFinite(e.t) && events.push({ run: runId, ...e });
  for (const i of inputs) {
    ev({ input: i.input, event: 'input_emitted', t: i.emitted, clock: 'client' });
    if (i.received !== undefined) ev({ input: i.input, event: 'input_received', t: i.received, clock: 'host' });
    if (i.captured !== undefined)
      ev({ input: i.input, frame: i.appliedFrame, event: 'input_applied', t: i.captured, clock: 'host' });
    if (i.displayed !== undefined)
      ev({ input: i.input, frame: i.displayedFrame, event: 'input_displayed', t: i.displayed, clock: 'client' });
  }
  for (const f of frames) {
    const e = (event: string, t: number | undefined, clock: Clock) =>
      t !== undefined && ev({ frame: f.frame, event, t, clock });
    e('rendered', f.render, 'host');
    e('captured', f.capture, 'host');
    e('encode_start', f.encodeStart, 'webrtc');
    e('encode_end', f.encodeEnd, 'webrtc');
    e('pacer_exit', f.pacerExit, 'webrtc');
    e('first_packet_sent', f.sentFirst, 'relay');
    e('last_packet_relayed', f.relayOutLast, 'relay');
    e('last_packet_received', f.receiveLast, 'client');
    e('decode_start', f.decodeStart, 'webrtc');
    e('decode_end', f.decodeEnd, 'webrtc');
    e('presented', f.presented, 'client');
  }

  // Stages.
  const d = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? b - a : NaN);
  const per = <T>(xs: T[], fn: (x: T) => number) => xs.map(fn).filter((x) => Number.isFinite(x));
  const sampled = frames.filter((f) => f.timingSampled);
  const cs = raw.client.stats;
  const hs = raw.host.stats;
  const framesEncoded = delta(hs, from, 'outbound-rtp', 'framesEncoded');
  const encodeAvg = (delta(hs, from, 'outbound-rtp', 'totalEncodeTime') / framesEncoded) * 1000;
  const framesDecoded = delta(cs, from, 'inbound-rtp', 'framesDecoded');
  const decodeAvg = (delta(cs, from, 'inbound-rtp', 'totalDecodeTime') / framesDecoded) * 1000;
  const jbAvg =
    (delta(cs, from, 'inbound-rtp', 'jitterBufferDelay') / delta(cs, from, 'inbound-rtp', 'jitterBufferEmittedCount')) *
    1000;
  const fromTiming = (fn: (f: FrameRecord) => number, fallback: number): Stage => {
    const xs = per(sampled, fn);
    if (xs.length >= 3) return stage(xs, 'timing-frames');
    return Number.isFinite(fallback)
      ? { median: Math.round(fallback * 100) / 100, p95: NaN, p99: NaN, n: 0, source: 'getStats' }
      : stage([], 'none');
  };
  const hasRelay = frames.some((f) => f.sentFirst !== undefined);
  const stages: Record<string, Stage> = {
    input_uplink: stage(
      per(inputs, (i) => d(i.emitted, i.received)),
      'per-input',
    ),
    host_processing: stage(
      per(inputs, (i) => d(i.received, i.captured)),
      'per-input',
    ),
    capture: fromTiming((f) => d(f.capture, f.encodeStart), NaN),
    encode: fromTiming((f) => d(f.encodeStart, f.encodeEnd), encodeAvg),
    send: hasRelay
      ? stage(
          per(frames, (f) => d(f.capture, f.sentFirst)),
          'per-frame',
        )
      : fromTiming((f) => d(f.capture, f.pacerExit), NaN),
    network_down: hasRelay
      ? stage(
          per(frames, (f) => d(f.sentFirst, f.receiveLast)),
          'per-frame',
        )
      : fromTiming((f) => d(f.pacerExit, f.receiveLast), NaN),
    jitter_buffer: fromTiming((f) => d(f.receiveLast, f.decodeStart), jbAvg),
    decode: fromTiming((f) => d(f.decodeStart, f.decodeEnd), decodeAvg),
    render: fromTiming((f) => d(f.decodeEnd, f.presented), NaN),
    receive_to_display: stage(
      per(frames, (f) => d(f.receiveLast, f.presented)),
      'per-frame',
    ),
    capture_to_display: stage(
      per(frames, (f) => d(f.capture, f.presented)),
      'per-frame',
    ),
    display_wait: stage(
      per(inputs, (i) => d(i.captured, i.displayed)),
      'per-input',
    ),
  };

  const e2eSamples = per(inputs, (i) => d(i.emitted, i.displayed));
  const e2e = {
    ...dist(e2eSamples),
    ci95: bootstrapMedianCI(e2eSamples, 1000, raw.config.seed).map((x) => Math.round(x * 100) / 100) as [
      number,
      number,
    ],
  };

  // Network.
  const rttRtcp = perMeasurement(hs, from, to, 'remote-inbound-rtp', 'totalRoundTripTime', 'roundTripTimeMeasurements');
  const rttIce = perMeasurement(cs, from, to, 'candidate-pair', 'totalRoundTripTime', 'responsesReceived');
  const clockSamples = raw.client.clock.filter((c) => c.t0 >= from && c.t3 < to);
  const rttDc = clockSamples.map((c) => c.t3 - c.t0 - (c.t2 - c.t1));
  const recv = delta(cs, from, 'inbound-rtp', 'packetsReceived');
  const lost = delta(cs, from, 'inbound-rtp', 'packetsLost');
  const rs = raw.relay?.stats;
  const network: Summary['network'] = {
    rtt: rttRtcp.length ? stage(rttRtcp, 'getStats') : stage(rttIce, 'getStats'),
    rtt_ice: dist(rttIce),
    rtt_datachannel: dist(rttDc),
    loss: Number.isFinite(lost / (recv + lost)) ? Math.round((lost / (recv + lost)) * 1e4) / 1e4 : 0,
    nack: delta(cs, from, 'inbound-rtp', 'nackCount'),
    pli: delta(cs, from, 'inbound-rtp', 'pliCount'),
    freezes: delta(cs, from, 'inbound-rtp', 'freezeCount'),
    freeze_ms: Math.round(delta(cs, from, 'inbound-rtp', 'totalFreezesDuration') * 1000),
    retransmitted: delta(cs, from, 'inbound-rtp', 'retransmittedPacketsReceived'),
    packets_received: recv,
    ...(rs
      ? {
          relay: {
            down: {
              lost: rs.down.lost + rs.down.queueDrops,
              forwarded: rs.down.forwarded,
              reordered: rs.down.reordered,
            },
            up: { lost: rs.up.lost + rs.up.queueDrops, forwarded: rs.up.forwarded, reordered: rs.up.reordered },
          },
        }
      : {}),
  };

  const rvfcMinusPixel = per(frames, (f) => (f.webrtcCapture !== undefined ? f.capture - f.webrtcCapture : NaN));
  const timingMinusPixel = per(sampled, (f) => {
    const t = f.rtpTimestamp !== null ? timing.get(f.rtpTimestamp) : undefined;
    return t ? f.capture - t.capture : NaN;
  });
  const lastOut = [...hs].reverse().find((s) => s['outbound-rtp'])?.['outbound-rtp'] as
    Record<string, unknown> | undefined;
  const cfg = raw.config;
  const summary: Summary = {
    e2e,
    stages,
    network,
    clock: {
      mode: 'shared',
      estimate: estimateOffset(clockSamples),
      note: 'one machine: all events on one clock; the DataChannel NTP estimate (host − client) should be ≈ 0 within its bound',
    },
    crosscheck: {
      rvfc_minus_pixel: dist(rvfcMinusPixel),
      timing_minus_pixel: dist(timingMinusPixel),
      capture_to_display_pixel: dist(per(frames, (f) => f.presented - f.capture)),
      capture_to_display_rvfc: dist(
        per(frames, (f) => (f.webrtcCapture !== undefined ? f.presented - f.webrtcCapture : NaN)),
      ),
    },
    frames: {
      displayed: inWindow.length,
      stamped: frames.length,
      unreadable,
      host_rendered: raw.host.frames.filter((f) => f.tCapture >= from && f.tCapture < to).length,
      fps_displayed: Math.round((frames.length / ((to - from) / 1000)) * 10) / 10,
    },
    inputs: { emitted: inputs.length, echoed: e2eSamples.length },
    codec: {
      negotiated: raw.negotiated.codec,
      absCaptureTime: raw.negotiated.absCaptureTime,
      capture: raw.negotiated.capture,
      encodeMsAvg: Math.round(encodeAvg * 100) / 100,
      decodeMsAvg: Math.round(decodeAvg * 100) / 100,
      targetBitrate: typeof lastOut?.targetBitrate === 'number' ? lastOut.targetBitrate : null,
      qualityLimitation: typeof lastOut?.qualityLimitationReason === 'string' ? lastOut.qualityLimitationReason : null,
      resolution: lastOut ? `${lastOut.frameWidth}x${lastOut.frameHeight}` : null,
    },
    config: {
      codec: cfg.codec,
      res: `${cfg.w}x${cfg.h}`,
      fps: cfg.fps,
      duration_ms: cfg.durationMs,
      warmup_ms: cfg.warmupMs,
      relay: cfg.relay,
      down: cfg.down,
      up: cfg.up,
      seed: cfg.seed,
      chromium: raw.chromium,
    },
  };
  return { events, frames, inputs, summary };
}

export { median };
