// Typed kernel objects: resolved layouts, batched struct reads, globals, per-CPU, list walks. See README-objects.md.
export {
  KernelObjects,
  cpumaskBits,
  MAX_NR_CPUS,
  PERCPU_TYPES,
  type KernelObjectsInit,
  type GlobalInfo,
  type PercpuVarInfo,
} from './kernel.js';
export { Layout, FieldKind, scalarOf, type Field, type Scalar, type Hop, type LayoutOptions } from './layout.js';
export { StructView, ArrayView, decodeInt, decodeNum, type FieldRef } from './view.js';
export { GLOBAL_TYPES, type GlobalSpec } from './globals.js';
export {
  walkList,
  walkHlist,
  walkChain,
  walkRbTree,
  collectList,
  collect,
  DEFAULT_MAX,
  type WalkOptions,
  type HlistOptions,
  type ListResult,
} from './walk.js';
export { E_LIST, type ListErrorReason } from './errors.js';
