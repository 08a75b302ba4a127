import type { LossModel } from './types.js';
import type { Prng } from './prng.js';

/** Stateful per-direction loss process. One PRNG draw per decision → deterministic for a seed
 * and a packet order. */
export class LossProcess {
  private bad = false;
  constructor(
    public model: LossModel,
    private readonly rng: Prng,
  ) {}

  setModel(m: LossModel): void {
    if (m.model !== 'gilbert') this.bad = false;
    this.model = m;
  }

  /** Whether the next packet is lost. */
  drop(): boolean {
    const m = this.model;
    switch (m.model) {
      case 'none':
        return false;
      case 'bernoulli':
        return m.p > 0 && this.rng.next() < m.p;
      case 'gilbert': {
        // Transition first, then the loss draw in the (new) state.
        const u = this.rng.next();
        if (this.bad) {
          if (u < m.r) this.bad = false;
        } else if (u < m.p) this.bad = true;
        const pl = this.bad ? (m.lossInBad ?? 1) : (m.lossInGood ?? 0);
        if (pl <= 0) return false;
        if (pl >= 1) return true;
        return this.rng.next() < pl;
      }
    }
  }

  get inBadState(): boolean {
    return this.bad;
  }
}

/** Long-run loss fraction of a model (for tests and reports). */
export function expectedLoss(m: LossModel): number {
  switch (m.model) {
    case 'none':
      return 0;
    case 'bernoulli':
      return m.p;
    case 'gilbert': {
      if (m.p + m.r === 0) return m.lossInGood ?? 0;
      const piBad = m.p / (m.p + m.r);
      return piBad * (m.lossInBad ?? 1) + (1 - piBad) * (m.lossInGood ?? 0);
    }
  }
}

export function validateLoss(m: LossModel): void {
  const prob = (name: string, v: number | undefined) => {
    if (v !== undefined && !(v >= 0 && v <= 1)) throw new RangeError(`loss ${name} must be in [0, 1], got ${v}`);
  };
  if (m.model === 'bernoulli') prob('p', m.p);
  if (m.model === 'gilbert') {
    prob('p', m.p);
    prob('r', m.r);
    prob('lossInBad', m.lossInBad);
    prob('lossInGood', m.lossInGood);
  }
}
