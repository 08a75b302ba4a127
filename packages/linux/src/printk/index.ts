export * from './printk.js';
