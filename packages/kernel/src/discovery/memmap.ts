/**
 * The target's own physical memory map: the top level of the kernel's `iomem_resource` tree (what
 * /proc/iomem prints without indentation), and from it the "System RAM" ranges. NetTLP cannot tell
 * which physical addresses are RAM — reading an MMIO hole on a real machine has side effects — so a
 * source whose ranges were only probed narrows them to this map (`PhysicalMemory.adoptMemoryMap`).
 */
import { PmiError, hex, normaliseRanges, type PhysRange } from '@pmi/core';
import type { KernelObjects } from '../objects/index.js';

/** include/linux/ioport.h: IORESOURCE_MEM | IORESOURCE_SYSRAM = IORESOURCE_SYSTEM_RAM. */
const IORESOURCE_MEM = 0x00000200;
const IORESOURCE_SYSRAM = 0x01000000;
/** Top-level entries walked at most (a PC has a few dozen). */
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
 * Read the top level of `iomem_resource`. Bounded (MAX_ENTRIES, cycle check); an unreadable entry
 * ends the walk with a warning and what was read so far.
 */
export async function readMemoryMap(k: KernelObjects): Promise<MemoryMap> {
  const warnings: string[] = [];
  const R = k.layout('resource', ['start', 'end', 'name', 'flags', 'sibling', 'child']);
  const root = await k.read(k.symbol('iomem_resource'), R);
  const entries: IomemEntry[] = [];
  const namePtrs: bigint[] = [];
  const seen = new Set<bigint>();
  let va = root.ptr('child');
  while (va !== 0n) {
    if (seen.has(va)) {
      warnings.push(`iomem_resource: the sibling list loops back to ${hex(va)}; kept ${entries.length} entries`);
      break;
    }
    if (entries.length >= MAX_ENTRIES) {
      warnings.push(`iomem_resource: more than ${MAX_ENTRIES} top-level entries; kept the first ${MAX_ENTRIES}`);
      break;
    }
    seen.add(va);
    const [r] = await k.readStructs([va], R);
    if (r instanceof PmiError) {
      warnings.push(`iomem_resource: entry at ${hex(va)} unreadable (${r.message}); kept ${entries.length} entries`);
      break;
    }
    const start = r.u64('start');
    const endIncl = r.u64('end');
    const flags = r.num('flags');
    if (endIncl >= start && endIncl < 2n ** 52n) {
      entries.push({
        start: Number(start),
        end: Number(endIncl) + 1,
        name: '',
        flags,
        systemRam: (flags & (IORESOURCE_MEM | IORESOURCE_SYSRAM)) === (IORESOURCE_MEM | IORESOURCE_SYSRAM),
      });
      namePtrs.push(r.ptr('name'));
    } else warnings.push(`iomem_resource: entry at ${hex(va)} has an implausible range ${hex(start)}-${hex(endIncl)}`);
    va = r.ptr('sibling');
  }
  // Names in one batch (for reports; the RAM test is the flags).
  const named = entries.map((_, i) => i).filter((i) => namePtrs[i] !== 0n);
  const bufs = named.map(() => new Uint8Array(32));
  const failed = new Set(
    (await k.paging.readVirtualBatch(named.map((i, j) => ({ va: namePtrs[i], buf: bufs[j] })))).map((f) => f.index),
  );
  named.forEach((i, j) => {
    if (failed.has(j)) return;
    const nul = bufs[j].indexOf(0);
    entries[i].name = Buffer.from(bufs[j].subarray(0, nul < 0 ? 32 : nul)).toString('latin1');
  });
  const ram = normaliseRanges(entries.filter((e) => e.systemRam).map((e) => ({ start: e.start, end: e.end })));
  return { entries, ram, warnings };
}
