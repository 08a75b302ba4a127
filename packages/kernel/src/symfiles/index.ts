export { parseSystemMap, type SystemMapOptions } from './system-map.js';
export { parseJsonLossless, toBigInt } from './json-lossless.js';
export {
  parseIsf,
  readIsfFile,
  isfTypeName,
  type IsfSymbols,
  type IsfField,
  type IsfStruct,
  type IsfTypeLayouts,
} from './isf.js';
export {
  compareSymbols,
  type CompareOptions,
  type SymbolComparison,
  type SymbolDisagreement,
  type DisagreementKind,
} from './compare.js';
