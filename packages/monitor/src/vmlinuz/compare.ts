/**
 * `--vmlinuz`: compare the running kernel's text and read-only data with the on-disk bzImage after
 * relocation, and explain every differing byte by the kernel's own patch-site lists or flag it.
 *
 * 1. decompress the bzImage payload, parse the vmlinux ELF and its appended relocation table, and
 *    relocate it for the running kernel's slide exactly as the decompressor does;
 * 2. read `_stext.._etext` and `__start_rodata..__end_rodata` (minus `__start_ro_after_init..
 *    __end_ro_after_init`, written during boot) through the kernel's page tables;
 * 3. every differing byte must lie in a patch site whose memory bytes are one of the forms the kernel
 *    writes there (sites.ts lists the kinds, `judge` below the forms); what remains is flagged, one
 *    tampering finding per range, with the symbol and file bytes vs memory bytes.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { SymbolTable } from '@pmi/kernel';
import { vaHex, type Finding } from '../model.js';
import type { Check, CheckContext, CheckOutcome } from '../checks/types.js';
import { Vmlinux } from './vmlinux.js';
import type { Compression } from './bzimage.js';
import { collectSites, SITE_KINDS, type Site, type SiteKind, type TableInfo } from './sites.js';
import { decodeInsn, hexBytes, nopLen, padRun, readI32, readU32, type Insn } from './x86.js';

export const VMLINUZ_CHECK_ID = 'vmlinuz';

export interface VmlinuzOptions {
  /** An already loaded image (e.g. loadVmlinuz(path) once for many passes); relocated in place. */
  image?: Vmlinux;
  /** Also compare `[_text, _stext)` when it is not empty (default false: the brief's ranges). */
  includeHead?: boolean;
  /** Bytes of file and memory shown per flagged range in the evidence (default 16). */
  evidenceBytes?: number;
  /** Cap on findings (the rest are counted in stats; default 200). */
  maxFindings?: number;
}

export interface KindStats {
  /** Entries in the kernel's list (alternatives: entries; sites: groups of entries at one address). */
  entries: number;
  /** Sites inside the compared ranges. */
  sites: number;
  /** Sites whose memory bytes differ from the file. */
  changed: number;
  /** Changed sites whose bytes are an allowed form of this kind (or were explained by a site they contain). */
  explained: number;
  /** Changed sites with bytes left unexplained. */
  unexplained: number;
}

export interface FlaggedRange {
  region: 'text' | 'rodata';
  address: string;
  symbol: string;
  /** Offset from runtime _text (stable across boots). */
  offset: number;
  length: number;
  file: string;
  memory: string;
  /** Site kinds the range overlaps whose allowed forms the bytes did not match. */
  sites: SiteKind[];
  /** Other symbols at the same address as `symbol`'s (aliases such as `__do_sys_…`). */
  aliases?: string[];
}

export interface VmlinuzStats {
  path: string;
  release: string;
  bzimage: { protocol: string; compression: Compression; payloadBytes: number; vmlinuxBytes: number; version: string };
  relocations: { rel32: number; inv32: number; rel64: number };
  slide: string;
  ranges: { name: string; start: string; end: string; bytes: number }[];
  comparedBytes: number;
  diffBytes: number;
  diffRuns: number;
  tables: TableInfo[];
  kinds: Record<SiteKind, KindStats>;
  /** Memory bytes explained as bytes the decompressor leaves between segments (not a section). */
  gapBytes: number;
  /** mcount sites that call into ftrace (tracing on) rather than a NOP. */
  ftraceEnabledSites: number;
  /** Values read from kernel memory that sites were judged against (0 = that kind fell back to looser forms). */
  memoryValues: { staticCallKeys: number; pvOpsSlots: number; directCallSlots: number; runtimeConsts: number };
  flagged: { ranges: number; bytes: number; list: FlaggedRange[] };
  ms: {
    read: number;
    decompress: number;
    parse: number;
    relocate: number;
    memRead: number;
    compare: number;
    total: number;
  };
  memory: { rssMB: number; heapUsedMB: number; imageMB: number };
}

/** The outcome, its stats, and the loaded (relocated) image for reuse as `opts.image`. */
export type VmlinuzOutcome = CheckOutcome & { stats: VmlinuzStats; image?: Vmlinux };

/** Load (read + decompress + parse) a vmlinuz once; pass it as `opts.image` to compare many times. */
export async function loadVmlinuz(path: string): Promise<Vmlinux> {
  const t0 = performance.now();
  const file = await readFile(path);
  return Vmlinux.fromBzImage(file, performance.now() - t0);
}

const RETURN_THUNK = /return_thunk|^__x86_return_skl$|^srso_.*(return|untrain)|^retbleed_|^entry_untrain_ret$|^__ret$/;
const INDIRECT_THUNK = /^__x86_indirect_(call_|jump_|its_)?thunk_/;
const FTRACE_TARGET = /^(ftrace_caller|ftrace_regs_caller|ftrace_stub|ftrace_stub_graph|__fentry__|ftrace_.*)$/;

/** Native paravirt patches (arch/x86/kernel/paravirt_patch.c, 5.x–6.1), padded with NOPs by the kernel. */
const PV_NATIVE: readonly number[][] = [
  [0xfa], // cli
  [0xfb], // sti
  [0x57, 0x9d], // push %rdi; popf
  [0x9c, 0x58], // pushf; pop %rax
  [0x0f, 0x20, 0xd0], // mov %cr2,%rax
  [0x0f, 0x20, 0xd8], // mov %cr3,%rax
  [0x0f, 0x22, 0xdf], // mov %rdi,%cr3
  [0x0f, 0x09], // wbinvd
  [0x0f, 0x01, 0xf8, 0x48, 0x0f, 0x07], // swapgs; sysretq
  [0x0f, 0x01, 0xf8], // swapgs
  [0x48, 0x89, 0xf8], // mov %rdi,%rax
  [0xc6, 0x07, 0x00], // movb $0,(%rdi)
  [0x31, 0xc0], // xor %eax,%eax
];

const DEFAULT_EVIDENCE = 16;

export async function compareWithVmlinuz(
  ctx: CheckContext,
  vmlinuzPath: string,
  opts: VmlinuzOptions = {},
): Promise<VmlinuzOutcome> {
  const t0 = performance.now();
  const { d } = ctx;
  const sym = d.symbols;
  const warnings: string[] = [];
  const findings: Finding[] = [];
  let partial = false;

  let fileMs = 0;
  let image = opts.image;
  if (!image) {
    const s = await stat(vmlinuzPath);
    if (!s.isFile()) throw new Error(`${vmlinuzPath} is not a file`);
    image = await loadVmlinuz(vmlinuzPath);
    fileMs = performance.now() - t0;
  }
  const hdr = image.header;
  const textSym = sym.get('_text');
  if (!textSym) throw new Error('kallsyms has no _text');
  const text = textSym.address;
  const textSeg = image.segments.find((s) => (s.flags & 1) !== 0) ?? image.segments[0];
  const linkText = textSeg.vaddr;
  const slide = text - linkText;
  const relocT0 = image.timing?.relocateMs ?? 0;
  image.relocateTo(slide);
  const relocateMs = (image.timing?.relocateMs ?? 0) - relocT0;
  if (d.facts.kaslrSlide !== slide) {
    warnings.push(
      `discovery's KASLR slide 0x${d.facts.kaslrSlide.toString(16)} differs from _text − the image's link _text (0x${slide.toString(16)}); using the latter`,
    );
  }

  const pos = (name: string): number | undefined => {
    const a = sym.get(name)?.address;
    return a === undefined ? undefined : Number(a - text);
  };
  const need = (name: string): number => {
    const p = pos(name);
    if (p === undefined) throw new Error(`kallsyms has no ${name}`);
    return p;
  };

  // ---- compared ranges
  type Range = { name: 'text' | 'rodata'; start: number; end: number };
  const ranges: Range[] = [];
  const stext = need('_stext');
  ranges.push({ name: 'text', start: opts.includeHead ? 0 : stext, end: need('_etext') });
  const ro0 = need('__start_rodata');
  const ro1 = need('__end_rodata');
  const rai0 = pos('__start_ro_after_init');
  const rai1 = pos('__end_ro_after_init');
  if (rai0 !== undefined && rai1 !== undefined && rai0 < ro1 && rai1 > ro0) {
    if (rai0 > ro0) ranges.push({ name: 'rodata', start: ro0, end: rai0 });
    if (rai1 < ro1) ranges.push({ name: 'rodata', start: rai1, end: ro1 });
  } else ranges.push({ name: 'rodata', start: ro0, end: ro1 });
  const win0 = Math.min(...ranges.map((r) => r.start));
  const win1 = Math.max(...ranges.map((r) => r.end));
  const W = win1 - win0;

  // ---- the image is the kernel that runs? (linux_banner is in .rodata)
  const bannerPos = pos('linux_banner');
  if (bannerPos !== undefined) {
    const fileBanner = Buffer.from(image.read(linkText + BigInt(bannerPos), 128));
    const memBanner = Buffer.alloc(128);
    const fail = await d.paging.readVirtualBatch([{ va: text + BigInt(bannerPos), buf: memBanner }]);
    const cut = (b: Buffer) => b.toString('latin1', 0, b.indexOf(0) < 0 ? b.length : b.indexOf(0));
    if (fail.length === 0 && cut(fileBanner) !== cut(memBanner)) {
      const outcome = emptyOutcome(t0, vmlinuzPath, d.facts.release);
      outcome.partial = true;
      outcome.warnings.push(
        `${basename(vmlinuzPath)} is not the running kernel: its banner is "${cut(fileBanner).trim()}", memory's "${cut(memBanner).trim()}"`,
      );
      return outcome;
    }
  }

  // ---- file and memory bytes over the window
  const fileW = image.read(linkText + BigInt(win0), W);
  const memW = new Uint8Array(W);
  const cmp = new Uint8Array(W);
  const memT0 = performance.now();
  const CHUNK = 1 << 20;
  const ops: { va: bigint; buf: Uint8Array; at: number }[] = [];
  for (const r of ranges) {
    for (let p = r.start; p < r.end; p += CHUNK) {
      const n = Math.min(CHUNK, r.end - p);
      ops.push({ va: text + BigInt(p), buf: memW.subarray(p - win0, p - win0 + n), at: p - win0 });
    }
  }
  const failures = await d.paging.readVirtualBatch(ops);
  const failed = new Set(failures.map((f) => f.index));
  for (let k = 0; k < ops.length; k++) {
    if (failed.has(k)) continue;
    cmp.fill(1, ops[k].at, ops[k].at + ops[k].buf.length);
  }
  if (failures.length) {
    partial = true;
    // retry the failed chunks page by page so one hole does not hide a megabyte
    for (const f of failures) {
      const op = ops[f.index];
      const pages: { va: bigint; buf: Uint8Array; at: number }[] = [];
      for (let o = 0; o < op.buf.length; o += 4096) {
        pages.push({
          va: op.va + BigInt(o),
          buf: op.buf.subarray(o, Math.min(op.buf.length, o + 4096)),
          at: op.at + o,
        });
      }
      const pf = new Set((await d.paging.readVirtualBatch(pages)).map((x) => x.index));
      let bad = 0;
      for (let k = 0; k < pages.length; k++) {
        if (pf.has(k)) bad += pages[k].buf.length;
        else cmp.fill(1, pages[k].at, pages[k].at + pages[k].buf.length);
      }
      warnings.push(`${bad} bytes at ${vaHex(op.va)}… could not be read (${f.error.message})`);
    }
  }
  const memReadMs = performance.now() - memT0;

  // ---- diff
  const cmpT0 = performance.now();
  const { diff, diffBytes, diffRuns, comparedBytes } = diffMask(fileW, memW, cmp);
  const explained = new Uint8Array(W);

  // ---- sites
  const inWin = (p: number, len: number) => p >= win0 && p + len <= win1;
  const fileAt = (p: number, len: number): Uint8Array =>
    inWin(p, len) ? fileW.subarray(p - win0, p - win0 + len) : image.read(linkText + BigInt(p), len);
  const { sites, tables } = collectSites({ image, symbols: sym, text, linkText }, fileAt);
  const kinds = Object.fromEntries(
    SITE_KINDS.map((k) => [
      k,
      { entries: tables.find((t) => t.kind === k)?.entries ?? 0, sites: 0, changed: 0, explained: 0, unexplained: 0 },
    ]),
  ) as Record<SiteKind, KindStats>;

  const values = await readSiteValues(d.paging, sym, text, sites, fileAt);
  // runtime constants whose variable kallsyms lacks: one value at every site, a plausible one
  for (const s of sites) {
    if (s.kind !== 'runtime_const' || values.consts.has(s.constSym!) || !inWin(s.pos, s.len)) continue;
    const v = hexBytes(memW.subarray(s.pos - win0, s.pos - win0 + s.len), 8);
    const prev = values.unknownConsts.get(s.constSym!);
    const plausible = s.len === 8 ? v.endsWith('ff') : parseInt(v, 16) < 64;
    if (prev === undefined) values.unknownConsts.set(s.constSym!, plausible ? v : '!');
    else if (prev !== v) values.unknownConsts.set(s.constSym!, '!');
  }
  const unverified = [...values.unknownConsts].filter(([, v]) => v !== '!').map(([k]) => k);
  if (unverified.length)
    warnings.push(
      `runtime constants ${unverified.join(', ')}: not in kallsyms, judged by one value at all their sites`,
    );
  const inner = new Map<number, Site>();
  for (const s of sites) if (s.kind === 'return_sites' || s.kind === 'retpoline_sites') inner.set(s.pos, s);
  const judge = new Judge(
    sym,
    text,
    win0,
    fileW,
    memW,
    explained,
    diff,
    image,
    linkText,
    pos('_end') ?? win1,
    values,
    inner,
  );
  const byKind = new Map<SiteKind, Site[]>();
  for (const s of sites) {
    if (!inWin(s.pos, s.len) || s.len <= 0) continue;
    let inRange = false;
    for (const r of ranges) if (s.pos >= r.start && s.pos < r.end) inRange = true;
    if (!inRange) continue;
    kinds[s.kind].sites++;
    let l = byKind.get(s.kind);
    if (!l) byKind.set(s.kind, (l = []));
    l.push(s);
  }
  const changedSites: Site[] = [];
  const partly = new Uint8Array(W);
  const unexplainedSites = new Set<Site>();
  for (const kind of SITE_KINDS) {
    for (const s of byKind.get(kind) ?? []) {
      const a = s.pos - win0;
      let changed = false;
      for (let i = a; i < a + s.len; i++) if (diff[i]) changed = true;
      if (!changed) continue;
      changedSites.push(s);
      if (judge.ok(s)) for (let i = a; i < a + s.len; i++) explained[i] = diff[i];
      else {
        // not an allowed form as a whole: bytes that agree with the closest allowed form are not the
        // tampering (a 5-byte jmp over an endbr + NOP5 leaves the NOP5's tail, which the boot wrote)
        const form = judge.closest(s);
        if (form) for (let i = 0; i < s.len; i++) if (diff[a + i] && memW[a + i] === form[i]) partly[a + i] = 1;
      }
    }
  }
  for (const s of changedSites) {
    const a = s.pos - win0;
    let all = true;
    for (let i = a; i < a + s.len; i++) if (diff[i] && !explained[i]) all = false;
    if (!all) unexplainedSites.add(s);
  }
  for (let i = 0; i < W; i++) if (partly[i]) explained[i] = 1;
  for (const s of changedSites) {
    const k = kinds[s.kind];
    k.changed++;
    if (unexplainedSites.has(s)) k.unexplained++;
    else k.explained++;
  }

  // ---- what is left: flagged ranges (diff runs closer than 8 bytes are one range)
  const evidenceBytes = opts.evidenceBytes ?? DEFAULT_EVIDENCE;
  const flagged: FlaggedRange[] = [];
  let flaggedBytes = 0;
  const siteIndex = [...changedSites].sort((x, y) => x.pos - y.pos);
  for (let i = 0; i < W; i++) {
    if (!diff[i] || explained[i]) continue;
    let j = i + 1;
    let last = i;
    while (j < W && j - last < 8) {
      if (diff[j] && !explained[j]) last = j;
      j++;
    }
    const start = i + win0;
    const len = last + 1 - i;
    for (let k = i; k <= last; k++) if (diff[k] && !explained[k]) flaggedBytes++;
    const region = ranges.find((r) => start >= r.start && start < r.end)!.name;
    const va = text + BigInt(start);
    const overl = new Set<SiteKind>();
    let lo = 0;
    let hi = siteIndex.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (siteIndex[mid].pos < start - 256) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < siteIndex.length && siteIndex[k].pos < start + len; k++) {
      const s = siteIndex[k];
      if (s.pos + s.len > start) overl.add(s.kind);
    }
    flagged.push({
      region,
      address: vaHex(va),
      symbol: sym.symbolize(va),
      offset: start,
      length: len,
      file: hexBytes(fileW.subarray(i, i + len), evidenceBytes),
      memory: hexBytes(memW.subarray(i, i + len), evidenceBytes),
      sites: [...overl],
    });
    i = last;
  }
  nameFlagged(sym, text, flagged);
  const maxFindings = opts.maxFindings ?? 200;
  for (const f of flagged.slice(0, maxFindings)) {
    const where = f.sites.length
      ? `overlapping a ${f.sites.join('/')} site whose bytes are in no form the kernel writes there`
      : 'not a patch site';
    findings.push({
      check: VMLINUZ_CHECK_ID,
      kind: 'tampering',
      severity: f.region === 'text' ? 'critical' : 'high',
      address: f.address,
      symbol: f.symbol,
      evidence:
        `kernel ${f.region} differs from ${basename(vmlinuzPath)} (relocated) at ${f.symbol}` +
        (f.aliases?.length ? ` (= ${f.aliases.join(', ')})` : '') +
        `: ${f.length} byte(s), ${where}; file ${f.file} → memory ${f.memory}`,
      key: `${VMLINUZ_CHECK_ID}:${f.region}+0x${f.offset.toString(16)}`,
      old: f.file,
      new: f.memory,
    });
  }
  if (flagged.length > maxFindings)
    warnings.push(`${flagged.length - maxFindings} more flagged ranges not listed as findings (see stats)`);
  const compareMs = performance.now() - cmpT0;

  const mu = process.memoryUsage();
  const stats: VmlinuzStats = {
    path: vmlinuzPath,
    release: d.facts.release,
    bzimage: {
      protocol: hdr ? `${hdr.protocol >> 8}.${(hdr.protocol & 0xff).toString().padStart(2, '0')}` : '-',
      compression: hdr?.compression ?? 'none',
      payloadBytes: hdr?.payloadLength ?? 0,
      vmlinuxBytes: image.data.length,
      version: hdr?.version ?? '',
    },
    relocations: {
      rel32: image.relocs.rel32.length,
      inv32: image.relocs.inv32.length,
      rel64: image.relocs.rel64.length,
    },
    slide: '0x' + slide.toString(16),
    ranges: ranges.map((r) => ({
      name: r.name,
      start: vaHex(text + BigInt(r.start)),
      end: vaHex(text + BigInt(r.end)),
      bytes: r.end - r.start,
    })),
    comparedBytes,
    diffBytes,
    diffRuns,
    tables,
    kinds,
    gapBytes: judge.gapBytes(ranges),
    ftraceEnabledSites: judge.ftraceEnabled,
    memoryValues: {
      staticCallKeys: values.keys.size,
      pvOpsSlots: values.pvOps.size,
      directCallSlots: values.slots.size,
      runtimeConsts: values.consts.size,
    },
    flagged: { ranges: flagged.length, bytes: flaggedBytes, list: flagged },
    ms: {
      read: fileMs ? (image.timing?.readMs ?? 0) : 0,
      decompress: fileMs ? (image.timing?.decompressMs ?? 0) : 0,
      parse: fileMs ? (image.timing?.parseMs ?? 0) : 0,
      relocate: relocateMs,
      memRead: memReadMs,
      compare: compareMs,
      total: performance.now() - t0,
    },
    memory: { rssMB: mu.rss / 2 ** 20, heapUsedMB: mu.heapUsed / 2 ** 20, imageMB: image.data.length / 2 ** 20 },
  };
  for (const k of SITE_KINDS) {
    if (kinds[k].unexplained) warnings.push(`${kinds[k].unexplained} ${k} site(s) changed in a form not recognised`);
  }
  return {
    check: VMLINUZ_CHECK_ID,
    findings,
    warnings,
    partial,
    ms: stats.ms.total,
    state: { vmlinuz: basename(vmlinuzPath), flagged: flagged.length, diffBytes },
    stats,
    image,
  };
}

/**
 * Where several symbols share the flagged address (`__do_sys_getppid`, `__x64_sys_getppid`,
 * `__ia32_sys_getppid`), kallsyms order picks one; name the range by a global one (T) when there is,
 * and list the others as aliases. One pass over the table for all flagged ranges.
 */
function nameFlagged(sym: SymbolTable, text: bigint, flagged: FlaggedRange[]): void {
  if (flagged.length === 0) return;
  const at = new Map<bigint, { name: string; type: string }[]>();
  const hits = flagged.map((f) => sym.byAddress(text + BigInt(f.offset)));
  for (const h of hits) if (h) at.set(h.address, []);
  sym.forEachRaw((i) => {
    const names = at.get(sym.address(i));
    if (names) names.push({ name: sym.name(i), type: sym.type(i) });
  });
  flagged.forEach((f, k) => {
    const h = hits[k];
    const names = h ? (at.get(h.address) ?? []) : [];
    const best = names.find((n) => n.type === 'T') ?? names[0];
    if (!h || !best) return;
    f.symbol = h.offset === 0n ? best.name : `${best.name}+0x${h.offset.toString(16)}`;
    f.aliases = names.filter((n) => n !== best).map((n) => n.name);
  });
}

/** Bytes that differ where both sides were read (8 bytes at a time where the words are equal). */
function diffMask(fileW: Uint8Array, memW: Uint8Array, cmp: Uint8Array) {
  const W = fileW.length;
  const diff = new Uint8Array(W);
  let diffBytes = 0;
  let diffRuns = 0;
  let comparedBytes = 0;
  const aligned = fileW.byteOffset % 4 === 0 && memW.byteOffset % 4 === 0 && cmp.byteOffset % 4 === 0;
  const f32 = aligned ? new Uint32Array(fileW.buffer, fileW.byteOffset, W >>> 2) : undefined;
  const m32 = aligned ? new Uint32Array(memW.buffer, memW.byteOffset, W >>> 2) : undefined;
  const c32 = aligned ? new Uint32Array(cmp.buffer, cmp.byteOffset, W >>> 2) : undefined;
  let i = 0;
  while (i < W) {
    if (f32 && (i & 3) === 0 && i + 4 <= W) {
      const w = i >>> 2;
      if (c32![w] === 0x01010101 && f32[w] === m32![w]) {
        comparedBytes += 4;
        i += 4;
        continue;
      }
      if (c32![w] === 0) {
        i += 4;
        continue;
      }
    }
    if (cmp[i]) {
      comparedBytes++;
      if (fileW[i] !== memW[i]) {
        diff[i] = 1;
        diffBytes++;
        if (i === 0 || !diff[i - 1]) diffRuns++;
      }
    }
    i++;
  }
  return { diff, diffBytes, diffRuns, comparedBytes };
}

function emptyOutcome(t0: number, path: string, release: string): VmlinuzOutcome {
  const kinds = Object.fromEntries(
    SITE_KINDS.map((k) => [k, { entries: 0, sites: 0, changed: 0, explained: 0, unexplained: 0 }]),
  ) as Record<SiteKind, KindStats>;
  const ms = performance.now() - t0;
  return {
    check: VMLINUZ_CHECK_ID,
    findings: [],
    warnings: [],
    partial: false,
    ms,
    stats: {
      path,
      release,
      bzimage: { protocol: '-', compression: 'none', payloadBytes: 0, vmlinuxBytes: 0, version: '' },
      relocations: { rel32: 0, inv32: 0, rel64: 0 },
      slide: '0x0',
      ranges: [],
      comparedBytes: 0,
      diffBytes: 0,
      diffRuns: 0,
      tables: [],
      kinds,
      gapBytes: 0,
      ftraceEnabledSites: 0,
      memoryValues: { staticCallKeys: 0, pvOpsSlots: 0, directCallSlots: 0, runtimeConsts: 0 },
      flagged: { ranges: 0, bytes: 0, list: [] },
      ms: { read: 0, decompress: 0, parse: 0, relocate: 0, memRead: 0, compare: 0, total: ms },
      memory: {
        rssMB: process.memoryUsage().rss / 2 ** 20,
        heapUsedMB: process.memoryUsage().heapUsed / 2 ** 20,
        imageMB: 0,
      },
    },
  };
}

const WARN_INSN = [0x67, 0x48, 0x0f, 0xb9, 0x3a];
const UNLOCK_INSN = [0x3e, 0x3e, 0xc6, 0x07, 0x00];

function same(m: Uint8Array, want: readonly number[]): boolean {
  return m.length === want.length && want.every((b, k) => m[k] === b);
}

/** Values in kernel memory some sites are judged against. */
interface SiteValues {
  /** runtime_const: little-endian bytes of the variable (8 for ptr, the low byte for shift). */
  consts: Map<string, Uint8Array>;
  /** runtime_const whose variable kallsyms lacks: the one value (hex) all its sites agree on. */
  unknownConsts: Map<string, string>;
  /** ALT_FLAG_DIRECT_CALL: pointer slot position (from _text) → its value in memory. */
  slots: Map<number, bigint>;
  /** static_call_key position → its `func` in memory. */
  keys: Map<number, bigint>;
  /** paravirt patch type → the pv_ops slot's value in memory (≤ 6.1: type = slot index). */
  pvOps: Map<number, bigint>;
}

async function readSiteValues(
  paging: CheckContext['d']['paging'],
  sym: SymbolTable,
  text: bigint,
  sites: readonly Site[],
  fileAt: (pos: number, len: number) => Uint8Array,
): Promise<SiteValues> {
  const consts = new Map<string, Uint8Array>();
  const slots = new Map<number, bigint>();
  const ops: { va: bigint; buf: Uint8Array; done: () => void }[] = [];
  const constNames = new Set(sites.filter((s) => s.kind === 'runtime_const').map((s) => s.constSym!));
  for (const name of constNames) {
    const a = sym.get(name)?.address;
    if (a === undefined) continue;
    const buf = new Uint8Array(8);
    const bytes = sites.find((s) => s.constSym === name)!.len;
    ops.push({ va: a, buf, done: () => consts.set(name, bytes === 8 ? buf : buf.subarray(0, 1)) });
  }
  for (const s of sites) {
    if (s.kind !== 'altinstructions' || !(s.alts ?? []).some((e) => (e.flags & 2) !== 0)) continue;
    const f = fileAt(s.pos, 6);
    if (f[0] !== 0xff || f[1] !== 0x15) continue;
    const slot = s.pos + 6 + readI32(f, 2);
    if (slots.has(slot)) continue;
    const buf = new Uint8Array(8);
    slots.set(slot, 0n);
    ops.push({ va: text + BigInt(slot), buf, done: () => slots.set(slot, Buffer.from(buf).readBigUInt64LE(0)) });
  }
  const keys = new Map<number, bigint>();
  const pvOps = new Map<number, bigint>();
  const pvBase = sym.get('pv_ops')?.address;
  for (const s of sites) {
    if (s.key !== undefined && !keys.has(s.key)) {
      const key = s.key;
      const buf = new Uint8Array(8);
      keys.set(key, -1n);
      ops.push({ va: text + BigInt(key), buf, done: () => keys.set(key, Buffer.from(buf).readBigUInt64LE(0)) });
    }
    if (s.pvType !== undefined && pvBase !== undefined && !pvOps.has(s.pvType)) {
      const type = s.pvType;
      const buf = new Uint8Array(8);
      pvOps.set(type, -1n);
      ops.push({
        va: pvBase + BigInt(8 * type),
        buf,
        done: () => pvOps.set(type, Buffer.from(buf).readBigUInt64LE(0)),
      });
    }
  }
  const failed = new Set((await paging.readVirtualBatch(ops)).map((f) => f.index));
  ops.forEach((o, k) => {
    if (!failed.has(k)) o.done();
  });
  for (const [k, v] of slots) if (v === 0n) slots.delete(k);
  for (const m of [keys, pvOps]) for (const [k, v] of m) if (v === -1n) m.delete(k);
  return { consts, slots, keys, pvOps, unknownConsts: new Map() };
}

/** The forms the kernel writes at each kind of site (see docs/monitor-vmlinuz.md). */
class Judge {
  ftraceEnabled = 0;

  constructor(
    private readonly sym: SymbolTable,
    private readonly text: bigint,
    private readonly win0: number,
    private readonly fileW: Uint8Array,
    private readonly memW: Uint8Array,
    private readonly explained: Uint8Array,
    private readonly diff: Uint8Array,
    private readonly image: Vmlinux,
    private readonly linkText: bigint,
    /** Position of `_end`: targets past it are outside the core image (module area). */
    private readonly imageEnd: number,
    private readonly values: SiteValues,
    /** Return and retpoline sites by position: those inside .altinstr_replacement are patched there
     * (apply_retpolines/apply_returns run before apply_alternatives) before a replacement is copied. */
    private readonly inner: Map<number, Site>,
  ) {}

  private mem(s: Site): Uint8Array {
    const a = s.pos - this.win0;
    return this.memW.subarray(a, a + s.len);
  }

  private file(s: Site): Uint8Array {
    const a = s.pos - this.win0;
    return this.fileW.subarray(a, a + s.len);
  }

  /** Symbol at a position relative to _text (function entry when offset 0). */
  private symAt(p: number) {
    return this.sym.byAddress(this.text + BigInt(p));
  }

  private isFunction(p: number): boolean {
    const h = this.symAt(p);
    return !!h && h.offset === 0n && 'tTwW'.includes(h.type);
  }

  private named(p: number, re: RegExp): boolean {
    const h = this.symAt(p);
    return !!h && h.offset === 0n && re.test(h.name);
  }

  /** Outside the core kernel image (module area: ftrace trampolines, ITS thunks, module functions). */
  private outsideImage(p: number): boolean {
    return p < 0 || p >= this.imageEnd;
  }

  /** buf from p to the end is padding (NOPs / INT3s if allowed). */
  private padTo(buf: Uint8Array, p: number, int3 = true): boolean {
    return p === buf.length || padRun(buf, p, buf.length, int3) === buf.length - p;
  }

  ok(s: Site): boolean {
    const m = this.mem(s);
    switch (s.kind) {
      case 'smp_locks':
        return this.file(s)[0] === 0xf0 && (m[0] === 0xf0 || m[0] === 0x3e);
      case 'ibt_endbr_seal':
        return nopLen(m, 0, 4) === 4 || (m[0] === 0x0f && m[1] === 0xb9 && m[2] === 0x40 && m[3] === 0xd6);
      case 'retpoline_sites':
        return this.retpoline(s, m);
      case 'return_sites':
        return this.returnSite(s, m);
      case 'call_sites': {
        const i = decodeInsn(m, 0, m.length);
        return (
          !!i &&
          i.op === 'call' &&
          s.target !== undefined &&
          this.padTo(m, i.len) &&
          s.pos + i.target <= s.target &&
          s.pos + i.target >= s.target - 64
        );
      }
      case 'jump_table': {
        if (padRun(m, 0, m.length, false) === m.length) return true;
        const i = decodeInsn(m, 0, m.length);
        return !!i && i.op === 'jmp' && s.pos + i.target === s.target && this.padTo(m, i.len);
      }
      case 'mcount_loc': {
        if (padRun(m, 0, 5, false) === 5) return true;
        const i = decodeInsn(m, 0, 5);
        if (
          i?.op === 'call' &&
          i.len === 5 &&
          (this.named(s.pos + i.target, FTRACE_TARGET) || this.outsideImage(s.pos + i.target))
        ) {
          this.ftraceEnabled++;
          return true;
        }
        return false;
      }
      case 'static_call_sites':
      case 'static_call_tramp':
        return this.staticCall(s, m);
      case 'ftrace_call': {
        if (padRun(m, 0, 5, false) === 5) return true;
        const i = decodeInsn(m, 0, 5);
        return (
          !!i &&
          (i.op === 'call' || i.op === 'jmp') &&
          i.len === 5 &&
          (this.isFunction(s.pos + i.target) || this.outsideImage(s.pos + i.target))
        );
      }
      case 'runtime_const': {
        const v = this.values.consts.get(s.constSym ?? '');
        if (v) return m.every((b, k) => b === v[k]);
        // the variable is not in kallsyms (static, e.g. 7.x's __filp_cache): every site of the
        // constant must carry one value, a kernel pointer for `ptr` (judged across sites below)
        return this.values.unknownConsts.get(s.constSym ?? '') === hexBytes(m, 8);
      }
      case 'parainstructions':
        return this.paravirt(s, m);
      case 'altinstructions':
        return this.alternative(s, m);
    }
  }

  /** For a site whose bytes are no allowed form: the allowed form closest to them (fewest differing
   * bytes), when the kind has a few fixed forms; undefined otherwise. */
  closest(s: Site): Uint8Array | undefined {
    const m = this.mem(s);
    const f = this.file(s);
    const forms: Uint8Array[] = [f];
    const pad = (head: number[], fill: number) => {
      const b = new Uint8Array(s.len).fill(fill);
      b.set(head.slice(0, s.len));
      return b;
    };
    switch (s.kind) {
      case 'smp_locks':
        forms.push(Uint8Array.of(0x3e));
        break;
      case 'ibt_endbr_seal':
        forms.push(Uint8Array.of(0x66, 0x0f, 0x1f, 0x00), Uint8Array.of(0x0f, 0x1f, 0x40, 0xd6));
        break;
      case 'mcount_loc':
      case 'static_call_sites':
      case 'ftrace_call':
        forms.push(Uint8Array.of(0x0f, 0x1f, 0x44, 0x00, 0x00));
        break;
      case 'return_sites':
        forms.push(pad([0xc3], 0xcc));
        break;
      case 'jump_table':
        if (s.len === 2) forms.push(Uint8Array.of(0x66, 0x90));
        else forms.push(Uint8Array.of(0x0f, 0x1f, 0x44, 0x00, 0x00));
        if (s.target !== undefined) {
          const j = new Uint8Array(s.len);
          if (s.len === 2) j.set([0xeb, (s.target - (s.pos + 2)) & 0xff]);
          else {
            j[0] = 0xe9;
            new DataView(j.buffer).setInt32(1, s.target - (s.pos + 5), true);
          }
          forms.push(j);
        }
        break;
      default:
        return undefined;
    }
    let best: Uint8Array | undefined;
    let bestN = Infinity;
    for (const form of forms) {
      let n = 0;
      for (let i = 0; i < s.len; i++) if (form[i] !== m[i]) n++;
      if (n < bestN) {
        bestN = n;
        best = form;
      }
    }
    return best;
  }

  private retpoline(s: Site, m: Uint8Array): boolean {
    let p = 0;
    let branch = false;
    while (p < m.length) {
      const i = decodeInsn(m, p, m.length);
      if (!i) return false;
      if (branch) {
        if (i.op !== 'nop' && i.op !== 'int3') return false;
      } else if (i.op === 'jcc' && i.len === 2) {
        if (i.target !== m.length) return false; // Jncc.d8 over the indirect jump
      } else if (i.op === 'lfence') {
        /* RETPOLINE_LFENCE */
      } else if (i.op === 'callr' || i.op === 'jmpr') {
        if (s.reg !== undefined && i.reg !== s.reg) return false;
        branch = true;
      } else if (i.op === 'call' || i.op === 'jmp' || i.op === 'jcc') {
        const t = s.pos + i.target;
        if (!(this.named(t, INDIRECT_THUNK) || this.outsideImage(t))) return false;
        branch = true;
      } else return false;
      p += i.len;
    }
    return branch;
  }

  private returnSite(s: Site, m: Uint8Array): boolean {
    const i = decodeInsn(m, 0, m.length);
    if (!i) return false;
    if (i.op === 'ret') return this.padTo(m, 1);
    if ((i.op === 'jmp' || i.op === 'jcc') && i.len >= 5) {
      const t = s.pos + i.target;
      return (this.named(t, RETURN_THUNK) || this.outsideImage(t)) && this.padTo(m, i.len);
    }
    return false;
  }

  /**
   * A static call site or trampoline. With the key's current `func` read from memory: a call (a jmp for
   * tail calls and trampolines) to exactly that function; for NULL a NOP5 (call) or RET forms (tail,
   * trampoline); `__static_call_return0` may be inlined as a 5-byte `xor %eax,%eax`; on 6.19+ a call to
   * `__WARN_trap` as `ud1 (%edx),%rdi` and the native spin unlock as `ds ds movb $0,(%rdi)`. Without
   * the key (not in kallsyms), any function entry.
   */
  private staticCall(s: Site, m: Uint8Array): boolean {
    const func = s.key === undefined ? undefined : this.values.keys.get(s.key);
    const isCall = s.kind === 'static_call_sites' && !s.tail;
    const fname = func ? this.sym.byAddress(func, 0n)?.name : undefined;
    const nop5 = padRun(m, 0, 5, false) === 5;
    let q = 0;
    while (q < 3 && (m[q] === 0x2e || m[q] === 0x66 || m[q] === 0x3e)) q++;
    if (m[q] === 0x48) q++;
    const xor = m[q] === 0x31 && m[q + 1] === 0xc0 && (q + 2 === 5 || (m[q + 2] === 0xc3 && this.padTo(m, q + 3)));
    const i = decodeInsn(m, 0, 5);
    const retForm =
      !!i &&
      ((i.op === 'ret' && this.padTo(m, 1)) ||
        (i.op === 'jmp' && i.len === 5 && this.named(s.pos + i.target, RETURN_THUNK)));
    const branch = i && (i.op === 'call' || i.op === 'jmp') && i.len === 5 ? i : undefined;
    if (func === undefined) {
      if (nop5 || xor || retForm) return true;
      if (s.kind === 'static_call_sites' && (same(m, WARN_INSN) || same(m, UNLOCK_INSN))) return true;
      if (!branch) return false;
      const t = s.pos + branch.target;
      return this.isFunction(t) || this.outsideImage(t) || this.named(t, RETURN_THUNK);
    }
    if (func === 0n) return isCall ? nop5 : retForm;
    if (fname === '__static_call_return0' && xor) return true;
    if (isCall && fname === '__WARN_trap' && same(m, WARN_INSN)) return true;
    if (isCall && fname === '__raw_callee_save___native_queued_spin_unlock' && same(m, UNLOCK_INSN)) return true;
    if (!branch || branch.op !== (isCall ? 'call' : 'jmp')) return false;
    return this.text + BigInt(s.pos + branch.target) === func;
  }

  private paravirt(s: Site, m: Uint8Array): boolean {
    if (padRun(m, 0, m.length, false) === m.length) return true;
    const i = decodeInsn(m, 0, m.length);
    if ((i?.op === 'call' || i?.op === 'jmp') && i.len === 5) {
      const want = s.pvType === undefined ? undefined : this.values.pvOps.get(s.pvType);
      const t = s.pos + i.target;
      const ok = want !== undefined ? this.text + BigInt(t) === want : this.isFunction(t);
      return ok && this.padTo(m, 5, false);
    }
    for (const seq of PV_NATIVE) {
      if (seq.length <= m.length && seq.every((b, k) => m[k] === b) && this.padTo(m, seq.length, false)) return true;
    }
    return false;
  }

  private alternative(s: Site, m: Uint8Array): boolean {
    const a = s.pos - this.win0;
    const wild = (k: number) => this.explained[a + k] === 1 || !this.diff[a + k];
    this.sitePos = s.pos;
    // the original (feature absent: only its NOPs re-optimised)
    const direct = (s.alts ?? []).some((e) => (e.flags & 2) !== 0);
    if (this.matches(this.file(s), 0, m, wild, direct, s.pos)) return true;
    for (const e of s.alts ?? []) {
      const repl = this.image.read(this.linkText + BigInt(e.repl), e.replLen);
      if (this.matches(repl, e.repl - s.pos, m, wild, (e.flags & 2) !== 0, e.repl)) return true;
    }
    return false;
  }

  /**
   * Does `m` (the site's memory bytes) equal candidate `c` copied to the site — padded with NOPs to the
   * site's length — up to what apply_alternatives changes: rel32 fields re-targeted by `delta` (the
   * replacement's distance to the site), JMP.d32/Jcc.d32 shrunk to .d8 (+ INT3/NOP fill), NOP runs
   * re-encoded (optimize_nops), and `call *pv_ops[…](%rip)` turned into a direct call (6.8+)?
   */
  private matches(
    cand: Uint8Array,
    delta: number,
    m: Uint8Array,
    wild: (k: number) => boolean,
    direct: boolean,
    cbase: number,
  ): boolean {
    const n = m.length;
    const c = new Uint8Array(n).fill(0x90);
    c.set(cand.subarray(0, Math.min(n, cand.length)));
    let i = 0;
    next: while (i < n) {
      if (m[i] === c[i] || wild(i)) {
        i++;
        continue;
      }
      // rel32 re-targeted by delta
      for (let k = Math.max(0, i - 3); k <= i && k + 4 <= n; k++) {
        if (((readU32(m, k) - readU32(c, k)) | 0) === (delta | 0)) {
          i = k + 4;
          continue next;
        }
      }
      // a return/retpoline site inside the candidate, patched in place before the copy
      for (let k = Math.max(0, i - 5); k <= i; k++) {
        const inner = this.inner.get(cbase + k);
        if (!inner || k + inner.len > n) continue;
        const at: Site = { ...inner, pos: this.sitePos + k, target: undefined };
        const mm = m.subarray(k, k + inner.len);
        if (inner.kind === 'return_sites' ? this.returnSite(at, mm) : this.retpoline(at, mm)) {
          i = k + inner.len;
          continue next;
        }
      }
      // JMP.d32 → JMP.d8, Jcc.d32 → Jcc.d8
      for (let k = Math.max(0, i - 5); k <= i; k++) {
        if (c[k] === 0xe9 && m[k] === 0xeb && k + 5 <= n) {
          const tc = k + 5 + readI32(c, k + 1) + delta;
          const tm = k + 2 + ((m[k + 1] << 24) >> 24);
          if (tc === tm && this.fill(m, k + 2, k + 5)) {
            i = k + 5;
            continue next;
          }
        }
        if (c[k] === 0x0f && (c[k + 1] & 0xf0) === 0x80 && m[k] === (0x70 | (c[k + 1] & 0xf)) && k + 6 <= n) {
          const tc = k + 6 + readI32(c, k + 2) + delta;
          const tm = k + 2 + ((m[k + 1] << 24) >> 24);
          if (tc === tm && this.fill(m, k + 2, k + 6)) {
            i = k + 6;
            continue next;
          }
        }
        // ALT_FLAG_DIRECT_CALL to a no-op function (paravirt_nop / nop_func): the call becomes NOPs
        if (direct && c[k] === 0xff && c[k + 1] === 0x15 && k + 6 <= n && nopLen(m, k, n) > 0) {
          const slot = this.values.slots.get(this.posOf(k) + 6 + readI32(this.fileW, this.posOf(k) - this.win0 + 2));
          const fn = slot === undefined ? undefined : this.sym.byAddress(slot);
          const runM = padRun(m, k, n, false);
          const runC = padRun(c, k + 6, n, false);
          if (fn && fn.offset === 0n && /nop/.test(fn.name) && runM === 6 + runC) {
            i = k + runM;
            continue next;
          }
        }
        // ALT_FLAG_DIRECT_CALL: `call *slot(%rip)` → `call <*slot>` + NOP, slot read from memory
        if (direct && c[k] === 0xff && c[k + 1] === 0x15 && m[k] === 0xe8 && k + 6 <= n) {
          const t = this.posOf(k) + 5 + readI32(m, k + 1);
          const slot = this.values.slots.get(this.posOf(k) + 6 + readI32(this.fileW, this.posOf(k) - this.win0 + 2));
          if (slot !== undefined ? slot === this.text + BigInt(t) : this.isFunction(t)) {
            const runM = padRun(m, k + 5, n, false);
            const runC = padRun(c, k + 6, n, false);
            if (k + 5 + runM === k + 6 + runC && runM > 0) {
              i = k + 5 + runM;
              continue next;
            }
          }
        }
      }
      // NOP runs re-encoded
      for (let k = Math.max(0, i - 15); k <= i; k++) {
        const rc = padRun(c, k, n, false);
        if (rc === 0 || k + rc <= i) continue;
        const rm = padRun(m, k, n, false);
        if (rm === rc) {
          i = k + rc;
          continue next;
        }
      }
      return false;
    }
    return true;
  }

  /** Position (from _text) of byte k of the site being matched — set by alternative() callers. */
  private sitePos = 0;
  private posOf(k: number): number {
    return this.sitePos + k;
  }

  private fill(m: Uint8Array, a: number, b: number): boolean {
    for (let k = a; k < b;) {
      if (m[k] === 0xcc) {
        k++;
        continue;
      }
      const n = nopLen(m, k, b);
      if (n === 0) return false;
      k += n;
    }
    return true;
  }

  gapBytes(ranges: { start: number; end: number }[]): number {
    let n = 0;
    for (const r of ranges) {
      for (let p = r.start; p < r.end; p += 4096) {
        // cheap: count bytes no segment covers, page by page
        const len = Math.min(4096, r.end - p);
        if (
          !this.image.covered(this.linkText + BigInt(p)) ||
          !this.image.covered(this.linkText + BigInt(p + len - 1))
        ) {
          for (let k = 0; k < len; k++) if (!this.image.covered(this.linkText + BigInt(p + k))) n++;
        }
      }
    }
    return n;
  }
}

/** A `Check` running compareWithVmlinuz against one vmlinuz (check id `vmlinuz`; heavy). */
export function vmlinuzCheck(path: string, opts: VmlinuzOptions = {}): Check {
  let image: Vmlinux | undefined = opts.image;
  return {
    id: VMLINUZ_CHECK_ID,
    title: `kernel text and rodata equal ${basename(path)} after relocation, but for the kernel's own patch sites`,
    light: false,
    async run(ctx: CheckContext): Promise<CheckOutcome> {
      image ??= await loadVmlinuz(path);
      const { stats, image: _image, ...outcome } = await compareWithVmlinuz(ctx, path, { ...opts, image });
      return { ...outcome, state: { ...(outcome.state as object), stats: summary(stats) } };
    },
  };
}

/** The stats without the flagged list (small enough for a baseline). */
function summary(s: VmlinuzStats): unknown {
  return { compression: s.bzimage.compression, diffBytes: s.diffBytes, flagged: s.flagged.bytes, kinds: s.kinds };
}

export type { Insn };
