/**
 * Renderers live outside the commands: a command produces typed rows or a document,
 * and these functions turn it into a table, JSON, or a hexdump. JSON follows the CLI
 * contract (docs/cli.md): one document on stdout; list commands print {rows, warnings};
 * 64-bit values are "0x…" strings (callers convert before handing rows here).
 */
import Table from 'cli-table3';
import type { PmiError } from '@pmi/core';

export interface OutputOptions {
  json: boolean;
}

export interface Column<Row> {
  key: keyof Row & string;
  header?: string;
  align?: 'left' | 'right';
  format?: (value: unknown, row: Row) => string;
}

export function printJson(doc: unknown): void {
  process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
}

/**
 * Print a list: JSON `{rows, warnings, …extra}` or an aligned plain-text table (warnings go to stderr).
 * `extra` carries what a view says about how it read the kernel (e.g. which tables), JSON only.
 */
export function printRows<Row extends object>(
  rows: Row[],
  columns: Column<Row>[],
  warnings: string[],
  out: OutputOptions,
  extra: Record<string, unknown> = {},
): void {
  if (out.json) {
    printJson({ rows, warnings, ...extra });
    return;
  }
  const table = new Table({
    head: columns.map((c) => c.header ?? c.key.toUpperCase()),
    colAligns: columns.map((c) => c.align ?? 'left'),
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const row of rows) {
    table.push(
      columns.map((c) => {
        const v = (row as Record<string, unknown>)[c.key];
        return c.format ? c.format(v, row) : v === undefined || v === null ? '' : String(v);
      }),
    );
  }
  process.stdout.write(table.toString() + '\n');
  printWarnings(warnings);
}

export function printWarnings(warnings: string[]): void {
  for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
}

/** Key/value document: JSON as is, or `key: value` lines. */
export function printDocument(doc: Record<string, unknown>, out: OutputOptions): void {
  if (out.json) {
    printJson(doc);
    return;
  }
  const width = Math.max(...Object.keys(doc).map((k) => k.length));
  for (const [k, v] of Object.entries(doc)) {
    const text = typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
    process.stdout.write(`${k.padEnd(width)}  ${text}\n`);
  }
}

export function printError(err: PmiError, out: OutputOptions): void {
  if (out.json) process.stderr.write(JSON.stringify({ error: err.toJSON() }) + '\n');
  else process.stderr.write(`pmi: ${err.message.replace(/\s*\n\s*/g, ' ')}\n`);
}

/**
 * `hexdump -C` layout with the real (physical/virtual) address in the first column and
 * repeated lines collapsed to `*`, as hexdump does. Addresses are bigint so 64-bit
 * virtual addresses print exactly.
 */
export function hexdump(bytes: Uint8Array, base: bigint): string {
  const lines: string[] = [];
  let prev = '';
  let starred = false;
  const width = 8; // like hexdump's %08.8_Ax: at least 8 digits, more when the address needs them
  for (let off = 0; off < bytes.length; off += 16) {
    const chunk = bytes.subarray(off, Math.min(off + 16, bytes.length));
    const key = Buffer.from(chunk).toString('hex');
    if (key === prev && chunk.length === 16) {
      if (!starred) lines.push('*');
      starred = true;
      continue;
    }
    starred = false;
    prev = key;
    let hexPart = '';
    let ascii = '';
    for (let i = 0; i < 16; i++) {
      if (i < chunk.length) {
        hexPart += chunk[i].toString(16).padStart(2, '0') + ' ';
        ascii += chunk[i] >= 0x20 && chunk[i] < 0x7f ? String.fromCharCode(chunk[i]) : '.';
      } else hexPart += '   ';
      if (i === 7) hexPart += ' ';
    }
    lines.push(`${(base + BigInt(off)).toString(16).padStart(width, '0')}  ${hexPart} |${ascii}|`);
  }
  lines.push((base + BigInt(bytes.length)).toString(16).padStart(width, '0'));
  return lines.join('\n') + '\n';
}
