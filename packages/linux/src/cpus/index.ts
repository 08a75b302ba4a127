// CPUs (pmi cpus): per possible CPU its per-CPU area, current task and run queue. See cpus.ts.
export * from './cpus.js';
