// Test kit: synthetic x86-64 page tables in buffer-backed memory, and a counting source wrapper.
export * from './page-table-builder.js';
export * from './counting-memory.js';
