// BTF (BPF Type Format): parser, queries, in-memory locator, file input. See packages/kernel/README-btf.md.
export * from './kinds.js';
export { BtfData, parseBtfHeader, btfError, type BtfHeader, type ParseBtfOptions } from './parse.js';
export * from './btf.js';
export * from './format.js';
export * from './locate.js';
export * from './file.js';
