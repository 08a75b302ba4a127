// Public types of the lagmeter network-impairment relay (see packages/lagmeter/README-relay.md).

/** Per-packet loss model. Probabilities are fractions in [0, 1]. */
export type LossModel =
  | { model: 'none' }
  | { model: 'bernoulli'; p: number }
  | {
      model: 'gilbert';
      /** P(good → bad), evaluated once per packet before the loss draw. */
      p: number;
      /** P(bad → good). */
      r: number;
      /** Loss probability while in the bad state (netem's 1-h). Default 1. */
      lossInBad?: number;
      /** Loss probability while in the good state (netem's 1-k). Default 0. */
      lossInGood?: number;
    };

/** One direction of the emulated link. */
export interface LinkProfile {
  /** Fixed one-way propagation delay, ms. */
  delayMs: number;
  /** Per-packet delay variation, ms: extra delay ~ U(-jitterMs, +jitterMs) (netem's `delay D J`). */
  jitterMs: number;
  /** false (default semantics): a packet never departs before the previous one of the same
   * direction (head-of-line clamp, like netem with a pfifo child) → no reordering. true: lift it. */
  reorder: boolean;
  loss: LossModel;
  /** Bottleneck rate in bits/s (undefined or 0 = unlimited). Counts payload + overheadBytes. */
  rateBps?: number;
  /** Drop-tail queue in front of the rate limiter, packets (including the one being serialized). Default 1000. */
  queuePackets?: number;
  /** Per-packet bytes the rate limiter adds to the UDP payload (IPv4 + UDP headers). Default 28. */
  overheadBytes?: number;
  /** Jitter distribution: 'uniform' (default) U(-J, +J); 'normal' N(0, J²) (netem `distribution normal`). */
  jitterDistribution?: 'uniform' | 'normal';
}

export interface RelayOptions {
  /** host → client (media). */
  down: LinkProfile;
  /** client → host (input, RTCP feedback). */
  up: LinkProfile;
  seed: number;
  /** Address the relay sockets bind to. Default 127.0.0.1. */
  bind?: string;
  /** Capacity of the packet-record ring. Default 200 000; 0 disables records. */
  recordLimit?: number;
  /** How packets are released at their due time. 'worker' (default): a helper thread sleeps on a
   * futex until the due time and wakes the event loop (precise to ~0.1 ms, no spinning).
   * 'spin': sleep on a timer until spinMs before, then spin on setImmediate (precise when the
   * machine is idle, burns CPU). 'timers': setTimeout only (1 ms granularity, ~0.5–1.5 ms late). */
  scheduler?: 'worker' | 'spin' | 'timers';
  /** For scheduler 'spin': how long before the due time to start spinning (ms). Default 2. */
  spinMs?: number;
}

export interface Endpoint {
  address: string;
  port: number;
}

export interface RelayPath {
  /** The address the HOST must see as the client's candidate. */
  hostFacing: Endpoint;
  /** The address the CLIENT must see as the host's candidate. */
  clientFacing: Endpoint;
  /** The real endpoints this path forwards to. */
  host: Endpoint;
  client: Endpoint;
}

export interface RtpHeader {
  ssrc: number;
  seq: number;
  ts: number;
  marker: boolean;
  pt: number;
}

export interface PacketRecord {
  dir: 'up' | 'down';
  /** Per-direction arrival sequence number at the relay, from 0. */
  seq: number;
  /** UDP payload bytes. */
  size: number;
  /** Arrival at the relay, performance.timeOrigin-based ms (Date-comparable, sub-ms). */
  tIn: number;
  /** Departure from the relay (same clock); absent while in flight or when dropped. */
  tOut?: number;
  /** When it was scheduled to leave (same clock); tOut - tDue is the scheduler's error. */
  tDue?: number;
  dropped?: 'loss' | 'queue';
  /** Parsed when the datagram is RTP (SRTP keeps the fixed header readable). */
  rtp?: RtpHeader;
}

export interface Percentiles {
  n: number;
  mean: number;
  min: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface DirStats {
  /** Packets / bytes that arrived at the relay in this direction. */
  packets: number;
  bytes: number;
  /** Packets / bytes sent on. */
  forwarded: number;
  forwardedBytes: number;
  /** Dropped by the loss model. */
  lost: number;
  /** Dropped by the rate limiter's full queue. */
  queueDrops: number;
  /** Packets sent after a packet that arrived later (0 unless reorder: true). */
  reordered: number;
  /** Send errors from the socket (e.g. the peer's port is closed). */
  sendErrors: number;
  /** Delay actually applied, tOut - tIn (ms), over the last ≤100k forwarded packets. */
  delay: Percentiles;
  /** Scheduler error, tOut - tDue (ms). */
  lateness: Percentiles;
  /** Rate-limiter queueing + serialization delay (ms); 0s when no rate limit. */
  queueDelay: Percentiles;
}

export interface RelayStats {
  up: DirStats;
  down: DirStats;
}

export interface Relay {
  /** Open one path: one UDP socket facing the host, one facing the client. */
  addPath(host: Endpoint, client: Endpoint): Promise<RelayPath>;
  /** Rewrite an ICE candidate (SDP `a=candidate:` line or RTCIceCandidate.candidate) from `side`
   * so the other side sends to the relay; null for candidates to drop (TCP, non-UDP, or an
   * address/port other than that side's endpoint of the path). */
  rewriteCandidate(candidate: string, path: RelayPath, side: 'host' | 'client'): string | null;
  stats(): RelayStats;
  /** Zero the counters and delay samples (records are kept). */
  resetStats(): void;
  /** Bounded ring of the most recent packets, oldest first. */
  records(): PacketRecord[];
  /** Live change of one direction (sweeps); affects packets arriving from now on. */
  setProfile(dir: 'up' | 'down', p: Partial<LinkProfile>): void;
  profile(dir: 'up' | 'down'): LinkProfile;
  close(): Promise<void>;
}
