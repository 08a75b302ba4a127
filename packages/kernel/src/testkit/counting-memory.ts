import type { MemOp, OpFailure, PhysicalMemory, SourceInfo } from '@pmi/core';

/**
 * Middleware that counts what reaches a source: readBatch calls (round trips), ops and bytes.
 * With `sync: false` it hides readSync, so code under test behaves as on a remote source
 * (NetTLP) where every read is a batched round trip. Optional delay per readBatch.
 */
export class CountingMemory implements PhysicalMemory {
  readonly info: SourceInfo;
  readonly readSync?: (addr: number, buf: Uint8Array) => void;
  batches = 0;
  ops = 0;
  bytes = 0;
  syncReads = 0;
  /** Ops of each readBatch call, in order. */
  readonly batchSizes: number[] = [];

  constructor(
    readonly inner: PhysicalMemory,
    opts: { sync?: boolean; live?: boolean; delayMs?: number } = {},
  ) {
    this.info = { ...inner.info, live: opts.live ?? inner.info.live };
    this.delayMs = opts.delayMs ?? 0;
    if (opts.sync !== false && inner.readSync) {
      const rs = inner.readSync;
      this.readSync = (addr, buf) => {
        this.syncReads++;
        this.bytes += buf.length;
        rs(addr, buf);
      };
    }
  }

  private readonly delayMs: number;

  reset(): void {
    this.batches = 0;
    this.ops = 0;
    this.bytes = 0;
    this.syncReads = 0;
    this.batchSizes.length = 0;
  }

  async readBatch(ops: readonly MemOp[]): Promise<OpFailure[]> {
    this.batches++;
    this.ops += ops.length;
    this.batchSizes.push(ops.length);
    for (const o of ops) this.bytes += o.buf.length;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.readBatch(ops);
  }

  writeBatch(ops: readonly MemOp[]): Promise<void> {
    return this.inner.writeBatch(ops);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
