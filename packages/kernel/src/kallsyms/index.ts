export {
  SymbolTable,
  SymbolTableBuilder,
  stripLlvmSuffix,
  splitAddress,
  joinAddress,
  type KernelSymbol,
  type SymbolHit,
} from './symbols.js';
export {
  locateKallsyms,
  decodeKallsymsAt,
  KernelSymbols,
  type LocateKallsymsOptions,
  type KallsymsCandidate,
  type KallsymsTiming,
} from './locate.js';
export { type KallsymsLayout, type AddressKind, type TableOrder, LIMITS as KALLSYMS_LIMITS } from './decode.js';
export { DIGIT_RUN } from './token-table.js';
export * from './synth.js';
