/**
 * hidden_modules: three views of the loaded modules, compared, and module loads/unloads between
 * passes.
 *
 * (a) the `modules` list (what /proc/modules and lsmod walk; every state, Unformed included);
 * (b) sysfs: `module_kset->list`, the kobjects of /sys/module — each a `struct module_kobject`
 *     whose `mod` is the module (NULL for built-in modules that only have parameters: not modules
 *     to compare). The kernel adds the kobject after linking the module into the list and removes
 *     it before unlinking, so (b) ⊆ (a) always holds for a consistent picture;
 * (c) a scan of module space for `struct module` objects: every writable kernel page mapped in
 *     [MODULES_VADDR, MODULES_END) is read and searched for a pointer to itself at the offset of
 *     `module.mkobj.mod` (set by mod_sysfs_init for every loaded module); each hit is validated
 *     through the BTF layout — state a `module_state` value, name printable and NUL-terminated,
 *     memory regions (`mem[]` or `core_layout`) in module space with the object inside one of
 *     them, list links self, poison or kernel pointers. MODULES_END is x86-64's fixed
 *     0xffffffffff000000; MODULES_VADDR is 0xffffffffc0000000 (after a 1 GiB kernel image area,
 *     KASLR) unless a module of (a)/(b) lies below it, then 0xffffffffa0000000 (512 MiB).
 *
 * A module that (b) or (c) finds and (a) does not is hidden: tampering, severity critical — when
 * a second read of all three views confirms it (same struct module, still not in the list). One
 * in state Unformed or Unloading is a warning instead (free_module() unlinks it before freeing its
 * memory). With a baseline (the module list of an earlier pass), a module that appeared or
 * disappeared (in no view any more) is an event: `module_loaded` / `module_unloaded`.
 */
import { isPmiError, PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';
import { moduleLayout, moduleRow } from '@pmi/linux';
import { vaHex, type Finding } from '../model.js';
import type { Check, CheckContext, CheckOutcome } from './types.js';
import { settled } from './processes.js';

export const HIDDEN_MODULES = 'hidden_modules';

export type ModuleView = 'list' | 'kset' | 'scan';

/** One struct module and the views that saw it (plain values: the decision is a pure function). */
export interface ModuleSighting {
  /** struct module address, "0x…". */
  module: string;
  name: string;
  /** Live, Loading, Unloading, Unformed (as /proc/modules names them). */
  state: string;
  views: ModuleView[];
  /** How its `list` links look: `linked` (neighbours point back), `self` (list_del_init), `poison`, `dangling`. */
  links?: string;
}

/** Baseline: the modules of the pass (any view). */
export interface ModulesState {
  modules: { name: string; module: string; views: ModuleView[] }[];
}

const VIEW_TEXT: Record<ModuleView, string> = {
  list: 'the modules list',
  kset: 'sysfs (module_kset)',
  scan: 'a scan of module space',
};

/**
 * The decision over two reads (the second confirms hidden candidates) and the baseline: hidden →
 * tampering (critical), or a warning while it is being loaded/unloaded; appeared/disappeared since
 * the baseline → `module_loaded` / `module_unloaded` events.
 */
export function judgeModules(
  first: readonly ModuleSighting[],
  second: readonly ModuleSighting[],
  baseline?: ModulesState,
): Finding[] {
  const findings: Finding[] = [];
  const again = new Map(second.map((s) => [s.module, s]));
  for (const m of first) {
    if (m.views.includes('list') || m.views.length === 0) continue;
    const b = again.get(m.module);
    if (!b || b.views.includes('list') || b.views.length === 0) continue; // a load/unload in between
    const views = [...new Set([...m.views, ...b.views])];
    const base = {
      check: HIDDEN_MODULES,
      address: m.module,
      symbol: null,
      key: `hidden_module:${m.name}@${m.module}`,
    };
    const seen = views.map((v) => VIEW_TEXT[v]).join(' and ');
    if (m.state === 'Unformed' || m.state === 'Unloading' || b.state === 'Unformed' || b.state === 'Unloading') {
      findings.push({
        ...base,
        kind: 'warning',
        severity: 'medium',
        evidence: `module ${m.name} (struct module ${m.module}, ${b.state}) is seen by ${seen} but not in the modules list: being unloaded?`,
      });
      continue;
    }
    findings.push({
      ...base,
      kind: 'tampering',
      severity: 'critical',
      evidence: `module ${m.name} (struct module ${m.module}, ${b.state}${m.links ? `, list links ${m.links}` : ''}) is seen by ${seen} but is not in the modules list, on two reads`,
    });
  }
  if (baseline) {
    const id = (x: { name: string; module: string }) => `${x.name}@${x.module}`;
    const now = new Map(first.filter((m) => m.views.length > 0).map((m) => [id(m), m]));
    const before = new Map(baseline.modules.map((m) => [id(m), m]));
    for (const [k, m] of now)
      if (!before.has(k))
        findings.push({
          check: HIDDEN_MODULES,
          kind: 'event',
          severity: 'info',
          address: m.module,
          symbol: null,
          key: `module_loaded:${k}`,
          new: m.name,
          evidence: `module ${m.name} loaded since the baseline (struct module ${m.module}, ${m.state})`,
        });
    for (const [k, m] of before)
      if (!now.has(k))
        findings.push({
          check: HIDDEN_MODULES,
          kind: 'event',
          severity: 'info',
          address: m.module,
          symbol: null,
          key: `module_unloaded:${k}`,
          old: m.name,
          evidence: `module ${m.name} unloaded since the baseline (struct module ${m.module} is in no view)`,
        });
  }
  return findings;
}

// ---------------------------------------------------------------------------- module space

/** x86-64 MODULES_END (arch/x86/include/asm/pgtable_64_types.h). */
export const MODULES_END = 0xffffffffff000000n;
/** MODULES_VADDR with a 1 GiB (KASLR) and a 512 MiB kernel image area. */
export const MODULES_VADDR_1G = 0xffffffffc0000000n;
export const MODULES_VADDR_512M = 0xffffffffa0000000n;

/** Module space from the modules already known (see the file comment). */
export function moduleSpace(knownBases: readonly bigint[]): { start: bigint; end: bigint } {
  const low = knownBases.some((b) => b >= MODULES_VADDR_512M && b < MODULES_VADDR_1G);
  return { start: low ? MODULES_VADDR_512M : MODULES_VADDR_1G, end: MODULES_END };
}

/** Printable, NUL-terminated module name bytes (MODULE_NAME_LEN array) → the name, else null. */
export function moduleNameOf(bytes: Uint8Array): string | null {
  const nul = bytes.indexOf(0);
  if (nul <= 0) return null;
  for (let i = 0; i < nul; i++) if (bytes[i] < 0x21 || bytes[i] > 0x7e) return null;
  return Buffer.from(bytes.subarray(0, nul)).toString('latin1');
}

/** LIST_POISON1/2 with x86-64's CONFIG_ILLEGAL_POINTER_VALUE (0xdead000000000000). */
const POISON = new Set([0xdead000000000100n, 0xdead000000000122n]);

/**
 * Search bytes read at `va` for 8-byte words holding their own address minus `selfOff` (a struct
 * whose field at selfOff points at the struct): returns the struct addresses.
 */
export function findSelfPointers(bytes: Uint8Array, va: bigint, selfOff: number): bigint[] {
  const out: bigint[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const a0 = BigInt.asUintN(64, va - BigInt(selfOff));
  const hi0 = Number(a0 >> 32n);
  const lo0 = Number(a0 & 0xffffffffn);
  const lead = Number((8n - (va & 7n)) & 7n); // first 8-byte aligned word
  for (let i = lead; i + 8 <= bytes.length; i += 8) {
    const lo = lo0 + i;
    const wantLo = lo >= 0x100000000 ? lo - 0x100000000 : lo;
    if (dv.getUint32(i, true) !== wantLo) continue;
    const wantHi = lo >= 0x100000000 ? (hi0 + 1) >>> 0 : hi0;
    if (dv.getUint32(i + 4, true) !== wantHi) continue;
    out.push(BigInt.asUintN(64, a0 + BigInt(i)));
  }
  return out;
}

// ---------------------------------------------------------------------------- reading

interface ReadResult {
  sightings: ModuleSighting[];
  warnings: string[];
  partial: boolean;
  counts: { list: number; kset: number; builtin: number; scanned_bytes: number; scan_hits: number };
}

/** lsmod's module layout (moduleRow decodes it) plus `mkobj.mod`. */
function layoutOf(k: KernelObjects): Layout {
  return k.layout('module', [...moduleLayout(k).declared.map((f) => f.name), 'mkobj.mod']);
}

const STATES: Record<string, string> = {
  MODULE_STATE_LIVE: 'Live',
  MODULE_STATE_COMING: 'Loading',
  MODULE_STATE_GOING: 'Unloading',
  MODULE_STATE_UNFORMED: 'Unformed',
};

/** A struct module found by the scan, validated (see the file comment); a reason string when not. */
function validate(
  k: KernelObjects,
  v: StructView,
  space: { start: bigint; end: bigint },
): { name: string; state: string } | string {
  const name = moduleNameOf(v.bytes('name'));
  if (name === null) return 'name not printable/NUL-terminated';
  const state = STATES[v.enumName('state')];
  if (!state) return `state ${v.num('state')} is not a module_state`;
  if (v.ptr('mkobj.mod') !== v.va) return 'mkobj.mod does not point back';
  let regions: { base: bigint; size: number }[];
  try {
    regions = moduleRow(k, v).regions;
  } catch (e) {
    return `memory layout unreadable: ${(e as Error).message}`;
  }
  if (regions.length === 0) return 'no memory regions';
  for (const r of regions)
    if (r.base < space.start || r.base >= space.end || r.size > 1 << 30)
      return `region ${vaHex(r.base)}+${r.size} outside module space`;
  if (!regions.some((r) => v.va >= r.base && v.va < r.base + BigInt(r.size)))
    return 'the object is in none of its own memory regions';
  const listOff = BigInt(v.layout.offsetOf('list'));
  for (const p of [v.struct('list').ptr('next'), v.struct('list').ptr('prev')])
    if (p !== v.va + listOff && !POISON.has(p) && p < 0xffff800000000000n)
      return `list link ${vaHex(p)} is not a kernel pointer`;
  return { name, state };
}

/** How a module's list links look (for the evidence). */
async function linksOf(k: KernelObjects, v: StructView): Promise<string> {
  const self = v.addressOf('list');
  const next = v.struct('list').ptr('next');
  const prev = v.struct('list').ptr('prev');
  if (next === self && prev === self) return 'self (list_del_init)';
  if (POISON.has(next) || POISON.has(prev)) return 'poison (list_del)';
  try {
    const [nextPrev] = await k.readPointers(next + 8n, 1);
    const [prevNext] = await k.readPointers(prev, 1);
    return nextPrev === self && prevNext === self ? 'linked' : 'dangling (its neighbours do not point back)';
  } catch {
    return 'dangling (unreadable neighbours)';
  }
}

async function readViews(k: KernelObjects, signal?: AbortSignal, maxScan = 512 << 20): Promise<ReadResult> {
  const warnings: string[] = [];
  let partial = false;
  const M = layoutOf(k);
  const by = new Map<bigint, { views: Set<ModuleView>; v?: StructView }>();
  const see = (va: bigint, view: ModuleView, v?: StructView) => {
    let s = by.get(va);
    if (!s) by.set(va, (s = { views: new Set() }));
    s.views.add(view);
    if (v) s.v ??= v;
  };
  // (a)
  // (lists caught mid-update on a live target read whole a moment later: settled(), processes.ts)
  const list = await settled(async () => {
    const x = await k.collectList(k.symbol('modules'), M, 'list', { name: 'modules', max: 65536, signal });
    return { ...x, partial: x.error !== undefined };
  });
  for (const v of list.items) see(v.va, 'list', v);
  if (list.error) {
    warnings.push(`modules list cut short: ${list.error.message}`);
    partial = true;
  }
  // (b)
  let kset = 0;
  let builtin = 0;
  const mkobjOff = BigInt(k.btf.fieldOffset('module', 'mkobj'));
  try {
    const ksetVa = await k.readPointer(k.symbol('module_kset'));
    const MK = k.layout('module_kobject', ['kobj.entry', 'mod']);
    const r = await settled(async () => {
      const x = await k.collectList(ksetVa + BigInt(k.btf.fieldOffset('kset', 'list')), MK, 'kobj.entry', {
        name: 'module_kset->list',
        max: 65536,
        signal,
      });
      return { ...x, partial: x.error !== undefined };
    });
    for (const mk of r.items) {
      if (mk.isNull('mod')) {
        builtin++;
        continue;
      }
      const mod = mk.ptr('mod');
      if (mod + mkobjOff !== mk.va) {
        warnings.push(
          `module_kobject ${vaHex(mk.va)} in module_kset names struct module ${vaHex(mod)}, whose mkobj is elsewhere: not counted`,
        );
        partial = true;
        continue;
      }
      kset++;
      see(mod, 'kset');
    }
    if (r.error) {
      warnings.push(`module_kset list cut short: ${r.error.message}`);
      partial = true;
    }
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`module_kset not read: ${e.message}`);
    partial = true;
  }
  // (c)
  const known = [...by.values()].flatMap((s) => (s.v ? moduleRow(k, s.v).regions.map((r) => r.base) : []));
  const space = moduleSpace(known);
  const selfOff = k.btf.fieldOffset('module', 'mkobj.mod');
  let scanned = 0;
  const hits: bigint[] = [];
  try {
    const ranges: { va: bigint; size: number }[] = [];
    for await (const r of k.paging.mappings({ start: space.start, end: space.end })) {
      if (!r.rw || r.user) continue;
      const s = r.va < space.start ? space.start : r.va;
      const e = r.va + BigInt(r.size) > space.end ? space.end : r.va + BigInt(r.size);
      if (e > s) ranges.push({ va: s, size: Number(e - s) });
    }
    const CHUNK = 1 << 20;
    let ops: { va: bigint; buf: Uint8Array }[] = [];
    let opBytes = 0;
    const flush = async () => {
      if (ops.length === 0) return;
      const failed = new Map((await k.paging.readVirtualBatch(ops)).map((f) => [f.index, f.error]));
      ops.forEach((op, i) => {
        const err = failed.get(i);
        if (err) {
          warnings.push(`module space ${vaHex(op.va)}+${op.buf.length} did not read: ${err.message}`);
          partial = true;
          return;
        }
        hits.push(...findSelfPointers(op.buf, op.va, selfOff));
      });
      ops = [];
      opBytes = 0;
    };
    outer: for (const r of ranges) {
      for (let off = 0; off < r.size; off += CHUNK) {
        signal?.throwIfAborted();
        const len = Math.min(CHUNK, r.size - off);
        if (scanned + len > maxScan) {
          warnings.push(`module space scan stopped after ${maxScan} bytes of writable pages (limit)`);
          partial = true;
          break outer;
        }
        ops.push({ va: r.va + BigInt(off), buf: new Uint8Array(len) });
        opBytes += len;
        scanned += len;
        if (opBytes >= 16 << 20) await flush();
      }
    }
    await flush();
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`module space not scanned: ${e.message}`);
    partial = true;
  }
  const cand = [...new Set(hits)];
  const views = await k.readStructs(cand, M);
  views.forEach((v, i) => {
    if (v instanceof PmiError) return; // a hit at the end of a mapping: not a struct module
    const ok = validate(k, v, space);
    if (typeof ok === 'string') {
      if (by.has(cand[i]))
        warnings.push(`struct module ${vaHex(cand[i])} (a known module) failed the scan's validation: ${ok}`);
      return;
    }
    see(cand[i], 'scan', v);
  });
  // known modules the list did not give: read them (kset only)
  const missing = [...by.entries()].filter(([, s]) => !s.v).map(([va]) => va);
  if (missing.length > 0) {
    const rs = await k.readStructs(missing, M);
    rs.forEach((v, i) => {
      if (v instanceof PmiError) {
        warnings.push(`struct module ${vaHex(missing[i])} named by module_kset does not read: ${v.message}`);
        partial = true;
        by.delete(missing[i]);
      } else by.get(missing[i])!.v = v;
    });
  }
  const sightings: ModuleSighting[] = [];
  for (const [va, s] of by) {
    const v = s.v!;
    const views = (['list', 'kset', 'scan'] as const).filter((x) => s.views.has(x));
    const name = moduleNameOf(v.bytes('name')) ?? `?${vaHex(va)}`;
    const sighting: ModuleSighting = { module: vaHex(va), name, state: STATES[v.enumName('state')] ?? '?', views };
    if (!s.views.has('list')) sighting.links = await linksOf(k, v);
    sightings.push(sighting);
  }
  return {
    sightings,
    warnings,
    partial,
    counts: { list: list.items.length, kset, builtin, scanned_bytes: scanned, scan_hits: cand.length },
  };
}

function isModulesState(x: unknown): x is ModulesState {
  return typeof x === 'object' && x !== null && Array.isArray((x as ModulesState).modules);
}

async function run(ctx: CheckContext, baseline: unknown): Promise<CheckOutcome> {
  const t0 = performance.now();
  const first = await readViews(ctx.k, ctx.signal);
  const warnings = [...first.warnings];
  let partial = first.partial;
  let second: ModuleSighting[] | undefined;
  if (first.sightings.some((s) => !s.views.includes('list'))) {
    const r = await readViews(ctx.k, ctx.signal);
    for (const w of r.warnings) if (!warnings.includes(w)) warnings.push(w);
    partial ||= r.partial;
    second = r.sightings;
  }
  const findings = judgeModules(first.sightings, second ?? [], isModulesState(baseline) ? baseline : undefined);
  const state: ModulesState = {
    modules: first.sightings.map((s) => ({ name: s.name, module: s.module, views: s.views })),
  };
  return {
    check: HIDDEN_MODULES,
    findings,
    warnings,
    partial,
    ms: Math.round((performance.now() - t0) * 10) / 10,
    state,
  };
}

/** hidden_modules as a Check (see the file comment). */
export const hiddenModulesCheck: Check = {
  id: HIDDEN_MODULES,
  title: 'Hidden modules: the modules list vs sysfs (module_kset) and a scan of module space',
  light: false,
  run: (ctx, baseline) => run(ctx, baseline),
};
