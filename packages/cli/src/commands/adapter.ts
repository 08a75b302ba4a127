/**
 * `pmi adapter`: be the NetTLP adapter in software. Serves the target (a lab VM's live RAM,
 * a dump) to NetTLP/LibTLP DMA clients over UDP until SIGINT/SIGTERM. Prints exactly one
 * `listening on IP ports A-B` line on stdout when ready; stats are JSON lines on stderr
 * (every --stats-interval, on SIGUSR1, and once at exit).
 */
import { startAdapter } from '@pmi/nettlp';
import { openTarget, type GlobalOptions } from '../context.js';

export interface AdapterCommandOptions extends GlobalOptions {
  listen: string;
  portBase: number;
  tags: number;
  mps: number;
  rcb: number;
  writable?: boolean;
  allow?: string;
  fault?: string;
  pcap?: string;
  statsInterval?: number;
  split?: 'rcb' | 'mps';
  io?: 'auto' | 'native' | 'dgram';
  spin?: number;
}

export async function adapterCommand(opts: AdapterCommandOptions): Promise<number> {
  const mem = await openTarget(opts, !!opts.writable);
  let adapter;
  try {
    adapter = await startAdapter({
      source: mem,
      listen: opts.listen,
      portBase: opts.portBase,
      tags: opts.tags,
      mps: opts.mps,
      rcb: opts.rcb,
      writable: !!opts.writable,
      allow: opts.allow
        ? opts.allow
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : undefined,
      fault: opts.fault,
      pcap: opts.pcap,
      split: opts.split,
      io: opts.io,
      spinUs: opts.spin,
    });
  } catch (e) {
    await mem.close();
    throw e;
  }
  const started = Date.now();
  const emitStats = (event: string) =>
    process.stderr.write(
      JSON.stringify({ event, t: new Date().toISOString(), uptime_ms: Date.now() - started, ...adapter.stats() }) +
        '\n',
    );
  process.stdout.write(`listening on ${adapter.address} ports ${adapter.ports.first}-${adapter.ports.last}\n`);

  const timer = opts.statsInterval ? setInterval(() => emitStats('stats'), opts.statsInterval) : undefined;
  const onUsr1 = () => emitStats('stats');
  process.on('SIGUSR1', onUsr1);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const stop = (s: NodeJS.Signals) => resolve(s);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  if (timer) clearInterval(timer);
  process.off('SIGUSR1', onUsr1);
  await adapter.close();
  emitStats(`exit:${signal}`);
  await mem.close();
  return 0;
}
