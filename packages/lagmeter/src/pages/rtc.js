// Helpers shared by the host and client pages: clock, SDP/candidate handling, stats snapshots.

/** Epoch milliseconds on the page's high-resolution timeline (comparable with Node's Date.now()). */
export const now = () => performance.timeOrigin + performance.now();

/** Convert a DOMHighResTimeStamp of this page's timeline to epoch ms. */
export const toEpoch = (t) => (typeof t === 'number' ? performance.timeOrigin + t : null);

export const ABS_CAPTURE_TIME = 'http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time';

/** Resolve when ICE gathering is complete (non-trickle signalling through Node). */
export function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
    };
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(resolve, 5000); // loopback gathering is fast; never hang a run on it
  });
}

/** Split a local description into SDP without candidates and the UDP candidate lines. */
export function splitCandidates(sdp) {
  const lines = sdp.split('\r\n');
  const candidates = lines.filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2));
  const stripped = lines.filter((l) => !l.startsWith('a=candidate:') && !l.startsWith('a=end-of-candidates'));
  return { sdp: stripped.join('\r\n'), candidates };
}

export async function addCandidates(pc, candidates) {
  for (const c of candidates) await pc.addIceCandidate({ candidate: c, sdpMid: '0', sdpMLineIndex: 0 });
}

/** Turn on abs-capture-time for a transceiver (off by default in Chromium). */
export function enableAbsCaptureTime(transceiver) {
  if (!transceiver.getHeaderExtensionsToNegotiate) return false;
  const exts = transceiver.getHeaderExtensionsToNegotiate();
  let found = false;
  for (const e of exts) {
    if (e.uri === ABS_CAPTURE_TIME) {
      e.direction = 'sendrecv';
      found = true;
    }
  }
  if (found) transceiver.setHeaderExtensionsToNegotiate(exts);
  return found;
}

/** Prefer one codec (plus RTX/RED/FEC helpers) on a transceiver; returns the chosen mimeType or null. */
export function preferCodec(transceiver, codec, kind = 'video') {
  if (!codec) return null;
  const caps = RTCRtpReceiver.getCapabilities(kind) ?? RTCRtpSender.getCapabilities(kind);
  const mime = { vp8: 'video/VP8', vp9: 'video/VP9', h264: 'video/H264', av1: 'video/AV1' }[codec.toLowerCase()];
  if (!mime || !caps) throw new Error(`unknown codec ${codec}`);
  const main = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime.toLowerCase());
  if (main.length === 0) throw new Error(`codec ${codec} not offered by this browser`);
  const helpers = caps.codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  transceiver.setCodecPreferences([...main, ...helpers]);
  return mime;
}

const PICK = {
  'outbound-rtp': [
    'ssrc',
    'framesEncoded',
    'framesSent',
    'totalEncodeTime',
    'totalPacketSendDelay',
    'packetsSent',
    'bytesSent',
    'retransmittedPacketsSent',
    'nackCount',
    'pliCount',
    'firCount',
    'targetBitrate',
    'qualityLimitationReason',
    'frameWidth',
    'frameHeight',
    'keyFramesEncoded',
    'encoderImplementation',
    'kind',
    'mid',
  ],
  'inbound-rtp': [
    'ssrc',
    'kind',
    'framesReceived',
    'framesDecoded',
    'framesDropped',
    'keyFramesDecoded',
    'totalDecodeTime',
    'jitterBufferDelay',
    'jitterBufferTargetDelay',
    'jitterBufferMinimumDelay',
    'jitterBufferEmittedCount',
    'totalProcessingDelay',
    'totalAssemblyTime',
    'framesAssembledFromMultiplePackets',
    'totalInterFrameDelay',
    'totalSquaredInterFrameDelay',
    'freezeCount',
    'totalFreezesDuration',
    'pauseCount',
    'totalPausesDuration',
    'nackCount',
    'pliCount',
    'firCount',
    'packetsReceived',
    'packetsLost',
    'retransmittedPacketsReceived',
    'jitter',
    'googTimingFrameInfo',
    'framesPerSecond',
    'frameWidth',
    'frameHeight',
    'decoderImplementation',
    'mid',
  ],
  'remote-inbound-rtp': [
    'ssrc',
    'kind',
    'roundTripTime',
    'totalRoundTripTime',
    'roundTripTimeMeasurements',
    'packetsLost',
    'fractionLost',
  ],
  'candidate-pair': [
    'state',
    'nominated',
    'currentRoundTripTime',
    'totalRoundTripTime',
    'responsesReceived',
    'bytesSent',
    'bytesReceived',
  ],
  'data-channel': ['label', 'messagesSent', 'messagesReceived'],
};

/** A slim, JSON-safe getStats snapshot: only video RTP, the selected candidate pair and data channels. */
export async function snapshot(pc) {
  const report = await pc.getStats();
  const out = { t: now() };
  report.forEach((s) => {
    const keys = PICK[s.type];
    if (!keys) return;
    if (
      (s.type === 'outbound-rtp' || s.type === 'inbound-rtp' || s.type === 'remote-inbound-rtp') &&
      s.kind !== 'video'
    )
      return;
    if (s.type === 'candidate-pair' && !(s.nominated && s.state === 'succeeded')) return;
    const o = {};
    for (const k of keys) if (s[k] !== undefined) o[k] = s[k];
    const key = s.type === 'data-channel' ? `dc:${s.label}` : s.type;
    out[key] = o;
  });
  return out;
}
