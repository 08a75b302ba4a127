// Integrity checks and the live monitor (layer above @pmi/linux, below the CLI): see docs/monitor.md.
export const MONITOR_PACKAGE = '@pmi/monitor';
export * from './model.js';
export * from './checks/index.js';
export * from './baseline/index.js';
export * from './run/index.js';
export * from './watch/index.js';
