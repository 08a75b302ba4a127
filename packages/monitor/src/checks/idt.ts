/**
 * IDT: every present gate of `idt_table` (256 × 16-byte gates) must point into core kernel text at
 * an entry point the kernel builds its IDT from: an `asm_exc_*` / `asm_sysvec_*` / `asm_*`
 * / `entry_*` symbol's first byte, or one of the 8-byte-spaced stubs of `irq_entries_start` /
 * `spurious_entries_start` (vector v ≥ 32 → stub v − 32). With a baseline, the 4 KiB must also
 * equal the baseline's bytes (a gate moved to another legitimate-looking entry is still a change).
 *
 * Not covered, because DMA cannot see CPU registers: a CPU whose IDTR was pointed at another table.
 * The IDT the kernel loaded is `idt_table` on every x86-64 kernel since 4.x (also read-only
 * mapped at the CPU entry area); a different IDTR would show only in the CPU (e.g. QEMU's
 * `info registers`).
 */
import type { Finding } from '../model.js';
import { vaHex } from '../model.js';
import type { Check, CheckOutcome } from './types.js';
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
  toBase64,
} from './kernel-memory.js';

const GATES = 256;
const GATE_SIZE = 16;

export interface IdtGate {
  vector: number;
  present: boolean;
  /** Gate type: 0xE interrupt, 0xF trap. */
  type: number;
  dpl: number;
  ist: number;
  selector: number;
  handler: bigint;
}

/** Decode one 16-byte x86-64 gate descriptor. */
export function decodeGate(b: Uint8Array, vector: number): IdtGate {
  const o = vector * GATE_SIZE;
  const lo16 = b[o] | (b[o + 1] << 8);
  const selector = b[o + 2] | (b[o + 3] << 8);
  const ist = b[o + 4] & 7;
  const attr = b[o + 5];
  const mid16 = b[o + 6] | (b[o + 7] << 8);
  const hi32 = (b[o + 8] | (b[o + 9] << 8) | (b[o + 10] << 16) | (b[o + 11] << 24)) >>> 0;
  const handler = (BigInt(hi32) << 32n) | (BigInt(mid16) << 16n) | BigInt(lo16);
  return { vector, present: (attr & 0x80) !== 0, type: attr & 0xf, dpl: (attr >> 5) & 3, ist, selector, handler };
}

const ENTRY_NAME = /^(asm_|entry_|xen_asm_|irq_entries_start$|spurious_entries_start$|native_|error_entry$)/;

export interface IdtBaseline {
  va: string;
  sha256: string;
  bytes: string;
}

export const idtCheck: Check = {
  id: 'idt',
  title: 'IDT gates: each present gate points at a kernel entry point in core text; bytes equal the baseline',
  light: true,
  async run(ctx, baseline): Promise<CheckOutcome> {
    const t0 = performance.now();
    const { d } = ctx;
    const findings: Finding[] = [];
    const warnings: string[] = [];
    const sym = d.symbols.get('idt_table');
    if (!sym) {
      return {
        check: 'idt',
        findings,
        warnings: ['no idt_table symbol'],
        partial: true,
        ms: performance.now() - t0,
      };
    }
    const b = imageBounds(d);
    const bytes = await d.paging.readVirtual(sym.address, GATES * GATE_SIZE);
    // Stub arrays the kernel points gates into: irq_entries_start / spurious_entries_start (vector
    // v ≥ 32 → stub v − 32, 8 bytes each, 16 with IBT), and early_idt_handler_array for exception
    // vectors the kernel never replaces after boot (reserved 22–31: 9 bytes each, 13 with IBT; it
    // lies in init text, which is freed — the kernel's own choice, since those vectors never fire).
    const stubArrays = [
      { name: 'irq_entries_start', first: 32, strides: [8, 16, 32] },
      { name: 'spurious_entries_start', first: 32, strides: [8, 16, 32] },
      { name: 'early_idt_handler_array', first: 0, strides: [9, 13] },
    ].flatMap((a) => {
      const va = d.symbols.get(a.name)?.address;
      return va === undefined ? [] : [{ ...a, va }];
    });
    for (let v = 0; v < GATES; v++) {
      const g = decodeGate(bytes, v);
      if (!g.present) continue;
      const h = g.handler;
      const names = namesAt(d, h);
      let ok = inCoreText(b, h) && names.some((n) => ENTRY_NAME.test(n));
      for (const a of stubArrays) {
        if (ok || v < a.first) continue;
        ok = a.strides.some((s) => h === a.va + BigInt((v - a.first) * s));
      }
      if (ok) continue;
      findings.push({
        check: 'idt',
        kind: 'tampering',
        severity: 'critical',
        address: vaHex(sym.address + BigInt(v * GATE_SIZE)),
        symbol: `idt_table[${v}]`,
        evidence: `IDT vector ${v} → ${names[0] ?? symbolOf(d, h)} (${vaHex(h)}, ${inCoreText(b, h) ? 'core kernel text' : 'outside core kernel text'}): not a kernel entry point for this vector`,
        key: `idt:${v}`,
        new: vaHex(h),
        region: 'idt_table',
      });
    }
    const base = baseline as IdtBaseline | undefined;
    const sha = sha256Hex(bytes);
    if (base && base.sha256 !== sha) {
      const old = fromBase64(base.bytes);
      for (const [off, len] of diffRanges(old, bytes, 0)) {
        const v = Math.floor(off / GATE_SIZE);
        if (findings.some((f) => f.key === `idt:${v}`)) continue; // already reported with more detail
        const was = decodeGate(old, v);
        const now = decodeGate(bytes, v);
        findings.push({
          check: 'idt',
          kind: 'tampering',
          severity: 'high',
          address: vaHex(sym.address + BigInt(v * GATE_SIZE)),
          symbol: `idt_table[${v}]`,
          evidence: `IDT vector ${v} changed since the baseline: ${symbolOf(d, was.handler)} → ${symbolOf(d, now.handler)} (bytes ${hexBytes(old, off, len)} → ${hexBytes(bytes, off, len)})`,
          key: `idt:${v}`,
          old: vaHex(was.handler),
          new: vaHex(now.handler),
          region: 'idt_table',
        });
      }
    }
    return {
      check: 'idt',
      findings,
      warnings,
      partial: false,
      ms: performance.now() - t0,
      state: { va: vaHex(sym.address), sha256: sha, bytes: toBase64(bytes) } satisfies IdtBaseline,
      regions: [{ region: await regionOf(d, 'idt_table', sym.address, GATES * GATE_SIZE), bytes }],
    };
  },
};
