export * from './repair.js';
