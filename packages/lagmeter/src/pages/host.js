// Host page: a deterministic "game" rendered on a canvas at a fixed frame rate, reacting to input
// received over a DataChannel, every frame stamped with its frame id and the last applied input
// sequence number, captured and sent over WebRTC. Driven from Node through window.lm.
import { drawStamp, stampGeometry } from './stamp.js';
import { now, gathered, splitCandidates, addCandidates, enableAbsCaptureTime, preferCodec, snapshot } from './rtc.js';

const state = {
  cfg: null,
  pc: null,
  canvas: null,
  ctx: null,
  frames: [], // {id, inputSeq, tTick, tRender, tCapture}
  inputs: [], // {seq, tEmit, tRecv, frameId, tApplied}
  pending: [],
  inputSeq: 0,
  stats: [],
  clockServed: 0,
  frameId: 0,
  running: false,
  costs: [], // stamp draw cost (ms) per frame
  errors: [],
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

/** Draw game frame `id` in which inputs up to `inputSeq` have been applied. Deterministic. */
function renderGame(id, inputSeq) {
  const { ctx } = state;
  const { w, h, seed } = state.cfg;
  const { bandH } = stampGeometry(w, h);
  // Background: slowly scrolling colour bands (something for the encoder to chew on).
  const bands = 12;
  for (let i = 0; i < bands; i++) {
    const hue = (i * 30 + id * 2) % 360;
    ctx.fillStyle = `hsl(${hue} 55% 35%)`;
    ctx.fillRect(0, bandH + ((h - bandH) * i) / bands, w, (h - bandH) / bands + 1);
  }
  // Moving "enemies": seeded trajectories.
  const rnd = mulberry32(seed);
  for (let k = 0; k < 8; k++) {
    const vx = 1 + rnd() * 6;
    const vy = 1 + rnd() * 4;
    const s = 20 + rnd() * 40;
    const x = (rnd() * w + vx * id) % (w - s);
    const y = bandH + ((rnd() * h + vy * id) % (h - bandH - s));
    ctx.fillStyle = `hsl(${Math.floor(rnd() * 360)} 80% 60%)`;
    ctx.fillRect(x, y, s, s);
  }
  // The player: its position is a function of the inputs applied so far (visible input response).
  const px = ((inputSeq * 37) % Math.max(1, w - 60)) + 10;
  ctx.fillStyle = '#ffee00';
  ctx.beginPath();
  ctx.arc(px + 20, h - 50, 20, 0, Math.PI * 2);
  ctx.fill();
  // Quiet separator between the stamp band and the picture.
  ctx.fillStyle = '#808080';
  ctx.fillRect(0, bandH, w, 2);
}

let writer = null;
let canvasTrack = null;

function tick() {
  if (!state.running) return;
  const tTick = now();
  // Apply every input received since the previous frame.
  for (const inp of state.pending) {
    state.inputSeq = Math.max(state.inputSeq, inp.seq);
    inp.frameId = state.frameId;
    inp.tApplied = tTick;
    state.inputs.push(inp);
  }
  state.pending = [];
  const id = state.frameId++;
  renderGame(id, state.inputSeq);
  const t0 = performance.now();
  if (state.cfg.stamp) drawStamp(state.ctx, state.cfg.w, state.cfg.h, id, state.inputSeq);
  const stampCost = performance.now() - t0;
  const tRender = now();
  if (writer) {
    // The frame timestamp is the real capture instant (µs on the page timeline): WebRTC derives the
    // RTP timestamp and its capture-time estimates from it, so a nominal id/fps clock would drift.
    // The capture event is that instant, taken immediately before the canvas snapshot.
    const pnow = performance.now();
    const frame = new VideoFrame(state.canvas, { timestamp: Math.round(pnow * 1000) });
    const tCapture = performance.timeOrigin + pnow;
    const tSnapshot = now();
    writer.write(frame).catch((e) => state.errors.push(String(e)));
    state.frames.push({ id, inputSeq: state.inputSeq, tTick, tRender, tCapture, tSnapshot, stampCost });
  } else {
    canvasTrack.requestFrame();
    state.frames.push({ id, inputSeq: state.inputSeq, tTick, tRender, tCapture: now(), stampCost });
  }
  // Drift-free schedule: frame k at start + k * period (+ a seeded dither, see tickDitherMs).
  const period = 1000 / state.cfg.fps;
  const dither = Math.min(state.cfg.tickDitherMs ?? 0, period * 0.9) * state.ditherRnd();
  const next = state.t0 + (id + 1) * period + dither;
  setTimeout(tick, Math.max(0, next - now()));
}

function onInputChannel(ch) {
  ch.onmessage = (ev) => {
    const tRecv = now();
    const m = JSON.parse(ev.data);
    if (m.type === 'input') state.pending.push({ seq: m.seq, tEmit: m.t, tRecv });
  };
}

function onClockChannel(ch) {
  // NTP-style exchange: reply with receive (t1) and send (t2) timestamps.
  ch.onmessage = (ev) => {
    const t1 = now();
    const m = JSON.parse(ev.data);
    state.clockServed++;
    ch.send(JSON.stringify({ id: m.id, t0: m.t0, t1, t2: now() }));
  };
}

window.lm = {
  /** Set up canvas, capture and the peer connection; returns the offer and local candidates. */
  async init(cfg) {
    state.cfg = cfg;
    const canvas = document.createElement('canvas');
    canvas.width = cfg.w;
    canvas.height = cfg.h;
    document.body.appendChild(canvas);
    state.canvas = canvas;
    state.ctx = canvas.getContext('2d', { alpha: false, desynchronized: false });
    let track;
    if (cfg.capture !== 'canvas' && typeof MediaStreamTrackGenerator === 'function') {
      const gen = new MediaStreamTrackGenerator({ kind: 'video' });
      writer = gen.writable.getWriter();
      track = gen;
    } else {
      const stream = canvas.captureStream(0);
      track = stream.getVideoTracks()[0];
      canvasTrack = track;
    }
    track.contentHint = 'motion';
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    state.pc = pc;
    const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [new MediaStream([track])] });
    const codec = preferCodec(tr, cfg.codec);
    const absCaptureTime = cfg.absCaptureTime !== false && enableAbsCaptureTime(tr);
    const params = tr.sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    if (params.encodings?.[0] && cfg.maxBitrate) params.encodings[0].maxBitrate = cfg.maxBitrate;
    await tr.sender.setParameters(params).catch((e) => state.errors.push(`setParameters: ${e}`));
    onInputChannel(pc.createDataChannel('input', { ordered: true, negotiated: true, id: 1 }));
    onClockChannel(pc.createDataChannel('clock', { ordered: false, maxRetransmits: 0, negotiated: true, id: 2 }));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    // Start the game now: the encoder sees frames from the first moment media can flow.
    state.running = true;
    state.ditherRnd = mulberry32(cfg.seed ^ 0xd17e);
    state.t0 = now();
    tick();
    return {
      ...splitCandidates(pc.localDescription.sdp),
      codec,
      absCaptureTime,
      capture: writer ? 'generator' : 'canvas',
    };
  },
  async accept(answer, candidates) {
    await state.pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await addCandidates(state.pc, candidates);
  },
  startStats(intervalMs) {
    state.statsTimer = setInterval(async () => {
      try {
        state.stats.push(await snapshot(state.pc));
      } catch (e) {
        state.errors.push(String(e));
      }
    }, intervalMs);
  },
  connectionState: () => state.pc.connectionState,
  stop() {
    state.running = false;
    clearInterval(state.statsTimer);
  },
  collect() {
    return {
      timeOrigin: performance.timeOrigin,
      frames: state.frames,
      inputs: state.inputs,
      stats: state.stats,
      clockServed: state.clockServed,
      errors: state.errors,
    };
  },
  close() {
    state.pc?.close();
  },
};
