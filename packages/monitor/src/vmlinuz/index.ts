// `--vmlinuz`: the running kernel's text and rodata against its on-disk bzImage (docs/monitor-vmlinuz.md).
export { parseBzImage, detectCompression, decompressPayload, type BzImageHeader, type Compression } from './bzimage.js';
export { lz4LegacyDecompress, lz4DecodeBlock } from './lz4.js';
export { Vmlinux, parseElf, readRelocTable, type ElfSegment, type ElfSection, type RelocTable } from './vmlinux.js';
export { collectSites, detectAltLayout, SITE_KINDS, type Site, type SiteKind, type TableInfo } from './sites.js';
export {
  compareWithVmlinuz,
  vmlinuzCheck,
  loadVmlinuz,
  VMLINUZ_CHECK_ID,
  type VmlinuzOptions,
  type VmlinuzOutcome,
  type VmlinuzStats,
  type KindStats,
  type FlaggedRange,
} from './compare.js';
