/**
 * Shared command context: which target to read (source resolution per docs/cli.md),
 * output mode, and cleanup. Commands get an opened PhysicalMemory and never parse
 * global options themselves.
 */
import { openSource, PmiError, type PhysicalMemory } from '@pmi/core';
import { listLabVms, labSourceUri } from '@pmi/lab';
import '@pmi/sources';
import '@pmi/nettlp'; // registers nettlp:// as a source scheme

export interface GlobalOptions {
  source?: string;
  json?: boolean;
}

export interface ResolvedSource {
  uri: string;
  /** How the URI was chosen: 'option' | 'env' | 'lab'. */
  via: 'option' | 'env' | 'lab';
}

/** --source, else $PMI_SOURCE, else the single running lab VM, else a typed error saying how to name one. */
export async function resolveSourceUri(
  opts: GlobalOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ResolvedSource> {
  if (opts.source) return { uri: opts.source, via: 'option' };
  if (env.PMI_SOURCE) return { uri: env.PMI_SOURCE, via: 'env' };
  const vms = await listLabVms();
  if (vms.length === 1) return { uri: labSourceUri(vms[0]), via: 'lab' };
  if (vms.length > 1) {
    throw new PmiError(
      'E_NO_SOURCE',
      'cli',
      `${vms.length} lab VMs are running (${vms.map((v) => v.name).join(', ')}): choose one with --source URI or PMI_SOURCE`,
      { lab_vms: vms.map((v) => ({ name: v.name, source: labSourceUri(v) })) },
    );
  }
  throw new PmiError(
    'E_NO_SOURCE',
    'cli',
    'no target: pass --source URI (e.g. raw:/path/to/image, qemu:/dev/shm/vm.ram, nettlp://127.0.0.2), set PMI_SOURCE, or start a lab VM with `npx pmi-lab up`',
  );
}

export async function openTarget(opts: GlobalOptions, writable = false): Promise<PhysicalMemory> {
  const { uri } = await resolveSourceUri(opts);
  return openSource(uri, { writable });
}

/** Run fn with an opened target and always close it. */
export async function withTarget<T>(
  opts: GlobalOptions,
  fn: (mem: PhysicalMemory) => Promise<T>,
  writable = false,
): Promise<T> {
  const mem = await openTarget(opts, writable);
  try {
    return await fn(mem);
  } finally {
    await mem.close();
  }
}
