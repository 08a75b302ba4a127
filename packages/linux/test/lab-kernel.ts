/**
 * Lab-test helper: open a source and discover its kernel, reusing the discovery *hints* (where
 * kallsyms and BTF sit) found on the target's snapshot. Hints are validated like any candidate,
 * so views are still read from the source under test; the cold scan over every source is
 * covered once by packages/kernel/test/discovery.lab.test.ts. Over nettlp:// this turns a
 * full-memory scan per test into a few targeted reads.
 */
import { statSync } from 'node:fs';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { startAdapter } from '@pmi/nettlp';
import { discoverKernel, KernelObjects, type DiscoveryHints } from '@pmi/kernel';
import type { MapRow } from '../src/index.js';

const hintsBySnapshot = new Map<string, Promise<DiscoveryHints>>();

function snapshotHints(snapshotPath: string): Promise<DiscoveryHints> {
  let h = hintsBySnapshot.get(snapshotPath);
  if (!h) {
    h = (async () => {
      const mem = await openSource('raw:' + snapshotPath);
      try {
        return (await discoverKernel(mem)).facts.hints;
      } finally {
        await mem.close();
      }
    })();
    hintsBySnapshot.set(snapshotPath, h);
  }
  return h;
}

export async function openLabKernel(
  uri: string,
  target: { snapshot_path: string },
): Promise<{ mem: PhysicalMemory; k: KernelObjects }> {
  const hints = await snapshotHints(target.snapshot_path);
  const mem = await openSource(uri);
  try {
    return { mem, k: KernelObjects.from(await discoverKernel(mem, { hints })) };
  } catch (e) {
    await mem.close();
    throw e;
  }
}

/**
 * The target's snapshot served by the software adapter on 127.0.0.2 and opened as a nettlp://
 * source (discovery reuses the snapshot's validated hints). close() stops everything.
 */
export async function openSnapshotOverNettlp(target: {
  snapshot_path: string;
}): Promise<{ mem: PhysicalMemory; k: KernelObjects; close: () => Promise<void> }> {
  const source = await openSource('raw:' + target.snapshot_path);
  const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
  const adapter = await startAdapter({ source, listen: '127.0.0.2', portBase, tags: 32 });
  const size = statSync(target.snapshot_path).size;
  try {
    const { mem, k } = await openLabKernel(`nettlp://127.0.0.2:${portBase}?tags=32&mrrs=4096&ranges=0+${size}`, target);
    return {
      mem,
      k,
      close: async () => {
        await mem.close();
        await adapter.close();
        await source.close();
      },
    };
  } catch (e) {
    await adapter.close();
    await source.close();
    throw e;
  }
}

/** A maps row as the guest's /proc/PID/maps prints it (start-end perms offset dev inode path, no padding on addresses). */
export function procMapsLine(r: MapRow): string {
  return [
    `${r.start.slice(2)}-${r.end.slice(2)}`,
    r.perms,
    r.offset.slice(2).padStart(8, '0'),
    r.dev,
    String(r.inode),
    r.path,
  ].join(' ');
}
