import { DEFAULT_QUEUE_PACKETS } from './link.js';
import { validateProfile } from './link.js';
import type { LinkProfile, LossModel } from './types.js';

/** '20ms', '1.5ms', '500us', '0.04s', '20' (bare number = ms) → ms. */
export function parseDuration(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(us|µs|ms|s|sec|secs)?\s*$/i.exec(s);
  if (!m) throw new RangeError(`bad duration '${s}' (e.g. 20ms, 500us, 0.1s)`);
  const v = Number(m[1]);
  const unit = (m[2] ?? 'ms').toLowerCase();
  return unit === 'us' || unit === 'µs' ? v / 1000 : unit.startsWith('s') ? v * 1000 : v;
}

/** '1%' → 0.01; '0.01' → 0.01 (a bare number must be a fraction ≤ 1). */
export function parsePercent(s: string | number): number {
  if (typeof s === 'number') return s;
  const t = s.trim();
  const m = /^([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(%)?$/i.exec(t);
  if (!m) throw new RangeError(`bad probability '${s}' (e.g. 1% or 0.01)`);
  const v = m[2] ? Number(m[1]) / 100 : Number(m[1]);
  if (!(v >= 0 && v <= 1)) throw new RangeError(`probability '${s}' is outside [0, 1] (write 5% or 0.05)`);
  return v;
}

/**
 * Rates → bits/s: '20mbit', '500kbit', '1gbit', '20Mbps' / '20mbps' / '20Mb/s' (megabits — unlike
 * tc, where 'mbps' means megabytes), '2.5MBps' / '2.5MB/s' / '2.5MB' (bytes, capital B), '800000' (bit/s).
 */
export function parseRate(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([kKmMgGtT]?)(bits?(?:\/s)?|bps|b\/s|Bps|B\/s|B)?\s*$/.exec(s);
  if (!m) throw new RangeError(`bad rate '${s}' (e.g. 20mbit, 500kbit, 2MBps)`);
  const mult = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const bytes = m[3] !== undefined && m[3].startsWith('B');
  return Number(m[1]) * mult * (bytes ? 8 : 1);
}

/**
 * Loss specs: 'none' | '0' | '1%' | '0.01' | 'bernoulli:1%' | 'gilbert:P,R[,LOSS_IN_BAD[,LOSS_IN_GOOD]]'
 * (each a fraction or a percentage; e.g. 'gilbert:0.01,0.3' or 'gilbert:1%,30%,100%,0%').
 */
export function parseLoss(s: string): LossModel {
  const t = s.trim().toLowerCase();
  if (t === '' || t === 'none' || t === 'off') return { model: 'none' };
  if (t.startsWith('gilbert')) {
    const rest = t.replace(/^gilbert(-elliott)?[:=]?/, '');
    const parts = rest.split(',').map((x) => x.trim());
    if (parts.length < 2 || parts.length > 4 || parts.some((x) => x === ''))
      throw new RangeError(`bad Gilbert–Elliott loss '${s}' (gilbert:P,R[,LOSS_IN_BAD[,LOSS_IN_GOOD]])`);
    const [p, r, h, k] = parts.map(parsePercent);
    const m: LossModel = { model: 'gilbert', p, r };
    if (h !== undefined) m.lossInBad = h;
    if (k !== undefined) m.lossInGood = k;
    return m;
  }
  const p = parsePercent(t.replace(/^bernoulli[:=]?/, ''));
  return p === 0 ? { model: 'none' } : { model: 'bernoulli', p };
}

/** CLI-shaped inputs; `x` applies to both directions, `xDown`/`xUp` override one. */
export interface LinkArgs {
  delay?: string | number;
  delayDown?: string | number;
  delayUp?: string | number;
  jitter?: string | number;
  jitterDown?: string | number;
  jitterUp?: string | number;
  reorder?: boolean;
  /** '1%', '0.01', or a full loss spec ('gilbert:0.01,0.3'). */
  loss?: string;
  lossDown?: string;
  lossUp?: string;
  /** 'bernoulli' (default) or 'gilbert:P,R[,H,K]'. With gilbert the model is fully given here and
   * a non-zero `loss` is an error (ambiguous). */
  lossModel?: string;
  rate?: string | number;
  rateDown?: string | number;
  rateUp?: string | number;
  queue?: string | number;
  jitterDistribution?: 'uniform' | 'normal';
}

export function parseLinkArgs(a: LinkArgs): { down: LinkProfile; up: LinkProfile } {
  const lossFor = (dirLoss: string | undefined): LossModel => {
    const model = a.lossModel?.trim().toLowerCase();
    const spec = dirLoss ?? a.loss;
    if (model && model.startsWith('gilbert')) {
      if (spec !== undefined && parseLoss(spec).model !== 'none')
        throw new RangeError(
          `--loss ${spec} together with --loss-model ${a.lossModel}: give the loss in the model (gilbert:P,R,LOSS_IN_BAD,LOSS_IN_GOOD)`,
        );
      return parseLoss(model);
    }
    if (model && model !== 'bernoulli')
      throw new RangeError(`unknown loss model '${a.lossModel}' (bernoulli | gilbert:P,R)`);
    return spec === undefined ? { model: 'none' } : parseLoss(spec);
  };
  const queue = a.queue === undefined ? undefined : Number(a.queue);
  const mk = (
    delay?: string | number,
    jitter?: string | number,
    loss?: string,
    rate?: string | number,
  ): LinkProfile => {
    const p: LinkProfile = {
      delayMs: delay === undefined ? 0 : parseDuration(delay),
      jitterMs: jitter === undefined ? 0 : parseDuration(jitter),
      reorder: a.reorder ?? false,
      loss: lossFor(loss),
    };
    const r = rate === undefined ? 0 : parseRate(rate);
    if (r > 0) p.rateBps = r;
    if (queue !== undefined) p.queuePackets = queue;
    else if (r > 0) p.queuePackets = DEFAULT_QUEUE_PACKETS;
    if (a.jitterDistribution) p.jitterDistribution = a.jitterDistribution;
    validateProfile(p);
    return p;
  };
  return {
    down: mk(a.delayDown ?? a.delay, a.jitterDown ?? a.jitter, a.lossDown, a.rateDown ?? a.rate),
    up: mk(a.delayUp ?? a.delay, a.jitterUp ?? a.jitter, a.lossUp, a.rateUp ?? a.rate),
  };
}

/** A profile with no impairment. */
export function cleanProfile(): LinkProfile {
  return { delayMs: 0, jitterMs: 0, reorder: false, loss: { model: 'none' } };
}

/** One-line human description, tc-like ('delay 20ms ±5ms loss 1% rate 20mbit'). */
export function describeProfile(p: LinkProfile): string {
  const parts: string[] = [`delay ${p.delayMs}ms`];
  if (p.jitterMs > 0)
    parts.push(`±${p.jitterMs}ms${p.jitterDistribution === 'normal' ? ' normal' : ''}${p.reorder ? ' reorder' : ''}`);
  const l = p.loss;
  if (l.model === 'bernoulli') parts.push(`loss ${+(l.p * 100).toPrecision(6)}%`);
  if (l.model === 'gilbert')
    parts.push(`loss gilbert p=${l.p} r=${l.r} bad=${l.lossInBad ?? 1} good=${l.lossInGood ?? 0}`);
  if (p.rateBps) parts.push(`rate ${p.rateBps / 1e6}mbit queue ${p.queuePackets ?? DEFAULT_QUEUE_PACKETS}`);
  return parts.join(' ');
}
