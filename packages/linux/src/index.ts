// Linux views over a discovered kernel (see docs/architecture.md). Each view lives in its own folder.
export const LINUX_PACKAGE = '@pmi/linux';
export * from './tasks/index.js';
export * from './cpus/index.js';
export * from './memory/index.js';
export * from './files/index.js';
export * from './modules/index.js';
export * from './net/index.js';
export * from './printk/index.js';
