// Client page: receives the stream, sends sequence-numbered input over a DataChannel, runs the
// NTP-style clock exchange, and observes every displayed frame with requestVideoFrameCallback,
// reading the stamped frame id / input sequence back from the pixels. Driven from Node via window.lm.
import { readStamp, stampGeometry, COLS, READ_W, READ_H } from './stamp.js';
import {
  now,
  toEpoch,
  gathered,
  splitCandidates,
  addCandidates,
  enableAbsCaptureTime,
  preferCodec,
  snapshot,
} from './rtc.js';

const state = {
  cfg: null,
  pc: null,
  video: null,
  displayed: [], // per rVFC callback
  inputs: [], // {seq, tEmit}
  clock: [], // {t0, t1, t2, t3}
  stats: [],
  csrc: [], // getSynchronizationSources samples (abs-capture-time)
  errors: [],
  inputSeq: 0,
  observe: true,
};

function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let readCanvas = null;
let readCtx = null;

function onFrame(cbNow, md) {
  const v = state.video;
  const rec = {
    tCb: toEpoch(cbNow),
    presentationTime: toEpoch(md.presentationTime),
    expectedDisplayTime: toEpoch(md.expectedDisplayTime),
    captureTime: toEpoch(md.captureTime),
    receiveTime: toEpoch(md.receiveTime),
    rawCaptureTime: md.captureTime ?? null,
    rtpTimestamp: md.rtpTimestamp ?? null,
    processingDuration: md.processingDuration ?? null,
    presentedFrames: md.presentedFrames,
    width: md.width,
    height: md.height,
    frameId: null,
    inputSeq: null,
    readCost: null,
  };
  if (state.observe) {
    const t0 = performance.now();
    const { bw, bandH } = stampGeometry(state.cfg.w, state.cfg.h);
    // The video may arrive scaled; map the stamp band proportionally.
    const sx = (v.videoWidth || state.cfg.w) / state.cfg.w;
    const sy = (v.videoHeight || state.cfg.h) / state.cfg.h;
    readCtx.drawImage(v, 0, 0, bw * COLS * sx, bandH * sy, 0, 0, READ_W, READ_H);
    const px = readCtx.getImageData(0, 0, READ_W, READ_H).data;
    const s = readStamp(px);
    rec.readCost = performance.now() - t0;
    if (s) {
      rec.frameId = s.frameId;
      rec.inputSeq = s.inputSeq;
    }
  }
  state.displayed.push(rec);
  v.requestVideoFrameCallback(onFrame);
}

function startInputs(ch) {
  // Inputs at seeded pseudo-random intervals so their phase against the host's frame ticks is uniform.
  const rnd = mulberry32(state.cfg.seed ^ 0x5eed);
  const [lo, hi] = state.cfg.inputIntervalMs ?? [20, 60];
  const send = () => {
    if (ch.readyState !== 'open') return;
    const seq = ++state.inputSeq;
    const t = now();
    ch.send(JSON.stringify({ type: 'input', seq, t }));
    state.inputs.push({ seq, tEmit: t });
    state.inputTimer = setTimeout(send, lo + rnd() * (hi - lo));
  };
  send();
}

function startClock(ch) {
  let id = 0;
  ch.onmessage = (ev) => {
    const t3 = now();
    const m = JSON.parse(ev.data);
    state.clock.push({ id: m.id, t0: m.t0, t1: m.t1, t2: m.t2, t3 });
  };
  state.clockTimer = setInterval(() => {
    if (ch.readyState === 'open') ch.send(JSON.stringify({ id: ++id, t0: now() }));
  }, state.cfg.clockIntervalMs ?? 100);
}

window.lm = {
  async init(cfg) {
    state.cfg = cfg;
    state.observe = cfg.observe !== false;
    readCanvas = document.createElement('canvas');
    readCanvas.width = READ_W;
    readCanvas.height = READ_H;
    readCtx = readCanvas.getContext('2d', { willReadFrequently: true });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.style.width = '320px';
    document.body.appendChild(video);
    state.video = video;
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    state.pc = pc;
    pc.ontrack = (ev) => {
      state.receiver = ev.receiver;
      if (cfg.jitterBufferTarget != null) ev.receiver.jitterBufferTarget = cfg.jitterBufferTarget;
      video.srcObject = ev.streams[0] ?? new MediaStream([ev.track]);
      video.play().catch((e) => state.errors.push(`play: ${e}`));
      video.requestVideoFrameCallback(onFrame);
    };
    const input = pc.createDataChannel('input', { ordered: true, negotiated: true, id: 1 });
    input.onopen = () => startInputs(input);
    const clock = pc.createDataChannel('clock', { ordered: false, maxRetransmits: 0, negotiated: true, id: 2 });
    clock.onopen = () => startClock(clock);
    state.channels = { input, clock };
  },
  async answer(offer) {
    const pc = state.pc;
    await pc.setRemoteDescription({ type: 'offer', sdp: offer });
    const tr = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
    let absCaptureTime = false;
    if (tr) {
      if (state.cfg.codec) preferCodec(tr, state.cfg.codec);
      if (state.cfg.absCaptureTime !== false) absCaptureTime = enableAbsCaptureTime(tr);
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    return { ...splitCandidates(pc.localDescription.sdp), absCaptureTime };
  },
  async addCandidates(candidates) {
    await addCandidates(state.pc, candidates);
  },
  connectionState: () => state.pc.connectionState,
  startStats(intervalMs) {
    state.statsTimer = setInterval(async () => {
      try {
        state.stats.push(await snapshot(state.pc));
        const src = state.receiver?.getSynchronizationSources?.() ?? [];
        for (const s of src) {
          state.csrc.push({
            t: now(),
            rtpTimestamp: s.rtpTimestamp,
            timestamp: s.timestamp,
            captureTimestamp: s.captureTimestamp ?? null,
            senderCaptureTimeOffset: s.senderCaptureTimeOffset ?? null,
          });
        }
      } catch (e) {
        state.errors.push(String(e));
      }
    }, intervalMs);
  },
  stop() {
    clearTimeout(state.inputTimer);
    clearInterval(state.clockTimer);
    clearInterval(state.statsTimer);
  },
  framesSeen: () => state.displayed.length,
  collect() {
    return {
      timeOrigin: performance.timeOrigin,
      displayed: state.displayed,
      inputs: state.inputs,
      clock: state.clock,
      stats: state.stats,
      sync: state.csrc,
      errors: state.errors,
    };
  },
  close() {
    state.pc?.close();
  },
};
