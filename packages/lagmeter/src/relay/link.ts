import { LossProcess, validateLoss } from './loss.js';
import { Prng } from './prng.js';
import type { LinkProfile } from './types.js';

export const DEFAULT_QUEUE_PACKETS = 1000;
export const DEFAULT_OVERHEAD_BYTES = 28;

export type LinkDecision =
  | { drop: 'loss' | 'queue' }
  | { drop?: undefined; /** departure time, ms on the caller's clock */ due: number; queueDelay: number };

export function validateProfile(p: LinkProfile): void {
  const nonneg = (name: string, v: number | undefined) => {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new RangeError(`${name} must be ≥ 0, got ${v}`);
  };
  nonneg('delayMs', p.delayMs);
  nonneg('jitterMs', p.jitterMs);
  nonneg('rateBps', p.rateBps);
  nonneg('overheadBytes', p.overheadBytes);
  if (p.queuePackets !== undefined && !(Number.isInteger(p.queuePackets) && p.queuePackets >= 1))
    throw new RangeError(`queuePackets must be an integer ≥ 1, got ${p.queuePackets}`);
  validateLoss(p.loss);
}

/**
 * One direction of the emulated link, pure logic (no sockets, no clock of its own):
 *   loss → drop-tail queue + serialization at rateBps → propagation delay ± jitter → (no-reorder clamp).
 * Loss and jitter draw from separate seeded streams, once per packet in arrival order, so the loss
 * pattern and the jitter sequence depend only on the seed and the packet order — not on timing or
 * on the other parameters.
 */
export class Link {
  private readonly loss: LossProcess;
  private readonly jitterRng: Prng;
  /** Serialization finish times of packets still in the rate limiter (FIFO). */
  private readonly inQueue: number[] = [];
  private qHead = 0;
  private freeAt = -Infinity;
  private lastDue = -Infinity;

  constructor(
    private p: LinkProfile,
    seed: number,
    label: string,
  ) {
    validateProfile(p);
    this.loss = new LossProcess(p.loss, new Prng(seed, `${label}/loss`));
    this.jitterRng = new Prng(seed, `${label}/jitter`);
  }

  get profile(): LinkProfile {
    return this.p;
  }

  set(p: Partial<LinkProfile>): void {
    const next = { ...this.p, ...p };
    validateProfile(next);
    this.p = next;
    if (p.loss) this.loss.setModel(p.loss);
  }

  /** Packets in the rate limiter (queued or being serialized) at time `now`. */
  queueLength(now: number): number {
    while (this.qHead < this.inQueue.length && this.inQueue[this.qHead] <= now) this.qHead++;
    if (this.qHead > 4096 && this.qHead * 2 > this.inQueue.length) {
      this.inQueue.splice(0, this.qHead);
      this.qHead = 0;
    }
    return this.inQueue.length - this.qHead;
  }

  /** Decide the fate of a packet of `size` payload bytes arriving at `now`. */
  admit(now: number, size: number): LinkDecision {
    const p = this.p;
    if (this.loss.drop()) return { drop: 'loss' };
    // Jitter is drawn for every packet that survives loss (before the queue decision), so the
    // jitter sequence does not depend on timing.
    let extra = 0;
    if (p.jitterMs > 0) {
      extra =
        p.jitterDistribution === 'normal'
          ? this.jitterRng.normal() * p.jitterMs
          : (this.jitterRng.next() * 2 - 1) * p.jitterMs;
    }
    let leave = now;
    if (p.rateBps && p.rateBps > 0) {
      if (this.queueLength(now) >= (p.queuePackets ?? DEFAULT_QUEUE_PACKETS)) return { drop: 'queue' };
      const bits = (size + (p.overheadBytes ?? DEFAULT_OVERHEAD_BYTES)) * 8;
      leave = Math.max(now, this.freeAt) + (bits / p.rateBps) * 1000;
      this.freeAt = leave;
      this.inQueue.push(leave);
    }
    let due = leave + Math.max(0, p.delayMs + extra);
    if (!p.reorder && due < this.lastDue) due = this.lastDue;
    if (due > this.lastDue) this.lastDue = due;
    return { due, queueDelay: leave - now };
  }
}
