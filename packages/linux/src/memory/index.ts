// Process virtual memory through the process's own page tables.
export * from './process-memory.js';
export * from './dentry.js';
export * from './maps.js';
