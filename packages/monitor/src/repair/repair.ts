/**
 * `pmi repair ALERT_ID [--write]`: restore what an alert found changed, from the baseline, by DMA.
 *
 * Only three kinds of region are restored, because only for them the baseline holds the exact
 * bytes and one write puts the kernel back into a state it was in:
 * - a `sys_call_table` (or ia32/x32 table) entry: 8 bytes, one aligned write;
 * - an IDT gate: 16 bytes;
 * - bytes of a syscall dispatcher (`x64_sys_call`, …): the changed range.
 * Everything else is refused with the reason (a hidden process or module, a changed cred, a text
 * page with no byte-exact baseline: writing memory back there would corrupt live kernel state).
 *
 * A DMA write is not synchronised with the CPUs: a table entry or a gate is one naturally aligned
 * write (the CPU sees the old or the new value), but restoring several bytes of code another CPU is
 * executing can be seen half-done; the dispatcher's changed range is written in one request, which
 * is the best DMA can do.
 */
import { PmiError, readPhys, writePhys } from '@pmi/core';
import { KernelObjects, type DiscoveredKernel } from '@pmi/kernel';
import type { Alert } from '../model.js';
import { vaHex } from '../model.js';
import type { Baseline } from '../baseline/baseline.js';
import { syscallCheck, type SyscallBaseline } from '../checks/syscalls.js';
import type { IdtBaseline } from '../checks/idt.js';
import { fromBase64, regionOf } from '../checks/kernel-memory.js';

export interface RepairPlan {
  alert: string;
  /** What is restored, e.g. `sys_call_table[110]`. */
  what: string;
  va: string;
  /** Physical pieces and the bytes each gets. */
  writes: { pa: number; bytes: string }[];
  current: string;
  restored: string;
}

export interface RepairResult extends RepairPlan {
  written: boolean;
  /** Re-read after the write equals the baseline bytes. */
  verified: boolean;
}

const TABLES: Record<string, string> = {
  sys_call_table: 'x64',
  ia32_sys_call_table: 'ia32',
  x32_sys_call_table: 'x32',
};
const DISPATCHERS: Record<string, string> = { x64_sys_call: 'x64', ia32_sys_call: 'ia32', x32_sys_call: 'x32' };

function refuse(alert: Alert, why: string): never {
  throw new PmiError('E_USAGE', 'repair', `alert ${alert.id} (${alert.check} ${alert.symbol ?? alert.key}): ${why}`, {
    alert: alert.id,
    key: alert.key,
  });
}

/** Work out the bytes to restore; reads the current bytes, writes nothing. */
export async function planRepair(d: DiscoveredKernel, alert: Alert, baseline: Baseline): Promise<RepairPlan> {
  const [head, arg] = [alert.key.slice(0, alert.key.indexOf(':')), alert.key.slice(alert.key.indexOf(':') + 1)];
  let va: bigint;
  let restore: Uint8Array;
  let what: string;
  if (alert.check === 'syscalls' && head in TABLES && /^\d+$/.test(arg)) {
    // The value to restore is what the check expects now: the dispatcher's decoded target where the
    // kernel has one (the code the CPU runs), else the baseline's entry. Re-run the check rather than
    // trust the alert's copy: the alert may be old, the entry may have been fixed meanwhile.
    const sb = baseline.checks.syscalls as SyscallBaseline | undefined;
    const t = sb?.abis.find((a) => a.abi === TABLES[head])?.table;
    const r = await syscallCheck.run({ d, k: KernelObjects.from(d), mem: d.mem }, sb);
    const f = r.findings.find((x) => x.key === alert.key);
    const n = Number(arg);
    if (!f) refuse(alert, `${head}[${n}] now holds what the check expects: nothing to restore`);
    if (!f.old) refuse(alert, `${head}[${n}]: the check has no expected value for it (no dispatcher and no baseline)`);
    if (!t && !f.old) refuse(alert, `the baseline holds no ${head}`);
    va = BigInt(f.address!);
    restore = new Uint8Array(8);
    Buffer.from(restore.buffer).writeBigUInt64LE(BigInt(f.old));
    what = `${head}[${n}]`;
  } else if (alert.check === 'syscalls' && head in DISPATCHERS && /^\d+$/.test(arg)) {
    const sb = baseline.checks.syscalls as SyscallBaseline | undefined;
    const dsp = sb?.abis.find((a) => a.abi === DISPATCHERS[head])?.dispatcher;
    if (!dsp) refuse(alert, `the baseline holds no ${head} body`);
    const off = Number(arg);
    const len = alert.old ? alert.old.length / 2 : 0;
    if (len <= 0 || off + len > dsp.size) refuse(alert, `the alert does not say which bytes of ${head} changed`);
    va = BigInt(dsp.va) + BigInt(off);
    restore = fromBase64(dsp.bytes).subarray(off, off + len);
    what = `${head}+0x${off.toString(16)} (${len} bytes)`;
  } else if (alert.check === 'idt' && head === 'idt' && /^\d+$/.test(arg)) {
    const ib = baseline.checks.idt as IdtBaseline | undefined;
    if (!ib) refuse(alert, 'the baseline holds no IDT');
    const v = Number(arg);
    if (v > 255) refuse(alert, `vector ${v} is not an IDT vector`);
    va = BigInt(ib.va) + BigInt(v * 16);
    restore = fromBase64(ib.bytes).subarray(v * 16, v * 16 + 16);
    what = `idt_table[${v}]`;
  } else {
    refuse(
      alert,
      'only syscall-table entries, IDT gates and syscall-dispatcher bytes are restored from the baseline; ' +
        'this alert has no byte-exact baseline to write back (hidden objects, credentials, text pages and hooks are live kernel state)',
    );
  }
  const region = await regionOf(d, what, va, restore.length);
  const current = new Uint8Array(restore.length);
  const writes: RepairPlan['writes'] = [];
  let off = 0;
  for (const p of region.pieces) {
    current.set(await readPhys(d.mem, p.pa, p.len), off);
    writes.push({ pa: p.pa, bytes: Buffer.from(restore.subarray(off, off + p.len)).toString('hex') });
    off += p.len;
  }
  if (Buffer.compare(current, restore) === 0)
    refuse(alert, `${what} already holds the baseline's bytes: nothing to restore`);
  return {
    alert: alert.id,
    what,
    va: vaHex(va),
    writes,
    current: Buffer.from(current).toString('hex'),
    restored: Buffer.from(restore).toString('hex'),
  };
}

/** Apply a plan (the source must be writable), then re-read and compare. */
export async function applyRepair(d: DiscoveredKernel, plan: RepairPlan): Promise<RepairResult> {
  if (d.mem.info.readOnly)
    throw new PmiError(
      'E_READ_ONLY',
      'repair',
      `${d.mem.info.uri} is open read-only: repair needs a writable source (and a NetTLP adapter started with --writable)`,
      {},
    );
  for (const w of plan.writes) await writePhys(d.mem, w.pa, new Uint8Array(Buffer.from(w.bytes, 'hex')));
  let verified = true;
  for (const w of plan.writes) {
    const back = await readPhys(d.mem, w.pa, w.bytes.length / 2);
    if (Buffer.from(back).toString('hex') !== w.bytes) verified = false;
  }
  return { ...plan, written: true, verified };
}
