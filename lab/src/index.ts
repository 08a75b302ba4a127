export { KERNELS, resolveKernel, fetchKernel, kernelModules, readModinfo, kernelCacheDir } from './kernels.js';
export type { KernelSpec, KernelId, FetchedKernel, FetchOptions, ModuleFile } from './kernels.js';
export { buildInitramfs, isStaticElf, WORKLOAD } from './initramfs.js';
export { buildStaticHelper, buildUnixHelper, UNIX_HELPER, UNIX_HELPER_C } from './guest-helper.js';
export { buildThreadHelper, THREAD_HELPER, THREAD_HELPER_C } from './thread-helper.js';
export { parseInfoRegisters, parseQemuCpuNotes, joinVcpuViews } from './vcpus.js';
export type { VcpuEntry, VcpuListing, InfoRegistersCpu, QemuCpuNote } from './vcpus.js';
export { buildCpio, parseCpio } from './cpio.js';
export type { CpioEntry } from './cpio.js';
export { runOnChannel } from './channel.js';
export type { RunResult, ChannelRunOptions } from './channel.js';
export { QmpClient, qmpOnce } from './qmp.js';
export { listLabVms, findLabVm, labSourceUri, statePath, isVmProcessAlive } from './state.js';
export type { LabVmState } from './state.js';
export {
  parseTruth,
  parseProcModules,
  parseKallsyms,
  parseProcNetTcp,
  parseProcNetUdp,
  parseProcNetUnix,
  parseNetnsListing,
  parseNsLink,
  parsePsListing,
  parseThreadListing,
  parseThreadsOutput,
  withoutLabThreads,
  parseSha256,
  parseMeminfo,
  parseIomem,
  splitSections,
  decodeProcNetAddress,
  withoutDescendants,
  withoutLabMachinery,
  hexAddr,
  TRUTH_SCRIPT,
  THREADS_SCRIPT,
  KALLSYMS_SCRIPT,
} from './truth.js';
export type {
  GroundTruth,
  PsEntry,
  ThreadEntry,
  ThreadListing,
  ModuleEntry,
  KallsymsEntry,
  NetTcpEntry,
  NetUdpEntry,
  NetUnixEntry,
  NetnsEntry,
  IomemEntry,
} from './truth.js';
export { LabVm, startLabVm, openLabVm, stopAllLabVms, qemuArgs, parseMemory, PANIC_RE } from './vm.js';
export type { StartOptions, Paging } from './vm.js';
export { cacheRoot, stateDir } from './util.js';
export {
  fetchKernelHeaders,
  buildRootkitModule,
  rootkitBuildInfo,
  loadRootkit,
  startRootkitVictims,
  parseRootkitLog,
  rootkitInsmodArgs,
  kernelAbi,
  KernelHeadersUnsupportedError,
  ROOTKIT_SOURCE_DIR,
  ROOTKIT_MODULE_NAME,
  type KernelHeaders,
  type RootkitBuild,
  type RootkitBuildOptions,
  type RootkitParams,
  type RootkitLoadResult,
  type RootkitLog,
} from './rootkit.js';
