/**
 * Lab-test helper: open a source and discover its kernel, reusing the discovery *hints* (where
 * kallsyms and BTF sit) found on the target's snapshot. Hints are validated like any candidate,
 * so views are still read from the source under test; the cold scan over every source is
 * covered once by packages/kernel/test/discovery.lab.test.ts. Over nettlp:// this turns a
 * full-memory scan per test into a few targeted reads.
 */
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import '@pmi/nettlp';
import { discoverKernel, KernelObjects, type DiscoveryHints } from '@pmi/kernel';

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
