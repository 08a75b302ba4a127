/**
 * Syscall dispatch: `sys_call_table` (and `ia32_sys_call_table` / `x32_sys_call_table` where they
 * exist) and the dispatchers `x64_sys_call` / `ia32_sys_call` / `x32_sys_call` (6.9+, 6.1.85+,
 * 6.6.26+ backports), which are what the CPU runs on those kernels.
 *
 * Where the number → function map comes from, and why it can be trusted:
 * - with a dispatcher: decoded from its machine code (dispatch-decode.ts). It is the code that really
 *   dispatches, it lives in read-only kernel text, its bytes are hashed into the baseline (and can
 *   be compared with the on-disk kernel, `--vmlinuz`), and every target must be the entry of a
 *   syscall function (`__x64_sys_*`, `__do_sys_*`, `sys_ni_syscall`) in core kernel text. The table
 *   must then agree with the decoded map entry for entry: a table that tools read but the CPU no
 *   longer uses is exactly what a rootkit (or a "hooking" tool) patches.
 * - without (5.10 and other pre-backport kernels): the table is the dispatcher; its first
 *   observation (or `pmi baseline`) is the map, each entry checked to be a syscall function's entry
 *   in core kernel text.
 */
import type { DiscoveredKernel } from '@pmi/kernel';
import type { Finding } from '../model.js';
import { vaHex } from '../model.js';
import type { Check, CheckContext, CheckOutcome, PolledRegion } from './types.js';
import { decodeDispatch } from './dispatch-decode.js';
import {
  diffRanges,
  fromBase64,
  hexBytes,
  imageBounds,
  inCoreText,
  namesAt,
  regionOf,
  sha256Hex,
  symbolOf,
  symbolSize,
  toBase64,
  u64At,
  type KernelImageBounds,
} from './kernel-memory.js';

/** Table ↔ dispatcher pairs (the dispatcher may exist without its table: 6.10+ dropped ia32's). */
const ABIS = [
  { abi: 'x64', table: 'sys_call_table', dispatcher: 'x64_sys_call' },
  { abi: 'ia32', table: 'ia32_sys_call_table', dispatcher: 'ia32_sys_call' },
  { abi: 'x32', table: 'x32_sys_call_table', dispatcher: 'x32_sys_call' },
] as const;

/** Most entries a syscall table can have (x86-64 has ~470; the bound keeps a bad size harmless). */
const MAX_SYSCALLS = 1024;

const SYSCALL_FN =
  /^(__x64_sys_|__ia32_sys_|__x32_compat_sys_|__ia32_compat_sys_|__do_sys_|__se_sys_|__x64_|__ia32_)|(^|_)sys_ni_syscall$|^sys_/;

function isSyscallFunction(names: readonly string[]): boolean {
  return names.some((n) => SYSCALL_FN.test(n));
}

export interface SyscallBaseline {
  abis: {
    abi: string;
    table?: { va: string; count: number; sha256: string; bytes: string };
    dispatcher?: { va: string; size: number; sha256: string; bytes: string; targets: number };
  }[];
}

interface Observed {
  abi: string;
  table?: { va: bigint; count: number; bytes: Uint8Array };
  dispatcher?: { va: bigint; size: number; bytes: Uint8Array; map: Map<number, bigint>; targets: bigint[] };
}

function describeTarget(d: DiscoveredKernel, b: KernelImageBounds, va: bigint): string {
  const names = namesAt(d, va);
  const where = inCoreText(b, va) ? 'core kernel text' : 'outside core kernel text';
  return `${names[0] ?? symbolOf(d, va)} (${vaHex(va)}, ${where})`;
}

const decodeMemo = new Map<string, ReturnType<typeof decodeDispatch>>();

async function observe(ctx: CheckContext, warnings: string[]): Promise<Observed[]> {
  const { d } = ctx;
  const out: Observed[] = [];
  for (const a of ABIS) {
    const o: Observed = { abi: a.abi };
    const disp = symbolSize(d, a.dispatcher, 1 << 16);
    if (disp) {
      try {
        const bytes = await d.paging.readVirtual(disp.va, disp.size);
        // decoding is the costly part of a pass (~50 ms): once per distinct body
        const memoKey = `${a.dispatcher}:${disp.va}:${sha256Hex(bytes)}`;
        let dec = decodeMemo.get(memoKey);
        if (!dec) {
          dec = decodeDispatch(bytes, disp.va, MAX_SYSCALLS);
          if (decodeMemo.size > 16) decodeMemo.clear();
          decodeMemo.set(memoKey, dec);
        }
        for (const u of dec.undecoded.slice(0, 3))
          warnings.push(`${a.dispatcher}+0x${u.at.toString(16)}: ${u.reason} (byte 0x${u.byte.toString(16)})`);
        if (dec.conflicts.length)
          warnings.push(`${a.dispatcher}: numbers reached by two targets: ${dec.conflicts.slice(0, 10).join(', ')}`);
        o.dispatcher = { va: disp.va, size: disp.size, bytes, map: dec.map, targets: dec.externalTargets };
      } catch (e) {
        warnings.push(`${a.dispatcher}: unreadable: ${(e as Error).message}`);
      }
    }
    const tab = symbolSize(d, a.table, MAX_SYSCALLS * 8);
    if (tab) {
      let count = Math.floor(tab.size / 8);
      try {
        // the symbol's extent includes alignment padding after the last entry: trailing zeros
        const all = await d.paging.readVirtual(tab.va, count * 8);
        while (count > 0 && u64At(all, (count - 1) * 8) === 0n) count--;
        o.table = { va: tab.va, count, bytes: all.subarray(0, count * 8) };
      } catch (e) {
        warnings.push(`${a.table}: unreadable: ${(e as Error).message}`);
      }
    }
    if (o.table || o.dispatcher) out.push(o);
  }
  return out;
}

export const syscallCheck: Check = {
  id: 'syscalls',
  title:
    'sys_call_table entries and the x64_sys_call/ia32_sys_call/x32_sys_call dispatchers: decoded targets, body hash, table = dispatcher',
  light: true,
  async run(ctx, baseline): Promise<CheckOutcome> {
    const t0 = performance.now();
    const { d } = ctx;
    const findings: Finding[] = [];
    const warnings: string[] = [];
    const base = baseline as SyscallBaseline | undefined;
    const b = imageBounds(d);
    const obs = await observe(ctx, warnings);
    if (!obs.some((o) => o.table)) warnings.push('no sys_call_table symbol: the syscall table cannot be checked');
    const regions: { region: PolledRegion; bytes: Uint8Array }[] = [];
    const state: SyscallBaseline = { abis: [] };

    for (const o of obs) {
      const bAbi = base?.abis.find((x) => x.abi === o.abi);
      const entry: SyscallBaseline['abis'][number] = { abi: o.abi };
      const dispName = ABIS.find((a) => a.abi === o.abi)!.dispatcher;
      const tableName = ABIS.find((a) => a.abi === o.abi)!.table;

      // --- the dispatcher: body against the baseline, targets against the syscall functions
      if (o.dispatcher) {
        const dsp = o.dispatcher;
        const sha = sha256Hex(dsp.bytes);
        entry.dispatcher = {
          va: vaHex(dsp.va),
          size: dsp.size,
          sha256: sha,
          bytes: toBase64(dsp.bytes),
          targets: dsp.targets.length,
        };
        regions.push({ region: await regionOf(d, dispName, dsp.va, dsp.size), bytes: dsp.bytes });
        if (bAbi?.dispatcher && bAbi.dispatcher.sha256 !== sha) {
          const old = fromBase64(bAbi.dispatcher.bytes);
          for (const [off, len] of diffRanges(old, dsp.bytes).slice(0, 16)) {
            const va = dsp.va + BigInt(off);
            findings.push({
              check: 'syscalls',
              kind: 'tampering',
              severity: 'critical',
              address: vaHex(va),
              symbol: `${dispName}+0x${off.toString(16)}`,
              evidence: `${dispName} body differs from the baseline at +0x${off.toString(16)} (${len} bytes): was ${hexBytes(old, off, len)}, now ${hexBytes(dsp.bytes, off, len)}`,
              key: `${dispName}:${off}`,
              old: hexBytes(old, off, len),
              new: hexBytes(dsp.bytes, off, len),
              region: dispName,
            });
          }
        }
        for (const t of dsp.targets) {
          const names = namesAt(d, t);
          if (inCoreText(b, t) && isSyscallFunction(names)) continue;
          findings.push({
            check: 'syscalls',
            kind: 'tampering',
            severity: 'critical',
            address: vaHex(t),
            symbol: names[0] ?? symbolOf(d, t),
            evidence: `${dispName} branches to ${describeTarget(d, b, t)}, which is not the entry of a syscall function in core kernel text`,
            key: `${dispName}:target:${vaHex(t)}`,
            new: vaHex(t),
            region: dispName,
          });
        }
      }

      // --- the table: each entry against the dispatcher's map, else the baseline, else the structure
      if (o.table) {
        const tb = o.table;
        entry.table = { va: vaHex(tb.va), count: tb.count, sha256: sha256Hex(tb.bytes), bytes: toBase64(tb.bytes) };
        regions.push({ region: await regionOf(d, tableName, tb.va, tb.count * 8), bytes: tb.bytes });
        const baseBytes = bAbi?.table ? fromBase64(bAbi.table.bytes) : undefined;
        for (let n = 0; n < tb.count; n++) {
          const cur = u64At(tb.bytes, n * 8);
          const fromDispatcher = o.dispatcher?.map.get(n);
          const fromBaseline = baseBytes && n * 8 + 8 <= baseBytes.length ? u64At(baseBytes, n * 8) : undefined;
          const expected = fromDispatcher ?? fromBaseline;
          const names = namesAt(d, cur);
          const structural = inCoreText(b, cur) && isSyscallFunction(names);
          if (expected !== undefined ? cur === expected : structural) continue;
          const source = fromDispatcher !== undefined ? `${dispName}'s decoded target` : 'the baseline';
          findings.push({
            check: 'syscalls',
            kind: 'tampering',
            severity: 'critical',
            address: vaHex(tb.va + BigInt(n * 8)),
            symbol: `${tableName}[${n}]`,
            evidence:
              expected !== undefined
                ? `${tableName}[${n}] = ${describeTarget(d, b, cur)}; ${source} is ${describeTarget(d, b, expected)}`
                : `${tableName}[${n}] = ${describeTarget(d, b, cur)}: not a syscall function's entry in core kernel text`,
            key: `${tableName}:${n}`,
            old: expected !== undefined ? vaHex(expected) : undefined,
            new: vaHex(cur),
            region: tableName,
          });
        }
      }
      state.abis.push(entry);
    }
    return {
      check: 'syscalls',
      findings,
      warnings,
      partial: warnings.some((w) => w.includes('unreadable') || w.includes('outside the dispatcher')),
      ms: performance.now() - t0,
      state,
      regions,
    };
  },
};
