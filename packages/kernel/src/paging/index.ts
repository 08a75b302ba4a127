// x86-64 address translation (4- and 5-level), see ../../README-paging.md.
export * from './va.js';
export * from './levels.js';
export * from './cache.js';
export * from './x86.js';
export * from './detect.js';
