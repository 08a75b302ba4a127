import { hex, PmiError, type PhysicalMemory, type PhysRange } from '@pmi/core';
import { Btf } from './btf.js';
import { parseBtfHeader } from './parse.js';
import { BTF_HEADER_LEN, BtfKind } from './kinds.js';

export interface LocateBtfOptions {
  /**
   * Physical range to scan first, e.g. the kernel image found from the banner or
   * /proc/iomem's "Kernel code".."Kernel bss". The rest of memory is scanned after it unless `hintOnly`.
   */
  hint?: PhysRange;
  hintOnly?: boolean;
  /** Scan window in bytes (default 8 MiB; one reused buffer). */
  windowSize?: number;
  /** Keep scanning after the first accepted blob (to report every candidate). Default false. */
  all?: boolean;
  /** Largest blob considered (default 64 MiB). */
  maxSize?: number;
}

export interface BtfCandidate {
  /** Physical address of the header, "0x…". */
  addr: string;
  /** Blob size claimed by the header (0 when the header is not sane). */
  size: number;
  /** 'accepted' or why it was rejected. */
  verdict: string;
}

export interface LocatedBtf {
  btf: Btf;
  physAddress: number;
  size: number;
  candidates: BtfCandidate[];
  /** Bytes of physical memory searched. */
  scanned: number;
  ms: number;
}

/** `9F EB 01 00 18 00 00 00`: magic, version 1, flags 0, hdr_len 24. */
const PATTERN = Buffer.from([0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00]);
/** The kernel is loaded at or above LOAD_PHYSICAL_ADDR (16 MiB on x86-64 distro configs). */
const KERNEL_LOAD_MIN = 16 << 20;

/** Scan order: hint; then memory from 16 MiB up (where the kernel image lives); then below 16 MiB. */
function scanPlan(ranges: readonly PhysRange[], opts: LocateBtfOptions): PhysRange[] {
  const clip = (lo: number, hi: number): PhysRange[] =>
    ranges.map((r) => ({ start: Math.max(r.start, lo), end: Math.min(r.end, hi) })).filter((r) => r.end > r.start);
  const subtract = (rs: PhysRange[], cut: PhysRange | undefined): PhysRange[] => {
    if (!cut) return rs;
    const out: PhysRange[] = [];
    for (const r of rs) {
      if (cut.end <= r.start || cut.start >= r.end) out.push(r);
      else {
        if (r.start < cut.start) out.push({ start: r.start, end: cut.start });
        if (cut.end < r.end) out.push({ start: cut.end, end: r.end });
      }
    }
    return out;
  };
  const plan: PhysRange[] = [];
  const hint = opts.hint;
  if (hint) plan.push(...clip(hint.start, hint.end));
  if (hint && opts.hintOnly) return plan;
  plan.push(...subtract(clip(KERNEL_LOAD_MIN, Number.MAX_SAFE_INTEGER), hint));
  plan.push(...subtract(clip(0, KERNEL_LOAD_MIN), hint));
  return plan;
}

async function read(mem: PhysicalMemory, addr: number, buf: Uint8Array): Promise<string | undefined> {
  try {
    if (mem.readSync) {
      mem.readSync(addr, buf);
      return undefined;
    }
    const f = await mem.readBatch([{ addr, buf }]);
    return f.length ? f[0].error.message : undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function rangeEnd(ranges: readonly PhysRange[], addr: number): number {
  // Contiguous end of the memory holding addr (adjacent ranges merge).
  let end = -1;
  for (const r of ranges) {
    if (r.start <= addr && addr < r.end) end = r.end;
    else if (end >= 0 && r.start === end) end = r.end;
  }
  return end;
}

/**
 * Why a parsed, self-contained BTF blob is not the kernel's own (vmlinux) BTF, or undefined when it is.
 *
 * What holds on every kernel since 5.2 (CONFIG_DEBUG_INFO_BTF): vmlinux BTF is base BTF (its string
 * section starts with NUL; module BTF is split and fails to parse alone) describing the whole kernel,
 * so it has complete `struct task_struct` and `struct module` definitions. A BPF object's BTF can
 * carry `task_struct` too (CO-RE), but every BPF object has a `license` DATASEC and map-defining
 * ones a `.maps` DATASEC, which vmlinux never has. What does *not* hold: a `.data..percpu` DATASEC —
 * pahole emitted per-CPU VARs only from 1.18, and Debian bullseye's 5.10 BTF has no DATASEC at all.
 */
export function notVmlinuxBtf(btf: Btf): string | undefined {
  const missing = ['task_struct', 'module'].filter((n) => {
    const id = btf.findType(n, BtfKind.STRUCT);
    return id === undefined || btf.vlen(id) === 0;
  });
  if (missing.length) return `no complete struct ${missing.join(', struct ')}: module or BPF program BTF?`;
  const bpf = ['license', '.maps'].filter((n) => btf.findType(n, BtfKind.DATASEC) !== undefined);
  if (bpf.length) return `has DATASEC ${bpf.join(', ')}: a BPF object's BTF`;
  return undefined;
}

/**
 * Find the kernel's own (vmlinux) BTF in physical memory: scan for the BTF header, parse every
 * sane candidate, accept the first that `notVmlinuxBtf` accepts.
 * Throws E_NOT_FOUND listing every candidate and its verdict.
 */
export async function locateBtf(mem: PhysicalMemory, opts: LocateBtfOptions = {}): Promise<LocatedBtf> {
  const t0 = performance.now();
  const W = Math.max(1 << 16, opts.windowSize ?? 8 << 20);
  const maxSize = opts.maxSize ?? 64 << 20;
  const overlap = PATTERN.length + 16; // a header straddling two windows is seen by the first
  const buf = Buffer.alloc(W + overlap);
  const candidates: BtfCandidate[] = [];
  const seen = new Set<number>();
  let scanned = 0;
  let found: LocatedBtf | undefined;
  const unreadable: string[] = [];

  const consider = async (addr: number, head: Uint8Array): Promise<void> => {
    if (seen.has(addr)) return;
    seen.add(addr);
    const cand: BtfCandidate = { addr: hex(addr), size: 0, verdict: '' };
    candidates.push(cand);
    let size: number;
    try {
      // The header alone sizes the blob; bounds are checked against memory below.
      const h = parseBtfHeader(head, Number.MAX_SAFE_INTEGER);
      size = h.totalLen;
    } catch (e) {
      cand.verdict = `bad header: ${(e as Error).message}`;
      return;
    }
    cand.size = size;
    if (size > maxSize || size < BTF_HEADER_LEN + 12 + 1) {
      cand.verdict = `implausible size ${size}`;
      return;
    }
    const end = rangeEnd(mem.info.ranges, addr);
    if (end >= 0 && addr + size > end) {
      cand.verdict = `blob of ${size} bytes runs past the end of memory at ${hex(end)}`;
      return;
    }
    const blob = new Uint8Array(size);
    const err = await read(mem, addr, blob);
    if (err) {
      cand.verdict = `unreadable: ${err}`;
      return;
    }
    let btf: Btf;
    try {
      btf = new Btf(blob);
    } catch (e) {
      const msg = e instanceof PmiError ? e.message : String(e);
      // Split BTF (modules, BPF programs) has no leading NUL: its strings continue vmlinux's.
      const why = /must start with a NUL/.test(msg) ? ' (split/module BTF, or an overwritten copy)' : '';
      cand.verdict = `parse failed: ${msg}${why}`;
      return;
    }
    const why = notVmlinuxBtf(btf);
    if (why) {
      cand.verdict = `not vmlinux BTF (${btf.typeCount} types; ${why})`;
      return;
    }
    cand.verdict = `accepted (${btf.typeCount} types)`;
    if (!found) found = { btf, physAddress: addr, size, candidates, scanned: 0, ms: 0 };
  };

  outer: for (const r of scanPlan(mem.info.ranges, opts)) {
    for (let a = r.start; a < r.end; a += W) {
      const len = Math.min(W + overlap, r.end - a);
      // Read what exists past the window too, so headers straddling windows/ranges are whole.
      const win = buf.subarray(0, len);
      const err = await read(mem, a, win);
      if (err) {
        if (unreadable.length < 16) unreadable.push(`${hex(a)}+${hex(len)}: ${err}`);
        continue;
      }
      scanned += Math.min(W, r.end - a);
      const limit = Math.min(W, r.end - a);
      let i = win.indexOf(PATTERN, 0);
      while (i >= 0 && i < limit) {
        let head: Uint8Array;
        if (i + BTF_HEADER_LEN <= len) head = win.subarray(i, i + BTF_HEADER_LEN);
        else {
          head = new Uint8Array(BTF_HEADER_LEN);
          if (await read(mem, a + i, head)) head = win.subarray(i, len);
        }
        // copy: `win` is reused
        await consider(a + i, Uint8Array.from(head));
        if (found && !opts.all) break outer;
        i = win.indexOf(PATTERN, i + 1);
      }
    }
  }
  const ms = performance.now() - t0;
  if (found) return { ...found, candidates, scanned, ms };
  const list = candidates.length
    ? candidates.map((c) => `${c.addr}: ${c.verdict}`).join('; ')
    : 'no BTF header (9f eb 01 00 18 00 00 00) anywhere';
  throw new PmiError(
    'E_NOT_FOUND',
    'btf',
    `no vmlinux BTF in physical memory (scanned ${scanned} bytes in ${ms.toFixed(0)} ms): ${list}`,
    { candidates, scanned, ms: Math.round(ms), unreadable },
  );
}
