// From raw page/relay events to per-frame and per-input records, stages and the summary.
//
// Event model: every event is {run, frame|input, event, t, clock}; a stage is the interval between
// two named events. All t are epoch ms; `clock` names the clock that took it ('client', 'host',
// 'relay', 'webrtc' = CLOCK_MONOTONIC of WebRTC's timing-frame info, converted). On one machine
// these share one clock; the DataChannel offset estimate (reported next to one-way figures)
// says how well that holds.
import type { RawRun, StatsSnapshot } from './pipeline.js';
import type { PacketRecord } from './relay/index.js';
import { bootstrapMedianCI, dist, median, quantileSorted, sorted, type Dist } from './stats.js';
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
    /** RTCP RTT (remote-inbound-rtp) when there are samples, else ICE's. */
    rtt: Stage;
    /** RTCP RTT samples only (NaN median when none — e.g. a short segment, see RTCP_STALE_MS). */
    rtt_rtcp: Dist;
    rtt_ice: Dist;
    rtt_datachannel: Dist;
    /** 10th percentile of the DataChannel ping RTTs: the propagation floor, with less of the pages'
     * event-loop delay (always ≥ 0, it only adds) than the median — what paired RTT deltas use. */
    rtt_datachannel_p10: number;
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
    /** Host capture − abs-capture-time capture timestamp (the sender's own clock, no RTCP estimate),
     * frames whose RTP timestamp a getSynchronizationSources sample caught (~1 per stats interval). */
    abs_capture_minus_pixel: Dist;
    /** |(host capture − abs-capture-time) − its run median| per frame: how far each frame is from
     * one per-stream constant. Chromium 156.0.8078.129 maps the source's frame timestamps to its
     * clock with a per-stream offset (0–16 ms here, constant within a run), shared by every WebRTC
     * capture time (abs-capture-time, rVFC, timing frames); the spread is what the pixel stamps must
     * match per frame. */
    abs_capture_spread: Dist;
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

/** Counter delta of stats[type][key] over the window (last snapshot before `from` → last snapshot ≤ `to`). */
function delta(stats: StatsSnapshot[], from: number, type: string, key: string, to = Infinity): number {
  const before = [...stats].reverse().find((s) => s.t <= from && s[type]) ?? stats.find((s) => s[type]);
  const after = [...stats].reverse().find((s) => s.t <= to && s[type]);
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
    if (prev && s.t >= from && s.t <= to) {
      const dn = num(s[type], count) - num(prev[type], count);
      const dt = num(s[type], total) - num(prev[type], total);
      if (dn > 0 && Number.isFinite(dt)) out.push((dt / dn) * scale);
    }
    prev = s;
  }
  return out;
}

/** Relay counters of the packets that entered the relay inside [from, to), from its records. */
function relayStatsIn(
  records: readonly PacketRecord[],
  from: number,
  to: number,
): Record<'up' | 'down', { lost: number; queueDrops: number; forwarded: number; reordered: number }> {
  const out = {
    up: { lost: 0, queueDrops: 0, forwarded: 0, reordered: 0, lastOut: -Infinity },
    down: { lost: 0, queueDrops: 0, forwarded: 0, reordered: 0, lastOut: -Infinity },
  };
  for (const r of records) {
    if (r.tIn < from || r.tIn >= to) continue;
    const d = out[r.dir];
    if (r.dropped === 'loss') d.lost++;
    else if (r.dropped === 'queue') d.queueDrops++;
    else if (r.tOut !== undefined) {
      d.forwarded++;
      if (r.tOut < d.lastOut) d.reordered++;
      else d.lastOut = r.tOut;
    }
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

/**
 * A segment of a run (runInterleaved): one link condition held from `from` to `to` (epoch ms, the
 * relay's clock). Everything counted must have happened entirely inside it, judged at the relay:
 * a frame's packets all entered the relay inside [from, to); an input was emitted at or after
 * `from` and the frame that echoes it left the relay before `to`; a DataChannel ping was sent at
 * or after `from` and answered before `to`; getStats counters are differenced over [from, to].
 */
export interface AnalyzeOptions {
  segment?: { from: number; to: number };
}

/** RTCP RTT samples reported in the first second of a segment may come from a sender report sent
 * before the switch (RTT = RR arrival − LSR − DLSR, and the SR can be ~1 s old): skip them. */
export const RTCP_STALE_MS = 1000;

export function analyze(raw: RawRun, runId = 'run', opts: AnalyzeOptions = {}): Analysis {
  const seg = opts.segment;
  const { from, to } = seg ?? raw.window;
  const statsTo = seg ? to : Infinity;
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
  const relayOf = (d: { rtpTimestamp: number | null }) =>
    d.rtpTimestamp === null ? undefined : relayFrames.get(d.rtpTimestamp >>> 0);
  const presented = (d: { presentationTime: number | null; tCb: number }) => d.presentationTime ?? d.tCb;
  const inWindow = raw.client.displayed.filter((d) => {
    if (!seg) return presented(d) >= from && presented(d) < to;
    const rf = relayOf(d);
    return rf ? rf.firstIn >= from && rf.lastIn < to : false;
  });
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
  // (In a segment the search runs over all displayed frames, then the echo must lie inside it.)
  const shown = (seg ? raw.client.displayed : inWindow).filter((d) => d.inputSeq !== null);
  const inputs: InputRecord[] = [];
  let k = 0;
  const emitted = raw.client.inputs.filter((i) => i.tEmit >= from && i.tEmit < (seg ? to : to - 300));
  for (const i of emitted) {
    while (k < shown.length && (shown[k].presentationTime ?? shown[k].tCb) < i.tEmit) k++;
    let hit = shown.slice(k).find((d) => (d.inputSeq ?? -1) >= i.seq);
    if (seg && hit) {
      const rf = relayOf(hit);
      if (!rf || rf.lastIn >= to) {
        if (presented(hit) >= to) continue; // echoed under the next condition: not this segment's
        hit = undefined;
      }
    }
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
  const dh = (type: string, key: string) => delta(hs, from, type, key, statsTo);
  const dc = (type: string, key: string) => delta(cs, from, type, key, statsTo);
  const framesEncoded = dh('outbound-rtp', 'framesEncoded');
  const encodeAvg = (dh('outbound-rtp', 'totalEncodeTime') / framesEncoded) * 1000;
  const framesDecoded = dc('inbound-rtp', 'framesDecoded');
  const decodeAvg = (dc('inbound-rtp', 'totalDecodeTime') / framesDecoded) * 1000;
  const jbAvg = (dc('inbound-rtp', 'jitterBufferDelay') / dc('inbound-rtp', 'jitterBufferEmittedCount')) * 1000;
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
  // Whole run: reports up to 1 s after the window still describe it (the run has ended by then).
  const rttFrom = seg ? from + RTCP_STALE_MS : from;
  const rttTo = seg ? to : to + 1000;
  const rttRtcp = perMeasurement(
    hs,
    rttFrom,
    rttTo,
    'remote-inbound-rtp',
    'totalRoundTripTime',
    'roundTripTimeMeasurements',
  );
  const rttIce = perMeasurement(cs, rttFrom, rttTo, 'candidate-pair', 'totalRoundTripTime', 'responsesReceived');
  const clockSamples = raw.client.clock.filter((c) => c.t0 >= from && c.t3 < to);
  const rttDc = clockSamples.map((c) => c.t3 - c.t0 - (c.t2 - c.t1));
  const recv = dc('inbound-rtp', 'packetsReceived');
  const lost = dc('inbound-rtp', 'packetsLost');
  const rs = seg ? relayStatsIn(raw.relay?.records ?? [], from, to) : raw.relay?.stats;
  const network: Summary['network'] = {
    rtt: rttRtcp.length ? stage(rttRtcp, 'getStats') : stage(rttIce, 'getStats'),
    rtt_rtcp: dist(rttRtcp),
    rtt_ice: dist(rttIce),
    rtt_datachannel: dist(rttDc),
    rtt_datachannel_p10: Math.round(quantileSorted(sorted(rttDc), 0.1) * 100) / 100,
    loss: Number.isFinite(lost / (recv + lost)) ? Math.round((lost / (recv + lost)) * 1e4) / 1e4 : 0,
    nack: dc('inbound-rtp', 'nackCount'),
    pli: dc('inbound-rtp', 'pliCount'),
    freezes: dc('inbound-rtp', 'freezeCount'),
    freeze_ms: Math.round(dc('inbound-rtp', 'totalFreezesDuration') * 1000),
    retransmitted: dc('inbound-rtp', 'retransmittedPacketsReceived'),
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
  // abs-capture-time: Chromium reports captureTimestamp on the NTP epoch (ms since 1900).
  const NTP_EPOCH_MS = 2_208_988_800_000;
  const absCapture = new Map<number, number>();
  for (const x of raw.client.sync ?? [])
    if (typeof x.captureTimestamp === 'number' && x.captureTimestamp > 0)
      absCapture.set(
        x.rtpTimestamp >>> 0,
        x.captureTimestamp > NTP_EPOCH_MS ? x.captureTimestamp - NTP_EPOCH_MS : x.captureTimestamp,
      );
  const absMinusPixel = per(frames, (f) => {
    const c = f.rtpTimestamp !== null ? absCapture.get(f.rtpTimestamp) : undefined;
    return c !== undefined ? f.capture - c : NaN;
  });
  const absMedian = median(absMinusPixel);
  const absSpread = absMinusPixel.map((d) => Math.abs(d - absMedian));
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
      abs_capture_minus_pixel: dist(absMinusPixel),
      abs_capture_spread: dist(absSpread),
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
      playout: raw.negotiated.playout,
      tick_dither_ms: cfg.tickDitherMs,
      down: cfg.down,
      up: cfg.up,
      seed: cfg.seed,
      chromium: raw.chromium,
    },
  };
  return { events, frames, inputs, summary };
}

export { median };
