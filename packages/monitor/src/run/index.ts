export * from './run-checks.js';
export * from './registry.js';
