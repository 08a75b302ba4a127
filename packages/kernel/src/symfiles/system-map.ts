/** System.map / /proc/kallsyms text → SymbolTable. */
import { PmiError } from '@pmi/core';
import { SymbolTableBuilder, type SymbolTable } from '../kallsyms/symbols.js';

export interface SystemMapOptions {
  /** Keep lines tagged `[module]` (/proc/kallsyms); default false: core symbols only. */
  modules?: boolean;
  /** Skip malformed lines instead of throwing E_SYMBOLS (default false). */
  lenient?: boolean;
}

const LINE = /^([0-9a-fA-F]{1,16})\s+(\S)\s+(\S+)(?:\s+\[(\S+)\])?\s*$/;

/** Parse `ffffffff81000000 T _text` lines (System.map, /proc/kallsyms). Addresses stay exact (hi/lo). */
export function parseSystemMap(text: string, opts: SystemMapOptions = {}): SymbolTable {
  const lines = text.split('\n');
  const b = new SymbolTableBuilder(lines.length, text.length);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const m = LINE.exec(line);
    if (!m) {
      if (opts.lenient) continue;
      throw new PmiError('E_SYMBOLS', 'system-map', `line ${i + 1} is not "ADDRESS TYPE NAME": ${line.slice(0, 80)}`, {
        line: i + 1,
      });
    }
    if (m[4] !== undefined && !opts.modules) continue;
    const hex = m[1].padStart(16, '0');
    const hi = parseInt(hex.slice(0, 8), 16);
    const lo = parseInt(hex.slice(8), 16);
    const at = b.reserveBytes(m[3].length);
    const dst = b.nameBuffer;
    for (let k = 0; k < m[3].length; k++) dst[at + k] = m[3].charCodeAt(k) & 0xff;
    b.commit(m[3].length, m[2].charCodeAt(0), hi, lo);
  }
  if (b.count === 0) throw new PmiError('E_SYMBOLS', 'system-map', 'no symbols in the System.map text', {});
  return b.build();
}
