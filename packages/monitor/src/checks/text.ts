/**
 * Kernel text and read-only data: a SHA-256 per 4 KiB page of `_stext`…`_etext` and
 * `__start_rodata`…`__end_rodata` (which holds `__ro_after_init` data and the jump table), compared
 * with the baseline.
 *
 * The running kernel legitimately rewrites some text after boot. Those sites are found from the
 * kernel's own tables, their bytes are left out of the page hash (masked), and each site is checked
 * on its own against the states the kernel can put there:
 * - static keys (jump labels, `__start___jump_table`…`__stop___jump_table`, {s32 code, s32 target,
 *   long key} relative entries): a 2- or 5-byte NOP, or a jmp to the entry's target;
 * - ftrace call sites (`ftrace_pages_start` → `struct ftrace_page` → `struct dyn_ftrace` records):
 *   a 5-byte NOP, or a call (into core text: ftrace_caller/ftrace_regs_caller; elsewhere: a dynamic
 *   trampoline — reported as a warning, since the hooks check names the ftrace_ops behind it).
 * Alternatives, paravirt, retpoline/return-thunk and IBT sealing are applied once during boot, before
 * any baseline, so they need no mask here; the `--vmlinuz` comparison explains those against the
 * file. Kprobes (an int3 at a probed address) are not masked: a new kprobe shows as a changed page,
 * which the hooks check then names.
 */
import { createHash } from 'node:crypto';
import type { DiscoveredKernel, KernelObjects } from '@pmi/kernel';
import type { Finding } from '../model.js';
import { vaHex } from '../model.js';
import type { Check, CheckOutcome } from './types.js';
import { fromBase64, imageBounds, inCoreText, symbolOf, symbolSize, toBase64 } from './kernel-memory.js';

const PAGE = 4096;
const NOP5 = [
  [0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x66, 0x0f, 0x1f, 0x44, 0x00],
  [0x3e, 0x8d, 0x74, 0x26, 0x00], // ds lea 0(%esi),%esi (older x86 nop5)
];
const NOP2 = [
  [0x66, 0x90],
  [0x8b, 0xc0],
];

/** `covered`: bytes another check compares exactly (syscall tables, dispatchers): masked, not judged here. */
export type PatchSiteKind = 'static_key' | 'ftrace' | 'covered';

export interface PatchSite {
  va: bigint;
  len: number;
  kind: PatchSiteKind;
  /** static_key: the jump entry's target. */
  target?: bigint;
}

export interface TextLayout {
  /** Hashed spans: [start, end) kernel VAs, page aligned. */
  spans: { name: 'text' | 'rodata'; start: bigint; end: bigint }[];
  pages: number;
}

export function textLayout(d: DiscoveredKernel): TextLayout {
  const b = imageBounds(d);
  const down = (v: bigint) => v & ~0xfffn;
  const up = (v: bigint) => (v + 0xfffn) & ~0xfffn;
  const spans: TextLayout['spans'] = [{ name: 'text', start: down(b.textStart), end: up(b.textEnd) }];
  if (b.rodataStart !== undefined && b.rodataEnd !== undefined && b.rodataEnd > b.rodataStart)
    spans.push({ name: 'rodata', start: down(b.rodataStart), end: up(b.rodataEnd) });
  const pages = spans.reduce((n, s) => n + Number((s.end - s.start) / 4096n), 0);
  return { spans, pages };
}

function matchesAny(b: Uint8Array, off: number, pats: number[][]): number {
  for (const p of pats) {
    let ok = off + p.length <= b.length;
    for (let i = 0; ok && i < p.length; i++) ok = b[off + i] === p[i];
    if (ok) return p.length;
  }
  return 0;
}

const s32 = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);

/** The sites the running kernel may rewrite, from its jump table and ftrace records. */
export async function findPatchSites(d: DiscoveredKernel, k: KernelObjects, warnings: string[]): Promise<PatchSite[]> {
  const sites: PatchSite[] = [];
  const start = d.symbols.get('__start___jump_table')?.address;
  const stop = d.symbols.get('__stop___jump_table')?.address;
  if (start !== undefined && stop !== undefined && stop > start && stop - start < 1n << 24n) {
    const tab = await d.paging.readVirtual(start, Number(stop - start));
    for (let o = 0; o + 16 <= tab.length; o += 16) {
      const entryVa = start + BigInt(o);
      const code = entryVa + BigInt(s32(tab, o));
      const target = entryVa + 4n + BigInt(s32(tab, o + 4));
      sites.push({ va: code, len: 5, kind: 'static_key', target });
    }
  } else warnings.push('no __start___jump_table/__stop___jump_table: static-key sites are not masked');
  if (d.symbols.get('ftrace_pages_start') && k.hasType('ftrace_page') && k.hasType('dyn_ftrace')) {
    try {
      const P = k.layout('ftrace_page', ['next', 'records', 'index']);
      const recSize = k.layout('dyn_ftrace').size;
      let pg = await k.readPointer(d.symbols.addressOf('ftrace_pages_start'));
      for (let n = 0; pg !== 0n && n < 100_000; n++) {
        const v = await k.read(pg, P);
        const count = v.num('index');
        const recs = v.ptr('records');
        if (count > 0 && count < 1 << 20 && recs !== 0n) {
          const buf = await d.paging.readVirtual(recs, count * recSize);
          const dv = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
          for (let i = 0; i < count; i++) sites.push({ va: dv.readBigUInt64LE(i * recSize), len: 5, kind: 'ftrace' });
        }
        pg = v.ptr('next');
      }
    } catch (e) {
      warnings.push(`ftrace records unreadable (${(e as Error).message}): ftrace sites are not masked`);
    }
  }
  // the syscall tables and dispatchers are compared byte for byte by the syscalls check (which names
  // the entry); leave them out of the page hashes so one change raises one alert, not two
  for (const name of [
    'sys_call_table',
    'ia32_sys_call_table',
    'x32_sys_call_table',
    'x64_sys_call',
    'ia32_sys_call',
    'x32_sys_call',
  ]) {
    const r = symbolSize(d, name, 1 << 16);
    if (r) sites.push({ va: r.va, len: r.size, kind: 'covered' });
  }
  sites.sort((a, b) => (a.va < b.va ? -1 : a.va > b.va ? 1 : 0));
  return sites;
}

/** Check one site's current bytes against the states the kernel can put there. */
function siteProblem(d: DiscoveredKernel, site: PatchSite, b: Uint8Array, off: number): string | null {
  const textB = imageBounds(d);
  if (site.kind === 'static_key') {
    if (matchesAny(b, off, NOP5) || matchesAny(b, off, NOP2)) return null;
    if (b[off] === 0xe9) {
      const t = site.va + 5n + BigInt(s32(b, off + 1));
      return t === site.target ? null : `static-key jmp to ${symbolOf(d, t)}, entry says ${symbolOf(d, site.target!)}`;
    }
    if (b[off] === 0xeb) {
      const t = site.va + 2n + BigInt((b[off + 1] << 24) >> 24);
      return t === site.target ? null : `static-key jmp to ${symbolOf(d, t)}, entry says ${symbolOf(d, site.target!)}`;
    }
    return `static-key site holds ${Buffer.from(b.subarray(off, off + 5)).toString('hex')}: neither NOP nor jmp`;
  }
  if (matchesAny(b, off, NOP5)) return null;
  if (b[off] === 0xe8 || b[off] === 0xe9) {
    const t = site.va + 5n + BigInt(s32(b, off + 1));
    if (inCoreText(textB, t)) return null;
    return `ftrace site calls ${symbolOf(d, t)} outside core text (a dynamic ftrace trampoline, or a hook: see the hooks check)`;
  }
  return `ftrace site holds ${Buffer.from(b.subarray(off, off + 5)).toString('hex')}: neither NOP nor call`;
}

/**
 * Hash pages [first, first+count) of the layout with patch sites masked. `bytes` holds those pages'
 * contents. Returns 32-byte digests, concatenated, and problems found at sites.
 */
export function hashPages(
  d: DiscoveredKernel,
  layout: TextLayout,
  first: number,
  bytes: Uint8Array,
  sites: readonly PatchSite[],
  problems: { site: PatchSite; problem: string }[],
): Uint8Array {
  const count = bytes.length / PAGE;
  const out = new Uint8Array(count * 32);
  const scratch = new Uint8Array(PAGE);
  let siteIdx = 0;
  for (let i = 0; i < count; i++) {
    const va = pageVa(layout, first + i);
    const end = va + BigInt(PAGE);
    let page = bytes.subarray(i * PAGE, (i + 1) * PAGE);
    // first site that may touch this page (sites are sorted)
    let lo = siteIdx;
    while (lo < sites.length && sites[lo].va + BigInt(sites[lo].len) <= va) lo++;
    if (lo >= sites.length || sites[lo].va >= end) {
      // binary search when we skipped far (spans are not contiguous)
      let a = 0;
      let z = sites.length;
      while (a < z) {
        const m = (a + z) >>> 1;
        if (sites[m].va + BigInt(sites[m].len) <= va) a = m + 1;
        else z = m;
      }
      lo = a;
    }
    siteIdx = lo;
    const original = page;
    let copied = false;
    for (let s = lo; s < sites.length && sites[s].va < end; s++) {
      const site = sites[s];
      const off = Number(site.va - va);
      // judge every site on the page's real bytes, then mask it
      if (site.kind !== 'covered' && off >= 0 && off + site.len <= PAGE) {
        const p = siteProblem(d, site, original, off);
        if (p) problems.push({ site, problem: p });
      }
      if (!copied) {
        scratch.set(original);
        page = scratch;
        copied = true;
      }
      for (let j = Math.max(0, off); j < Math.min(PAGE, off + site.len); j++) page[j] = 0;
    }
    out.set(createHash('sha256').update(page).digest(), i * 32);
  }
  return out;
}

export function pageVa(layout: TextLayout, index: number): bigint {
  let i = index;
  for (const s of layout.spans) {
    const n = Number((s.end - s.start) / 4096n);
    if (i < n) return s.start + BigInt(i * PAGE);
    i -= n;
  }
  throw new RangeError(`page ${index} outside the text layout (${layout.pages} pages)`);
}

export interface TextBaseline {
  spans: { name: string; start: string; end: string }[];
  pages: number;
  /** base64 of the concatenated 32-byte SHA-256 digests (masked pages), in span order. */
  digests: string;
  sites: { covered: number; static_key: number; ftrace: number };
}

/** A problem at a patch site as a finding (a call outside core text is a warning: the hooks check names it). */
export function siteFinding(d: DiscoveredKernel, p: { site: PatchSite; problem: string }): Finding {
  const outside = p.problem.includes('outside core text');
  return {
    check: 'text',
    kind: outside ? 'warning' : 'tampering',
    severity: outside ? 'medium' : 'critical',
    address: vaHex(p.site.va),
    symbol: symbolOf(d, p.site.va),
    evidence: `${p.site.kind} site ${symbolOf(d, p.site.va)}: ${p.problem}`,
    key: `text:site:${vaHex(p.site.va)}`,
  };
}

/** Compare digests with a baseline's; one finding per changed page. */
export function compareDigests(
  d: DiscoveredKernel,
  layout: TextLayout,
  first: number,
  digests: Uint8Array,
  base: Uint8Array,
): Finding[] {
  const out: Finding[] = [];
  for (let i = 0; i < digests.length / 32; i++) {
    const g = first + i;
    let same = g * 32 + 32 <= base.length;
    for (let j = 0; same && j < 32; j++) same = digests[i * 32 + j] === base[g * 32 + j];
    if (same) continue;
    const va = pageVa(layout, g);
    const span = layout.spans.find((s) => va >= s.start && va < s.end)!;
    out.push({
      check: 'text',
      kind: 'tampering',
      severity: 'critical',
      address: vaHex(va),
      symbol: symbolOf(d, va),
      evidence: `kernel ${span.name} page ${vaHex(va)} (${symbolOf(d, va)}) differs from the baseline outside the static-key and ftrace sites`,
      key: `text:page:${vaHex(va)}`,
      old: Buffer.from(base.subarray(g * 32, g * 32 + 32)).toString('hex'),
      new: Buffer.from(digests.subarray(i * 32, i * 32 + 32)).toString('hex'),
      region: `text:${vaHex(va)}`,
    });
  }
  return out;
}

/** Read pages [first, first+count) of the layout (one batched read). */
export async function readPages(
  d: DiscoveredKernel,
  layout: TextLayout,
  first: number,
  count: number,
): Promise<Uint8Array> {
  const buf = new Uint8Array(count * PAGE);
  const ops: { va: bigint; buf: Uint8Array }[] = [];
  for (let i = 0; i < count; i++)
    ops.push({ va: pageVa(layout, first + i), buf: buf.subarray(i * PAGE, (i + 1) * PAGE) });
  const failures = await d.paging.readVirtualBatch(ops);
  if (failures.length > 0) throw failures[0].error;
  return buf;
}

export const textCheck: Check = {
  id: 'text',
  title:
    'kernel text and read-only data: SHA-256 per page against the baseline, static-key and ftrace sites masked and checked on their own',
  light: false,
  async run(ctx, baseline): Promise<CheckOutcome> {
    const t0 = performance.now();
    const { d, k } = ctx;
    const warnings: string[] = [];
    const layout = textLayout(d);
    const sites = await findPatchSites(d, k, warnings);
    const problems: { site: PatchSite; problem: string }[] = [];
    const digests = new Uint8Array(layout.pages * 32);
    // 1 MiB per batched read: bounded memory on a 64 MiB text+rodata
    const CHUNK = 256;
    let partial = false;
    for (let p = 0; p < layout.pages; p += CHUNK) {
      const n = Math.min(CHUNK, layout.pages - p);
      try {
        const bytes = await readPages(d, layout, p, n);
        digests.set(hashPages(d, layout, p, bytes, sites, problems), p * 32);
      } catch (e) {
        partial = true;
        warnings.push(`pages ${p}…${p + n - 1} unreadable: ${(e as Error).message}`);
      }
    }
    const findings = problems.map((p) => siteFinding(d, p));
    const base = baseline as TextBaseline | undefined;
    if (base) {
      const sameLayout =
        base.pages === layout.pages &&
        base.spans.every(
          (s, i) => s.start === vaHex(layout.spans[i]?.start ?? 0n) && s.end === vaHex(layout.spans[i].end),
        );
      if (!sameLayout)
        warnings.push('the baseline describes another kernel layout (reboot or another kernel): text not compared');
      else findings.push(...compareDigests(d, layout, 0, digests, fromBase64(base.digests)));
    }
    const state: TextBaseline = {
      spans: layout.spans.map((s) => ({ name: s.name, start: vaHex(s.start), end: vaHex(s.end) })),
      pages: layout.pages,
      digests: toBase64(digests),
      sites: {
        covered: sites.filter((s) => s.kind === 'covered').length,
        static_key: sites.filter((s) => s.kind === 'static_key').length,
        ftrace: sites.filter((s) => s.kind === 'ftrace').length,
      },
    };
    return { check: 'text', findings, warnings, partial, ms: performance.now() - t0, state };
  },
};
