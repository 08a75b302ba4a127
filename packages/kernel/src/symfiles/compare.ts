/**
 * Compare symbols decoded from memory with symbols from a file (System.map, ISF, /proc/kallsyms).
 * File addresses are usually link-time (unrelocated): a constant KASLR slide is found from `_text`
 * (or given) and applied before comparing. Memory wins unless told otherwise; every disagreement is
 * reported.
 */
import type { SymbolTable } from '../kallsyms/symbols.js';

export type DisagreementKind =
  /** Same name, different address(es) after the slide. */
  | 'address'
  /** Same name and address, different type letter (only when both sides have letters). */
  | 'type'
  | 'missing-in-memory'
  | 'missing-in-file';

export interface SymbolDisagreement {
  name: string;
  kind: DisagreementKind;
  /** "0x…" addresses (memory: runtime; file: as stored in the file, before the slide). */
  memory?: string[];
  file?: string[];
  memoryType?: string;
  fileType?: string;
}

export interface CompareOptions {
  /** File → memory address shift; 'auto' (default) takes memory _text − file _text (0 without _text). */
  slide?: bigint | 'auto';
  /** Which side resolve() believes (default 'memory'). */
  prefer?: 'memory' | 'file';
  /** Ignore absolute ('A') symbols, whose values are not relocated (default false). */
  skipAbsolute?: boolean;
}

export interface SymbolComparison {
  slide: bigint;
  slideSource: string;
  /** Names present on both sides. */
  compared: number;
  /** Of those, names whose addresses (and letters) agree. */
  agree: number;
  onlyInMemory: number;
  onlyInFile: number;
  disagreements: SymbolDisagreement[];
  prefer: 'memory' | 'file';
  /** The address to use for `name`: the preferred side's, else the other's (file + slide). */
  resolve(name: string): bigint | undefined;
}

interface Entry {
  addrs: bigint[];
  type: string;
}

function index(t: SymbolTable, skipAbsolute: boolean): Map<string, Entry> {
  const m = new Map<string, Entry>();
  for (let i = 0; i < t.count; i++) {
    const type = t.type(i);
    if (skipAbsolute && (type === 'A' || type === 'a')) continue;
    const name = t.name(i);
    const e = m.get(name);
    if (e) e.addrs.push(t.address(i));
    else m.set(name, { addrs: [t.address(i)], type });
  }
  return m;
}

const hex = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

export function compareSymbols(memory: SymbolTable, file: SymbolTable, opts: CompareOptions = {}): SymbolComparison {
  const mem = index(memory, opts.skipAbsolute ?? false);
  const fil = index(file, opts.skipAbsolute ?? false);
  let slide = 0n;
  let slideSource = 'none (no _text on both sides)';
  if (typeof opts.slide === 'bigint') {
    slide = opts.slide;
    slideSource = 'given';
  } else {
    const a = mem.get('_text');
    const b = fil.get('_text');
    if (a && b) {
      slide = a.addrs[0] - b.addrs[0];
      slideSource = '_text';
    }
  }
  const disagreements: SymbolDisagreement[] = [];
  let compared = 0;
  let agree = 0;
  let onlyInMemory = 0;
  let onlyInFile = 0;
  // absolute and per-CPU values (below the kernel half) are not relocated
  const shift = (v: bigint, type: string): bigint =>
    type === 'A' || type === 'a' || v < 0x8000000000000000n ? v : BigInt.asUintN(64, v + slide);
  for (const [name, m] of mem) {
    const f = fil.get(name);
    if (!f) {
      onlyInMemory++;
      disagreements.push({ name, kind: 'missing-in-file', memory: m.addrs.map(hex), memoryType: m.type });
      continue;
    }
    compared++;
    // Agreement = every file address is one of memory's. Name-keyed formats (ISF) hold one address
    // per name, so a static function defined twice in the kernel has fewer file addresses than memory.
    const memSet = new Set(m.addrs);
    const same = f.addrs.every((v) => memSet.has(shift(v, f.type)));
    if (!same) {
      disagreements.push({
        name,
        kind: 'address',
        memory: m.addrs.map(hex),
        file: f.addrs.map(hex),
        memoryType: m.type,
        fileType: f.type,
      });
      continue;
    }
    if (m.type !== '?' && f.type !== '?' && m.type !== f.type) {
      disagreements.push({ name, kind: 'type', memory: m.addrs.map(hex), memoryType: m.type, fileType: f.type });
      continue;
    }
    agree++;
  }
  for (const [name, f] of fil) {
    if (mem.has(name)) continue;
    onlyInFile++;
    disagreements.push({ name, kind: 'missing-in-memory', file: f.addrs.map(hex), fileType: f.type });
  }
  const prefer = opts.prefer ?? 'memory';
  return {
    slide,
    slideSource,
    compared,
    agree,
    onlyInMemory,
    onlyInFile,
    disagreements,
    prefer,
    resolve(name: string): bigint | undefined {
      const m = mem.get(name);
      const f = fil.get(name);
      const fromFile = f ? shift(f.addrs[0], f.type) : undefined;
      if (prefer === 'file') return fromFile ?? m?.addrs[0];
      return m?.addrs[0] ?? fromFile;
    },
  };
}
