/**
 * NetTLP DMA client: `nettlp://HOST[:PORTBASE]?…` as a PhysicalMemory (see ../../README-client.md).
 * Importing this module registers the `nettlp` scheme with @pmi/core's source registry.
 */
import { registerSourceScheme, type OpenOptions } from '@pmi/core';
import { NetTlpClient } from './client.js';
import { probeRanges } from './probe.js';
import { parseNetTlpUri, type NetTlpClientOptions } from './uri.js';

export { NetTlpClient, type NetTlpMetrics } from './client.js';
export { probeRanges, type ProbeStats } from './probe.js';
export {
  parseNetTlpUri,
  parseRangeList,
  formatNetTlpUri,
  isLoopbackHost,
  type NetTlpClientOptions,
  DEFAULT_PORT_BASE,
  DEFAULT_TAGS,
  DEFAULT_MRRS,
  DEFAULT_MPS,
  DEFAULT_RETRIES,
  DEFAULT_TIMEOUT_LOOPBACK_MS,
  DEFAULT_TIMEOUT_REMOTE_MS,
  TIMEOUT_CAP_MS,
} from './uri.js';

/** Connect with parsed options; probes the ranges when none were given (loopback or probe=1). */
export async function openNetTlpClient(options: NetTlpClientOptions): Promise<NetTlpClient> {
  const c = await NetTlpClient.connect(options);
  if (options.ranges === undefined) {
    try {
      c.setRanges(await probeRanges(c));
    } catch (e) {
      await c.close();
      throw e;
    }
  }
  return c;
}

/** Open `nettlp://…` (what openSource() calls for the nettlp scheme). */
export async function openNetTlp(uri: string, opts: OpenOptions = {}): Promise<NetTlpClient> {
  return openNetTlpClient(parseNetTlpUri(uri, { writable: opts.writable }));
}

registerSourceScheme('nettlp', (uri, _rest, opts) => openNetTlp(uri, opts));
