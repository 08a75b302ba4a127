export * from './discover.js';
export * from './vmcoreinfo.js';
