import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';

// A precise one-shot alarm for the main thread without spinning it: a worker sleeps on a futex
// (Atomics.wait with a fractional-ms timeout, ~10–100 µs precision) until the target time, then
// posts a message, which wakes the main event loop through its async handle at once. Node's own
// timers have 1 ms granularity and fire 0–2 ms late; spinning on setImmediate is precise but
// burns a core and, on a loaded machine, gets the process descheduled.
const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const ctl = new Int32Array(workerData, 0, 4); // [0] generation, [1] stop, [2] fired generation
const target = new Float64Array(workerData, 16, 1); // hrtime ms
const hr = () => Number(process.hrtime.bigint()) / 1e6;
parentPort.postMessage('ready');
for (;;) {
  const gen = Atomics.load(ctl, 0);
  if (Atomics.load(ctl, 1)) break;
  const t = target[0];
  const dt = t - hr();
  if (dt <= 0.02) {
    if (Atomics.load(ctl, 2) !== gen) { Atomics.store(ctl, 2, gen); parentPort.postMessage(gen); }
    Atomics.wait(ctl, 0, gen);
  } else {
    Atomics.wait(ctl, 0, gen, dt > 1e6 ? undefined : dt);
  }
}
`;

export class Waker {
  private readonly sab = new SharedArrayBuffer(32);
  private readonly ctl = new Int32Array(this.sab, 0, 4);
  private readonly target = new Float64Array(this.sab, 16, 1);
  private readonly worker: Worker;
  /** performance.now() + offset = hrtime ms (same monotonic clock, constant offset). */
  private readonly offset = Number(process.hrtime.bigint()) / 1e6 - performance.now();
  private armedAt = Infinity;
  private closed = false;
  /** Resolves once the helper thread runs (startup takes 20–150 ms on a loaded machine). */
  readonly ready: Promise<void>;

  constructor(onAlarm: () => void) {
    this.target[0] = Infinity;
    this.worker = new Worker(WORKER_SRC, { eval: true, workerData: this.sab });
    this.worker.unref();
    let ready!: () => void;
    this.ready = new Promise<void>((r) => (ready = r));
    this.worker.on('message', (gen: number | 'ready') => {
      if (gen === 'ready') return ready();
      if (gen !== Atomics.load(this.ctl, 0)) return; // superseded alarm
      this.armedAt = Infinity;
      onAlarm();
    });
    this.worker.on('error', () => undefined);
  }

  /** Target of the pending alarm (performance.now() ms), Infinity if none. */
  get pending(): number {
    return this.armedAt;
  }

  /** Fire at `at` (performance.now() ms); replaces any pending alarm. */
  arm(at: number): void {
    if (this.closed) return;
    this.armedAt = at;
    this.target[0] = at + this.offset;
    Atomics.add(this.ctl, 0, 1);
    Atomics.notify(this.ctl, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctl, 1, 1);
    Atomics.add(this.ctl, 0, 1);
    Atomics.notify(this.ctl, 0);
    await this.worker.terminate();
  }
}
