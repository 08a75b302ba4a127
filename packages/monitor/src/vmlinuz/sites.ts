/**
 * The kernel's own lists of the places it patches in its text, read from the relocated vmlinux:
 * where a list is (kallsyms bounds of the running kernel, or the vmlinux section header of the same
 * name) and what each entry says (site position, length, and what the kind needs to judge it).
 *
 * Positions are byte offsets from the running kernel's `_text` (KASLR-independent numbers).
 */
import type { SymbolTable } from '@pmi/kernel';
import { decodeInsn, readI32, readU32, REG_NAMES } from './x86.js';
import type { Vmlinux } from './vmlinux.js';

/** alt_instr with a u16 cpuid whose bit 15 is "apply if the feature is absent" (≤ 6.2 layouts). */
function readU16CpuidEntry(b: Uint8Array, e: number) {
  return {
    feature: b[e + 8] | ((b[e + 9] & 0x7f) << 8),
    flags: b[e + 9] >> 7,
    instrLen: b[e + 10],
    replLen: b[e + 11],
  };
}

export type SiteKind =
  | 'smp_locks'
  | 'ibt_endbr_seal'
  | 'retpoline_sites'
  | 'return_sites'
  | 'call_sites'
  | 'jump_table'
  | 'mcount_loc'
  | 'static_call_sites'
  | 'static_call_tramp'
  | 'ftrace_call'
  | 'runtime_const'
  | 'parainstructions'
  | 'altinstructions';

/** Order in which kinds are judged: single-purpose sites first, then paravirt and alternatives,
 * whose originals may contain sites of the other kinds (those bytes are taken as already judged). */
export const SITE_KINDS: readonly SiteKind[] = [
  'smp_locks',
  'ibt_endbr_seal',
  'retpoline_sites',
  'return_sites',
  'call_sites',
  'jump_table',
  'mcount_loc',
  'static_call_sites',
  'static_call_tramp',
  'ftrace_call',
  'runtime_const',
  'parainstructions',
  'altinstructions',
];

export interface AltEntry {
  /** Replacement position (from runtime _text) and length. */
  repl: number;
  replLen: number;
  instrLen: number;
  /** cpuid / feature word and flags (ALT_FLAG_NOT = 1, ALT_FLAG_DIRECT_CALL = 2 on 6.3+). */
  feature: number;
  flags: number;
}

export interface Site {
  kind: SiteKind;
  pos: number;
  len: number;
  /** jump_table: jump target position. */
  target?: number;
  /** retpoline_sites: the thunk's register; static_call_sites: tail-call flag. */
  reg?: number;
  tail?: boolean;
  /** altinstructions: every entry for this site (nested alternatives have several). */
  alts?: AltEntry[];
  /** runtime_const: the variable whose boot-time value is patched into the immediate. */
  constSym?: string;
  /** static_call_sites / static_call_tramp: position of the `struct static_call_key` (its `func` first). */
  key?: number;
  /** parainstructions: the patch type (index of the pv_ops slot). */
  pvType?: number;
}

export interface TableInfo {
  kind: SiteKind;
  /** Where the list came from: `kallsyms __start…/__stop…` or `section .altinstructions`, or why it is absent. */
  source: string;
  entries: number;
  /** Entry layout when it had to be detected (alt_instr size). */
  layout?: string;
}

/** The window of the vmlinux the tables are read from: runtime _text and the image slide. */
export interface SiteContext {
  image: Vmlinux;
  symbols: SymbolTable;
  /** Runtime `_text`. */
  text: bigint;
  /** Link-time `_text` of the image. */
  linkText: bigint;
}

function runtimeSym(sym: SymbolTable, name: string): bigint | undefined {
  return sym.get(name)?.address;
}

/** Bounds (positions) of a table: kallsyms start/stop symbols of the running kernel, else the section. */
function tableBounds(
  c: SiteContext,
  startSym: string,
  stopSym: string,
  section: string | undefined,
): { start: number; end: number; source: string } | undefined {
  const a = runtimeSym(c.symbols, startSym);
  const b = runtimeSym(c.symbols, stopSym);
  if (a !== undefined && b !== undefined && b >= a) {
    return { start: Number(a - c.text), end: Number(b - c.text), source: `kallsyms ${startSym}..${stopSym}` };
  }
  if (section) {
    const s = c.image.section(section);
    if (s && s.size > 0) {
      const start = Number(s.addr - c.linkText);
      return { start, end: start + s.size, source: `section ${section}` };
    }
  }
  return undefined;
}

function readTable(c: SiteContext, start: number, end: number): Uint8Array {
  return c.image.read(c.linkText + BigInt(start), end - start);
}

/** Lists of s32 self-relative offsets (`.long site - .`): smp_locks, retpolines, returns, calls, endbr. */
function relList(
  c: SiteContext,
  kind: SiteKind,
  startSym: string,
  stopSym: string,
  section: string,
  infos: TableInfo[],
): number[] {
  const b = tableBounds(c, startSym, stopSym, section);
  if (!b) {
    infos.push({ kind, source: 'absent (no symbols, no section)', entries: 0 });
    return [];
  }
  const t = readTable(c, b.start, b.end);
  const n = Math.floor(t.length / 4);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(b.start + 4 * i + readI32(t, 4 * i));
  infos.push({ kind, source: b.source, entries: n });
  return out;
}

const TEXT_KINDS_WITH_LEN_FROM_INSN = new Set<SiteKind>(['retpoline_sites', 'return_sites', 'call_sites']);

/** Read every table; `fileAt(pos, len)` gives relocated file bytes (to size sites from their instruction). */
export function collectSites(
  c: SiteContext,
  fileAt: (pos: number, len: number) => Uint8Array,
): { sites: Site[]; tables: TableInfo[] } {
  const infos: TableInfo[] = [];
  const sites: Site[] = [];
  const thunkReg = (target: number): number | undefined => {
    const hit = c.symbols.byAddress(c.text + BigInt(target));
    const m = hit && hit.offset === 0n ? /^__x86_indirect_thunk_(\w+)$/.exec(hit.name) : null;
    if (!m) return undefined;
    const i = REG_NAMES.indexOf(m[1]);
    return i < 0 ? undefined : i;
  };

  for (const p of relList(c, 'smp_locks', '__smp_locks', '__smp_locks_end', '.smp_locks', infos))
    sites.push({ kind: 'smp_locks', pos: p, len: 1 });
  for (const p of relList(c, 'ibt_endbr_seal', '__ibt_endbr_seal', '__ibt_endbr_seal_end', '.ibt_endbr_seal', infos))
    sites.push({ kind: 'ibt_endbr_seal', pos: p, len: 4 });
  const lists: [SiteKind, string, string, string][] = [
    ['retpoline_sites', '__retpoline_sites', '__retpoline_sites_end', '.retpoline_sites'],
    ['return_sites', '__return_sites', '__return_sites_end', '.return_sites'],
    ['call_sites', '__call_sites', '__call_sites_end', '.call_sites'],
  ];
  for (const [kind, a, b, sec] of lists) {
    for (const p of relList(c, kind, a, b, sec, infos)) {
      const f = fileAt(p, 16);
      const insn = decodeInsn(f, 0, f.length);
      const len = insn && TEXT_KINDS_WITH_LEN_FROM_INSN.has(kind) ? insn.len : 5;
      const s: Site = { kind, pos: p, len };
      if (insn && 'target' in insn) s.target = p + insn.target;
      if (kind === 'retpoline_sites' && s.target !== undefined) s.reg = thunkReg(s.target);
      sites.push(s);
    }
  }

  // __jump_table: struct jump_entry { s32 code; s32 target; long key; } (relative since 5.x)
  {
    const b = tableBounds(c, '__start___jump_table', '__stop___jump_table', undefined);
    if (!b) infos.push({ kind: 'jump_table', source: 'absent (no __start___jump_table)', entries: 0 });
    else {
      const t = readTable(c, b.start, b.end);
      const n = Math.floor(t.length / 16);
      for (let i = 0; i < n; i++) {
        const e = b.start + 16 * i;
        const code = e + readI32(t, 16 * i);
        const target = e + 4 + readI32(t, 16 * i + 4);
        const f = fileAt(code, 5);
        const len = f[0] === 0xeb || (f[0] === 0x66 && f[1] === 0x90) ? 2 : 5;
        sites.push({ kind: 'jump_table', pos: code, len, target });
      }
      infos.push({ kind: 'jump_table', source: b.source, entries: n });
    }
  }

  // __mcount_loc: unsigned long absolute addresses (relocated by the 64-bit list)
  {
    const b = tableBounds(c, '__start_mcount_loc', '__stop_mcount_loc', undefined);
    if (!b) infos.push({ kind: 'mcount_loc', source: 'absent (no __start_mcount_loc)', entries: 0 });
    else {
      const t = readTable(c, b.start, b.end);
      const n = Math.floor(t.length / 8);
      const textHi = Number(c.text >> 32n) >>> 0;
      const textLo = Number(c.text & 0xffffffffn);
      let used = 0;
      for (let i = 0; i < n; i++) {
        const lo = readU32(t, 8 * i);
        const hi = readU32(t, 8 * i + 4);
        if (hi !== textHi) continue; // zeroed (weak function) entries, or garbage
        const p = lo - textLo;
        if (p < 0) continue;
        sites.push({ kind: 'mcount_loc', pos: p, len: 5 });
        used++;
      }
      infos.push({ kind: 'mcount_loc', source: b.source, entries: used });
    }
  }

  // static_call_sites: struct static_call_site { s32 addr; s32 key; } (key's low bits: TAIL=1, INIT=2)
  {
    const b = tableBounds(c, '__start_static_call_sites', '__stop_static_call_sites', undefined);
    if (!b) infos.push({ kind: 'static_call_sites', source: 'absent (no __start_static_call_sites)', entries: 0 });
    else {
      const t = readTable(c, b.start, b.end);
      const n = Math.floor(t.length / 8);
      for (let i = 0; i < n; i++) {
        const e = b.start + 8 * i;
        const key = readI32(t, 8 * i + 4);
        sites.push({
          kind: 'static_call_sites',
          pos: e + readI32(t, 8 * i),
          len: 5,
          tail: (key & 1) !== 0,
          key: (e + 4 + key) & ~3,
        });
      }
      infos.push({ kind: 'static_call_sites', source: b.source, entries: n });
    }
  }

  // static call trampolines (__SCT__*) in __static_call_text: the first 5 bytes are rewritten
  {
    const a = runtimeSym(c.symbols, '__static_call_text_start');
    const z = runtimeSym(c.symbols, '__static_call_text_end');
    if (a === undefined || z === undefined)
      infos.push({ kind: 'static_call_tramp', source: 'absent (no __static_call_text_start)', entries: 0 });
    else {
      let n = 0;
      c.symbols.forEachRaw((i) => {
        const name = c.symbols.name(i);
        if (!name.startsWith('__SCT__')) return;
        const va = c.symbols.address(i);
        if (va < a || va >= z) return;
        const key = runtimeSym(c.symbols, '__SCK__' + name.slice(7));
        sites.push({
          kind: 'static_call_tramp',
          pos: Number(va - c.text),
          len: 5,
          key: key === undefined ? undefined : Number(key - c.text),
        });
        n++;
      });
      infos.push({ kind: 'static_call_tramp', source: 'kallsyms __SCT__* in __static_call_text', entries: n });
    }
  }

  // ftrace's own patched calls inside ftrace_caller / ftrace_regs_caller
  {
    let n = 0;
    for (const name of ['ftrace_call', 'ftrace_regs_call', 'ftrace_graph_call']) {
      const va = runtimeSym(c.symbols, name);
      if (va === undefined) continue;
      sites.push({ kind: 'ftrace_call', pos: Number(va - c.text), len: 5 });
      n++;
    }
    infos.push({ kind: 'ftrace_call', source: 'kallsyms ftrace_call/ftrace_regs_call/ftrace_graph_call', entries: n });
  }

  // runtime constants (6.11+): runtime_ptr_<sym> lists point at the imm64 of a movabs, runtime_shift_<sym>
  // at the imm8 of a shift; runtime_const_init() writes the variable's value there at boot.
  {
    const found = new Map<string, { start: number; end: number; source: string; bytes: number }>();
    c.symbols.forEachRaw((i) => {
      const name = c.symbols.name(i);
      const m = /^__start_runtime_(ptr|shift)_(.+)$/.exec(name);
      if (!m) return;
      const b = tableBounds(c, name, `__stop_runtime_${m[1]}_${m[2]}`, `runtime_${m[1]}_${m[2]}`);
      if (b) found.set(`${m[1]}:${m[2]}`, { ...b, bytes: m[1] === 'ptr' ? 8 : 1 });
    });
    for (const sec of c.image.sections) {
      const m = /^runtime_(ptr|shift)_(.+)$/.exec(sec.name);
      if (!m || found.has(`${m[1]}:${m[2]}`)) continue;
      const start = Number(sec.addr - c.linkText);
      found.set(`${m[1]}:${m[2]}`, {
        start,
        end: start + sec.size,
        source: `section ${sec.name}`,
        bytes: m[1] === 'ptr' ? 8 : 1,
      });
    }
    let n = 0;
    for (const [key, b] of found) {
      const constSym = key.slice(key.indexOf(':') + 1);
      const t = readTable(c, b.start, b.end);
      for (let i = 0; i + 4 <= t.length; i += 4) {
        sites.push({ kind: 'runtime_const', pos: b.start + i + readI32(t, i), len: b.bytes, constSym });
        n++;
      }
    }
    infos.push({
      kind: 'runtime_const',
      source: found.size
        ? `runtime_ptr_*/runtime_shift_* (${[...found.keys()].join(', ')})`
        : 'absent (kernel before 6.11)',
      entries: n,
    });
  }

  // .parainstructions: struct paravirt_patch_site { u8 *instr; u8 type; u8 len; } (16 bytes)
  {
    const b = tableBounds(c, '__parainstructions', '__parainstructions_end', '.parainstructions');
    if (!b) infos.push({ kind: 'parainstructions', source: 'absent (kernel without .parainstructions)', entries: 0 });
    else {
      const t = readTable(c, b.start, b.end);
      // 16-byte entries; the table may end right after the last entry's `len` (no tail padding)
      const n = Math.floor((t.length + 6) / 16);
      const textHi = Number(c.text >> 32n) >>> 0;
      const textLo = Number(c.text & 0xffffffffn);
      for (let i = 0; i < n; i++) {
        if (readU32(t, 16 * i + 4) !== textHi) continue;
        const len = t[16 * i + 9];
        sites.push({ kind: 'parainstructions', pos: readU32(t, 16 * i) - textLo, len, pvType: t[16 * i + 8] });
      }
      infos.push({ kind: 'parainstructions', source: b.source, entries: n });
    }
  }

  // .altinstructions: struct alt_instr, layout by version (see detectAltLayout)
  {
    const b = tableBounds(c, '__alt_instructions', '__alt_instructions_end', '.altinstructions');
    if (!b) infos.push({ kind: 'altinstructions', source: 'absent', entries: 0 });
    else {
      const t = readTable(c, b.start, b.end);
      const repl = c.image.section('.altinstr_replacement');
      const replRange = repl
        ? { start: Number(repl.addr - c.linkText), end: Number(repl.addr - c.linkText) + repl.size }
        : undefined;
      const layout = detectAltLayout(t, b.start, replRange);
      const groups = new Map<number, Site>();
      for (let i = 0; i < layout.count; i++) {
        const e = i * layout.size;
        const pos = b.start + e + readI32(t, e);
        const replPos = b.start + e + 4 + readI32(t, e + 4);
        const f = layout.read(t, e);
        let s = groups.get(pos);
        if (!s) {
          s = { kind: 'altinstructions', pos, len: 0, alts: [] };
          groups.set(pos, s);
          sites.push(s);
        }
        s.alts!.push({ repl: replPos, replLen: f.replLen, instrLen: f.instrLen, feature: f.feature, flags: f.flags });
        s.len = Math.max(s.len, f.instrLen);
      }
      infos.push({ kind: 'altinstructions', source: b.source, entries: layout.count, layout: layout.name });
    }
  }
  return { sites, tables: infos };
}

interface AltLayout {
  name: string;
  size: number;
  count: number;
  read(t: Uint8Array, e: number): { instrLen: number; replLen: number; feature: number; flags: number };
}

/**
 * struct alt_instr has had three layouts on x86-64, all packed, all starting with
 * `s32 instr_offset; s32 repl_offset`:
 * - ≤ 5.12: `u16 cpuid; u8 instrlen; u8 replacementlen; u8 padlen` (13 bytes);
 * - 5.13–6.2: `u16 cpuid; u8 instrlen; u8 replacementlen` (12 bytes; also 5.10.y, where stable
 *   backported the padlen removal);
 * in the u16 layouts bit 15 of cpuid is ALTINSTR_FLAG_INV ("patch if the feature is absent"), read
 * here as flags bit 0 like the later ALT_FLAG_NOT;
 * - ≥ 6.3: `u32 ft_flags (cpuid:16, flags:16); u8 instrlen; u8 replacementlen` (14 bytes).
 * The layout is the one whose stride divides the table and whose every entry is sane (lengths,
 * replacement inside .altinstr_replacement when that section is known, replacement ≤ original).
 */
export function detectAltLayout(t: Uint8Array, start: number, repl?: { start: number; end: number }): AltLayout {
  const layouts: AltLayout[] = [
    {
      name: 'alt_instr/14 (u32 ft_flags, 6.3+)',
      size: 14,
      count: 0,
      read: (b, e) => ({
        feature: b[e + 8] | (b[e + 9] << 8),
        flags: b[e + 10] | (b[e + 11] << 8),
        instrLen: b[e + 12],
        replLen: b[e + 13],
      }),
    },
    {
      name: 'alt_instr/13 (u16 cpuid + padlen, ≤5.12)',
      size: 13,
      count: 0,
      read: readU16CpuidEntry,
    },
    {
      name: 'alt_instr/12 (u16 cpuid, 5.13-6.2)',
      size: 12,
      count: 0,
      read: readU16CpuidEntry,
    },
  ];
  for (const l of layouts) {
    if (t.length === 0 || t.length % l.size !== 0) continue;
    const n = t.length / l.size;
    let ok = true;
    for (let i = 0; i < n && ok; i++) {
      const e = i * l.size;
      const f = l.read(t, e);
      const replPos = start + e + 4 + readI32(t, e + 4);
      if (f.instrLen === 0 || f.replLen > f.instrLen || f.feature >= 32 * 64) ok = false;
      else if (repl && f.replLen > 0 && (replPos < repl.start || replPos + f.replLen > repl.end)) ok = false;
    }
    if (ok) return { ...l, count: n };
  }
  throw new Error(`cannot tell the alt_instr layout of a ${t.length}-byte .altinstructions`);
}
