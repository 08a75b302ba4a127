export * from './discover.js';
export * from './vmcoreinfo.js';
export * from './memmap.js';
