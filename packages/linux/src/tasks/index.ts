// Processes and threads (ps, pstree, cmdline/env/maps): see tasks.ts.
export * from './tasks.js';
export * from './state.js';
export * from './boottime.js';
export * from './prefetch.js';
export * from './proc-comm.js';
export * from './pid-idr.js';
