import { hex, PmiError, type PhysicalMemory } from '@pmi/core';
import { withTarget, type GlobalOptions } from '../context.js';
import { printRows } from '../output.js';

export interface GrepRow {
  address: string;
  preview: string;
}

const WINDOW = 4 << 20;

/**
 * Scan every physical range for a byte pattern. Windows overlap by pattern.length-1 so a
 * match across a window edge is found once; at most `max` matches are returned.
 */
export async function grepPhysical(
  mem: PhysicalMemory,
  pattern: Uint8Array,
  max: number,
  previewLen = 64,
): Promise<{ rows: GrepRow[]; truncated: boolean }> {
  if (pattern.length === 0) throw new PmiError('E_USAGE', 'cli', 'empty search pattern');
  const rows: GrepRow[] = [];
  const buf = Buffer.alloc(WINDOW + pattern.length - 1 + previewLen);
  const needle = Buffer.from(pattern);
  for (const r of mem.info.ranges) {
    for (let start = r.start; start < r.end; start += WINDOW) {
      const len = Math.min(WINDOW + pattern.length - 1 + previewLen, r.end - start);
      const view = buf.subarray(0, len);
      const failures = await mem.readBatch([{ addr: start, buf: view }]);
      if (failures.length) throw failures[0].error;
      const limit = Math.min(WINDOW, len);
      let at = view.indexOf(needle);
      while (at >= 0 && at < limit) {
        const p = view.subarray(at, Math.min(len, at + previewLen));
        rows.push({ address: hex(start + at), preview: printable(p) });
        if (rows.length >= max) return { rows, truncated: true };
        at = view.indexOf(needle, at + 1);
      }
    }
  }
  return { rows, truncated: false };
}

function printable(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '.';
  return s;
}

export function parsePattern(text: string, isHex: boolean): Uint8Array {
  if (!isHex) return Buffer.from(text, 'utf8');
  const clean = text.replace(/[\s:]/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(clean)) {
    throw new PmiError(
      'E_USAGE',
      'cli',
      `invalid hex pattern '${text}': expected pairs of hex digits, e.g. "9f eb 01 00"`,
    );
  }
  return Buffer.from(clean, 'hex');
}

export async function grepCommand(
  pattern: string,
  opts: GlobalOptions & { hex?: boolean; max: number },
): Promise<number> {
  const needle = parsePattern(pattern, !!opts.hex);
  return withTarget(opts, async (mem) => {
    const { rows, truncated } = await grepPhysical(mem, needle, opts.max);
    const warnings = truncated ? [`stopped after ${opts.max} matches (--max)`] : [];
    printRows(rows, [{ key: 'address', align: 'right' }, { key: 'preview' }], warnings, { json: !!opts.json });
    return 0;
  });
}
