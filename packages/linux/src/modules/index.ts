export * from './modules.js';
export * from './symbols.js';
