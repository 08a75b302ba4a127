export * from './errors.js';
export * from './numbers.js';
export * from './memory.js';
export * from './registry.js';
export * from './buffer-memory.js';
