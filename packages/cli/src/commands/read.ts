import { assertInRanges, PmiError, type PhysicalMemory } from '@pmi/core';
import type { X86Paging } from '@pmi/kernel';
import { withTarget } from '../context.js';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { hexdump, printJson } from '../output.js';
import { readProcessMemory } from '@pmi/linux';

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

/** Read [va, va+len) through the kernel's page tables, all or nothing (E_PAGE_FAULT names the VA). */
export async function readAllVirtual(paging: X86Paging, va: bigint, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  const ops = [];
  for (let off = 0; off < len; off += CHUNK) {
    ops.push({ va: va + BigInt(off), buf: out.subarray(off, Math.min(len, off + CHUNK)) });
  }
  for (let i = 0; i < ops.length; i += 16) {
    const failures = await paging.readVirtualBatch(ops.slice(i, i + 16));
    if (failures.length > 0) throw failures[0].error;
  }
  return out;
}

export async function readCommand(
  addr: bigint,
  len: number,
  opts: KernelOptions & { hex?: boolean; virtual?: boolean; pid?: number },
): Promise<number> {
  if (len > MAX_READ_BYTES) {
    throw new PmiError('E_USAGE', 'cli', `length ${len} exceeds the ${MAX_READ_BYTES}-byte limit of one read`, {
      length: len,
    });
  }
  const emit = async (bytes: Uint8Array) => {
    if (opts.json) {
      printJson({
        address: '0x' + addr.toString(16),
        length: len,
        virtual: !!opts.virtual || opts.pid !== undefined,
        ...(opts.pid !== undefined ? { pid: opts.pid } : {}),
        data_hex: Buffer.from(bytes).toString('hex'),
      });
    } else if (opts.hex) process.stdout.write(hexdump(bytes, addr));
    else await writeStdout(bytes);
    return 0;
  };
  if (opts.pid !== undefined) {
    if (addr >= 1n << 64n) throw new PmiError('E_USAGE', 'cli', `virtual address ${addr} exceeds 64 bits`);
    return withKernel(opts, async (k) => emit(await readProcessMemory(k, opts.pid!, addr, len)));
  }
  if (opts.virtual) {
    if (addr >= 1n << 64n) throw new PmiError('E_USAGE', 'cli', `virtual address ${addr} exceeds 64 bits`);
    return withKernel(opts, async (k) => emit(await readAllVirtual(k.paging, addr, len)), { noTypes: true });
  }
  if (addr > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PmiError(
      'E_USAGE',
      'cli',
      `physical address 0x${addr.toString(16)} is beyond 2^53 (did you mean --virtual?)`,
    );
  }
  return withTarget(opts, async (mem) => emit(await readAll(mem, Number(addr), len)));
}

function writeStdout(bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(bytes, (err) => (err ? reject(err) : resolve()));
  });
}
