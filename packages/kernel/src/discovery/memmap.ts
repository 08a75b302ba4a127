/**
 * The target's own physical memory map: the top level of the kernel's `iomem_resource` tree (what
 * /proc/iomem prints without indentation), and from it the "System RAM" ranges. NetTLP cannot tell
 * which physical addresses are RAM — reading an MMIO hole on a real machine has side effects — so a
 * source whose ranges were only probed narrows them to this map (`PhysicalMemory.adoptMemoryMap`).
 */
import { hex, normaliseRanges, type PhysRange } from '@pmi/core';
import type { KernelObjects } from '../objects/kernel.js';
import { collect, walkChain } from '../objects/walk.js';

/** include/linux/ioport.h: IORESOURCE_MEM | IORESOURCE_SYSRAM = IORESOURCE_SYSTEM_RAM. */
const IORESOURCE_MEM = 0x00000200;
const IORESOURCE_SYSRAM = 0x01000000;
/** Top-level entries walked at most (a PC has a few dozen; more → E_LIST too_long, kept as a warning). */
const MAX_ENTRIES = 4096;

export interface IomemEntry {
  /** Physical range, end exclusive (the kernel's `end` is inclusive). */
  start: number;
  end: number;
  name: string;
  flags: number;
  systemRam: boolean;
}

export interface MemoryMap {
  entries: IomemEntry[];
  /** Sorted, merged "System RAM" ranges. */
  ram: PhysRange[];
  warnings: string[];
}

/**
 * Read the top level of `iomem_resource` (a bounded walk: a loop or an unreadable entry gives the
 * entries read so far and a warning).
 */
export async function readMemoryMap(k: KernelObjects): Promise<MemoryMap> {
  const warnings: string[] = [];
  const R = k.layout('resource', ['start', 'end', 'name', 'flags', 'sibling', 'child']);
  const walk = await collect(
    walkChain(k, k.symbol('iomem_resource'), R, 'child', 'sibling', { max: MAX_ENTRIES, name: 'iomem_resource' }),
  );
  if (walk.error) warnings.push(`${walk.error.message}; kept ${walk.items.length} entries`);
  const entries: IomemEntry[] = [];
  for (const r of walk.items) {
    const start = r.u64('start');
    const endIncl = r.u64('end');
    if (endIncl < start || endIncl >= 2n ** 52n) {
      warnings.push(`iomem_resource: entry at ${hex(r.va)} has an implausible range ${hex(start)}-${hex(endIncl)}`);
      continue;
    }
    const flags = r.num('flags');
    // The name is for reports (the RAM test is the flags): '' when unreadable.
    const namePtr = r.ptr('name');
    const name = namePtr === 0n ? '' : await k.readString(namePtr, 64).catch(() => '');
    entries.push({
      start: Number(start),
      end: Number(endIncl) + 1,
      name,
      flags,
      systemRam: (flags & (IORESOURCE_MEM | IORESOURCE_SYSRAM)) === (IORESOURCE_MEM | IORESOURCE_SYSRAM),
    });
  }
  const ram = normaliseRanges(entries.filter((e) => e.systemRam).map((e) => ({ start: e.start, end: e.end })));
  return { entries, ram, warnings };
}
