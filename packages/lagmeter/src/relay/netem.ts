// netem backend: the same link semantics applied by the kernel (`tc … netem`) for machines that
// have sch_netem. UNTESTED on the development machine (its kernel has no netem; detectNetem()
// returns false there). See README-relay.md.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { rewriteCandidate } from './candidate.js';
import { DEFAULT_QUEUE_PACKETS, validateProfile } from './link.js';
import { summarize } from './stats.js';
import type { DirStats, Endpoint, LinkProfile, PacketRecord, Relay, RelayPath, RelayStats } from './types.js';

const run = promisify(execFile);

/** A way of impairing the path between host and client. Both kinds expose the Relay interface. */
export interface ImpairmentBackend extends Relay {
  kind: 'relay' | 'netem';
}

/**
 * True when this machine can apply netem: probes in a throwaway network namespace
 * (`unshare -n`, so the machine's own interfaces are never touched) by adding a netem qdisc on
 * that namespace's loopback. Needs root (or CAP_NET_ADMIN) and iproute2.
 */
export async function detectNetem(): Promise<boolean> {
  if (process.platform !== 'linux') return false;
  try {
    await run(
      'unshare',
      [
        '-n',
        'sh',
        '-c',
        'ip link set lo up && tc qdisc add dev lo root netem delay 1ms && tc qdisc show dev lo | grep -q netem',
      ],
      { timeout: 5000 },
    );
    return true;
  } catch {
    return false;
  }
}

/** tc arguments for one netem qdisc from a profile (netem's own semantics match the relay's:
 * `delay D J` = D ± J uniform, `distribution normal`, `loss P%`, `loss gemodel p r 1-h 1-k`,
 * `rate`, `limit`). */
export function netemArgs(p: LinkProfile): string[] {
  validateProfile(p);
  const a: string[] = ['netem', 'limit', String(p.queuePackets ?? DEFAULT_QUEUE_PACKETS)];
  if (p.delayMs > 0 || p.jitterMs > 0) {
    a.push('delay', `${p.delayMs}ms`);
    if (p.jitterMs > 0) {
      a.push(`${p.jitterMs}ms`);
      if (p.jitterDistribution === 'normal') a.push('distribution', 'normal');
    }
  }
  const l = p.loss;
  const pct = (x: number) => `${+(x * 100).toPrecision(8)}%`;
  if (l.model === 'bernoulli' && l.p > 0) a.push('loss', 'random', pct(l.p));
  if (l.model === 'gilbert')
    a.push('loss', 'gemodel', pct(l.p), pct(l.r), pct(l.lossInBad ?? 1), pct(l.lossInGood ?? 0));
  if (p.rateBps && p.rateBps > 0) a.push('rate', `${Math.round(p.rateBps)}bit`);
  return a;
}

export interface NetemOptions {
  down: LinkProfile;
  up: LinkProfile;
  /** Device whose egress carries both directions; default 'lo' (of the namespace below). */
  dev?: string;
  /** Network namespace to run tc in (`ip netns exec NS tc …`); the browsers must run there too. */
  netns?: string;
}

/**
 * netem on one device, split by UDP source port: a prio qdisc with two netem children, u32
 * filters send the host's packets (sport = host port) to the 'down' band and the client's to 'up'.
 * Chromium keeps its own candidates (rewriteCandidate only filters to the path's endpoints).
 * No reorder flag: with reorder false a pfifo child under each netem keeps order
 * (head-of-line, the same clamp the relay applies). records() is empty; stats() parses `tc -s`.
 */
export class NetemBackend implements ImpairmentBackend {
  readonly kind = 'netem' as const;
  private readonly dev: string;
  private profiles: Record<'up' | 'down', LinkProfile>;
  private installed = false;
  private paths = 0;

  constructor(private readonly opts: NetemOptions) {
    this.dev = opts.dev ?? 'lo';
    this.profiles = { down: { ...opts.down }, up: { ...opts.up } };
  }

  private async tc(...args: string[]): Promise<string> {
    const [cmd, argv] = this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, 'tc', ...args]] : ['tc', args];
    const { stdout } = await run(cmd, argv, { timeout: 5000 });
    return stdout;
  }

  private async install(): Promise<void> {
    if (this.installed) return;
    await this.tc('qdisc', 'del', 'dev', this.dev, 'root').catch(() => undefined);
    // bands: 1:1 down, 1:2 up, 1:3 everything else (priomap sends unclassified traffic to band 3).
    await this.tc(
      'qdisc',
      'add',
      'dev',
      this.dev,
      'root',
      'handle',
      '1:',
      'prio',
      'bands',
      '3',
      'priomap',
      ...Array(16).fill('2'),
    );
    for (const [band, dir] of [
      ['1', 'down'],
      ['2', 'up'],
    ] as const) {
      await this.tc(
        'qdisc',
        'add',
        'dev',
        this.dev,
        'parent',
        `1:${band}`,
        'handle',
        `${band}0:`,
        ...netemArgs(this.profiles[dir]),
      );
      if (!this.profiles[dir].reorder)
        await this.tc(
          'qdisc',
          'add',
          'dev',
          this.dev,
          'parent',
          `${band}0:1`,
          'handle',
          `${band}00:`,
          'pfifo',
          'limit',
          String(this.profiles[dir].queuePackets ?? DEFAULT_QUEUE_PACKETS),
        );
    }
    this.installed = true;
  }

  async addPath(host: Endpoint, client: Endpoint): Promise<RelayPath> {
    await this.install();
    this.paths++;
    for (const [ep, band] of [
      [host, '1'],
      [client, '2'],
    ] as const)
      await this.tc(
        'filter',
        'add',
        'dev',
        this.dev,
        'protocol',
        'ip',
        'parent',
        '1:',
        'prio',
        '1',
        'u32',
        'match',
        'ip',
        'protocol',
        '17',
        '0xff',
        'match',
        'ip',
        'sport',
        String(ep.port),
        '0xffff',
        'flowid',
        `1:${band}`,
      );
    // No relay in between: each side sees the other's real candidate.
    return { hostFacing: { ...client }, clientFacing: { ...host }, host: { ...host }, client: { ...client } };
  }

  rewriteCandidate(candidate: string, path: RelayPath, side: 'host' | 'client'): string | null {
    return rewriteCandidate(candidate, path, side);
  }

  setProfile(dir: 'up' | 'down', p: Partial<LinkProfile>): void {
    const next = { ...this.profiles[dir], ...p };
    validateProfile(next);
    this.profiles[dir] = next;
    if (this.installed) {
      const band = dir === 'down' ? '1' : '2';
      void this.tc(
        'qdisc',
        'change',
        'dev',
        this.dev,
        'parent',
        `1:${band}`,
        'handle',
        `${band}0:`,
        ...netemArgs(next),
      ).catch(() => undefined);
    }
  }

  profile(dir: 'up' | 'down'): LinkProfile {
    return { ...this.profiles[dir] };
  }

  private last: RelayStats = { up: emptyDir(), down: emptyDir() };

  /** Last parsed `tc -s qdisc` counters (refreshStats() updates them). */
  stats(): RelayStats {
    return this.last;
  }

  async refreshStats(): Promise<RelayStats> {
    const out = await this.tc('-s', 'qdisc', 'show', 'dev', this.dev);
    const grab = (handle: string): DirStats => {
      const re = new RegExp(`qdisc netem ${handle}:[^\\n]*\\n\\s*Sent (\\d+) bytes (\\d+) pkt \\(dropped (\\d+)`);
      const m = re.exec(out);
      const s = emptyDir();
      if (m) {
        s.forwardedBytes = Number(m[1]);
        s.forwarded = Number(m[2]);
        s.lost = Number(m[3]);
        s.packets = s.forwarded + s.lost;
      }
      return s;
    };
    this.last = { down: grab('10'), up: grab('20') };
    return this.last;
  }

  resetStats(): void {
    this.last = { up: emptyDir(), down: emptyDir() };
  }

  records(): PacketRecord[] {
    return [];
  }

  async close(): Promise<void> {
    if (this.installed) await this.tc('qdisc', 'del', 'dev', this.dev, 'root').catch(() => undefined);
    this.installed = false;
  }
}

function emptyDir(): DirStats {
  const none = summarize([]);
  return {
    packets: 0,
    bytes: 0,
    forwarded: 0,
    forwardedBytes: 0,
    lost: 0,
    queueDrops: 0,
    reordered: 0,
    sendErrors: 0,
    delay: none,
    lateness: none,
    queueDelay: none,
  };
}
