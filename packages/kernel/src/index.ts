// Layers of kernel discovery; each sub-folder is usable on its own (see docs/architecture.md).
export const KERNEL_PACKAGE = '@pmi/kernel';
export * from './paging/index.js';
export * from './testkit/index.js';
export * from './btf/index.js';
export * from './kallsyms/index.js';
export * from './symfiles/index.js';
export * from './discovery/index.js';
export * from './objects/index.js';
