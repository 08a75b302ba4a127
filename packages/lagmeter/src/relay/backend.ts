import { detectNetem, NetemBackend } from './netem.js';
import type { ImpairmentBackend } from './netem.js';
import { startRelay } from './relay.js';
import type { RelayOptions } from './types.js';

export interface ImpairmentOptions extends RelayOptions {
  /** 'relay' (default): the userspace relay, works everywhere. 'netem': kernel netem, throws if
   * the machine lacks it. 'auto': netem when detectNetem() says so, else the relay. */
  backend?: 'relay' | 'netem' | 'auto';
  /** For netem: device and namespace (see NetemOptions). */
  netemDev?: string;
  netns?: string;
}

/** The relay or the netem backend behind one interface. */
export async function createImpairment(opts: ImpairmentOptions): Promise<ImpairmentBackend> {
  const want = opts.backend ?? 'relay';
  if (want !== 'relay' && (await detectNetem())) {
    // Note: netem uses the kernel's randomness; `seed` has no effect there.
    return new NetemBackend({ down: opts.down, up: opts.up, dev: opts.netemDev, netns: opts.netns });
  }
  if (want === 'netem') throw new Error('netem is not available on this machine (tc qdisc … netem fails)');
  const relay = await startRelay(opts);
  return Object.assign(relay, { kind: 'relay' as const });
}
