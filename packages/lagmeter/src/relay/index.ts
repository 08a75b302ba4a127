// lagmeter network-impairment relay: a userspace UDP relay on loopback that WebRTC traffic is
// routed through by ICE-candidate rewriting, with per-direction delay, jitter (no reordering by
// default), Bernoulli / Gilbert–Elliott loss and a rate limiter with a drop-tail queue.
export type * from './types.js';
export { startRelay } from './relay.js';
export { Link, validateProfile, DEFAULT_QUEUE_PACKETS, DEFAULT_OVERHEAD_BYTES } from './link.js';
export type { LinkDecision } from './link.js';
export { LossProcess, expectedLoss } from './loss.js';
export { Prng } from './prng.js';
export { parseRtp, buildRtp } from './rtp.js';
export { parseCandidate, rewriteCandidate, rewriteSdp, firstLoopbackUdp, isLoopback } from './candidate.js';
export type { ParsedCandidate } from './candidate.js';
export {
  parseLinkArgs,
  parseDuration,
  parsePercent,
  parseRate,
  parseLoss,
  cleanProfile,
  describeProfile,
} from './args.js';
export type { LinkArgs } from './args.js';
export { summarize, quantileSorted, SampleRing } from './stats.js';
export { detectNetem, netemArgs, NetemBackend } from './netem.js';
export { createImpairment } from './backend.js';
export type { ImpairmentOptions } from './backend.js';
export type { ImpairmentBackend, NetemOptions } from './netem.js';
export { frameTimings } from './frames.js';
export type { FrameTiming } from './frames.js';
