// Test kit: synthetic x86-64 page tables in buffer-backed memory, a counting source wrapper, and a
// mapped scratch stretch for building kernel objects.
export * from './page-table-builder.js';
export * from './counting-memory.js';
export * from './scratch-memory.js';
