export * from './types.js';
export * from './dispatch-decode.js';
export * from './kernel-memory.js';
export { syscallCheck, type SyscallBaseline } from './syscalls.js';
export { idtCheck, decodeGate, type IdtGate, type IdtBaseline } from './idt.js';
export {
  textCheck,
  textLayout,
  findPatchSites,
  hashPages,
  compareDigests,
  readPages,
  pageVa,
  type TextBaseline,
  type TextLayout,
  type PatchSite,
} from './text.js';
