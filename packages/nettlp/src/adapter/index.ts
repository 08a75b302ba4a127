/** The NetTLP adapter in software: serve any PhysicalMemory to NetTLP/LibTLP DMA clients over UDP. */
export { startAdapter, type AdapterOptions, type NetTlpAdapter } from './adapter.js';
export {
  AdapterCore,
  emptyStats,
  type AdapterCoreOptions,
  type AdapterStats,
  type Peer,
  type ReplyFn,
  type SplitMode,
} from './core.js';
export { loadNativeIo, nativeIoError, type NativeIo } from './native.js';
export {
  parseFaultSpec,
  parseCidrList,
  isAllowed,
  ipv4ToInt,
  intToIpv4,
  isLoopback,
  mulberry32,
  NO_FAULTS,
  type Cidr,
  type FaultSpec,
} from './options.js';
