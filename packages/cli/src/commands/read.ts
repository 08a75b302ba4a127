import { assertInRanges, hex, PmiError, type PhysicalMemory } from '@pmi/core';
import { withTarget, type GlobalOptions } from '../context.js';
import { hexdump, printJson } from '../output.js';

/** Upper bound for one `pmi read`: the bytes are held until every one is read (all-or-nothing). */
export const MAX_READ_BYTES = 1 << 30;
const CHUNK = 1 << 20;

/** Read [addr, addr+len) completely or throw; nothing partial escapes. */
export async function readAll(mem: PhysicalMemory, addr: number, len: number): Promise<Uint8Array> {
  assertInRanges(mem.info.kind, mem.info.ranges, addr, len);
  const out = new Uint8Array(len);
  const ops = [];
  for (let off = 0; off < len; off += CHUNK) {
    ops.push({ addr: addr + off, buf: out.subarray(off, Math.min(len, off + CHUNK)) });
  }
  const batch = Math.max(1, mem.info.idealBatchSize);
  for (let i = 0; i < ops.length; i += batch) {
    const failures = await mem.readBatch(ops.slice(i, i + batch));
    if (failures.length > 0) throw failures[0].error;
  }
  return out;
}

export async function readCommand(
  addrText: number,
  len: number,
  opts: GlobalOptions & { hex?: boolean },
): Promise<number> {
  if (len > MAX_READ_BYTES) {
    throw new PmiError('E_USAGE', 'cli', `length ${len} exceeds the ${MAX_READ_BYTES}-byte limit of one read`, {
      length: len,
    });
  }
  return withTarget(opts, async (mem) => {
    const bytes = await readAll(mem, addrText, len);
    if (opts.json) printJson({ address: hex(addrText), length: len, data_hex: Buffer.from(bytes).toString('hex') });
    else if (opts.hex) process.stdout.write(hexdump(bytes, BigInt(addrText)));
    else await writeStdout(bytes);
    return 0;
  });
}

function writeStdout(bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(bytes, (err) => (err ? reject(err) : resolve()));
  });
}
