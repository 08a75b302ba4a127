/**
 * @pmi/sources — file-backed physical memory: raw images, live QEMU RAM files, LiME dumps and
 * ELF cores behind the one `PhysicalMemory` interface. Importing this module registers the
 * `raw:`, `qemu:`, `lime:` and `elf:` schemes and the bare-path sniffer with @pmi/core.
 */
import { registerPathSniffer, registerSourceScheme } from '@pmi/core';
import { openElf } from './elf.js';
import { openLime } from './lime.js';
import { openQemu } from './qemu.js';
import { openRaw } from './raw.js';
import { makePathSniffer } from './sniff.js';

export { FileMemory, FILE_IDEAL_BATCH, type Segment, type FileMemoryInit } from './file-memory.js';
export { RawSource, openRaw } from './raw.js';
export {
  QemuRamSource,
  openQemu,
  qemuBelow4g,
  qemuSegments,
  machineFamily,
  findQemuProcess,
  type QemuMachine,
} from './qemu.js';
export {
  LimeSource,
  LimeWriter,
  openLime,
  scanLime,
  encodeLimeHeader,
  writeLimeFile,
  LIME_MAGIC,
  LIME_VERSION,
  LIME_HEADER_SIZE,
  type LimeRange,
} from './lime.js';
export {
  ElfCoreSource,
  openElf,
  parseNotes,
  PT_LOAD,
  PT_NOTE,
  ET_CORE,
  type ElfLoad,
  type ElfNote,
  type ElfHeaderInfo,
} from './elf.js';
export { sniffKind, looksLikeQemuRam, type SniffedKind } from './sniff.js';
export { describeSource, type SourceDescription } from './describe.js';

registerSourceScheme('raw', openRaw);
registerSourceScheme('qemu', openQemu);
registerSourceScheme('lime', openLime);
registerSourceScheme('elf', openElf);
registerPathSniffer(makePathSniffer({ raw: openRaw, qemu: openQemu, lime: openLime, elf: openElf }));
