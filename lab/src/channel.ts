import { createConnection, type Socket } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { labError, randomTag } from './util.js';

/** Result of one command run inside the guest. */
export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Host-side wall time of the call, ms. */
  ms: number;
}

export interface ChannelRunOptions {
  /** Host-side deadline for the whole call (default 30 s). */
  timeoutMs?: number;
  /**
   * Also kill the command inside the guest (busybox `timeout -s KILL`) one second after the host
   * gives up, so a hung command cannot block the channel. Default true.
   */
  guestTimeout?: boolean;
  /** Polled while waiting; returning a reason aborts the call with E_LAB (e.g. a kernel panic). */
  abortCheck?: () => string | undefined | Promise<string | undefined>;
}

const MAX_COMMAND_BYTES = 256 * 1024;
let counter = 0;

/** Per-socket queue: the guest loop runs one command at a time; callers in this process wait their turn. */
const queues = new Map<string, Promise<unknown>>();

/**
 * Run a shell command in the guest through the ttyS1 command loop (a QEMU unix-socket chardev).
 * The command is sent base64-encoded; stdout/stderr come back gzip+base64 between markers that
 * carry a per-call unique id, so stale output of an earlier (timed-out) call is never mistaken
 * for this one's.
 */
export function runOnChannel(socketPath: string, command: string, opts: ChannelRunOptions = {}): Promise<RunResult> {
  const prev = queues.get(socketPath) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(() => runNow(socketPath, command, opts));
  const tail = next.catch(() => undefined);
  queues.set(socketPath, tail);
  void tail.then(() => {
    if (queues.get(socketPath) === tail) queues.delete(socketPath);
  });
  return next;
}

function decodeBlock(text: string): string {
  const b64 = text.replace(/[^A-Za-z0-9+/=]/g, '');
  if (b64.length === 0) return '';
  return gunzipSync(Buffer.from(b64, 'base64')).toString('utf8');
}

function runNow(socketPath: string, command: string, opts: ChannelRunOptions): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const payload = Buffer.from(command, 'utf8').toString('base64');
  if (payload.length > MAX_COMMAND_BYTES) {
    return Promise.reject(labError(`guest command too long (${command.length} bytes)`, {}));
  }
  const id = `${process.pid.toString(36)}x${(counter++).toString(36)}x${randomTag()}`;
  const guestTmo = opts.guestTimeout === false ? 0 : Math.ceil(timeoutMs / 1000) + 1;
  const begin = `@@PMI-BEGIN ${id}@@`;
  const mid = `@@PMI-STDERR ${id}@@`;
  const endRe = new RegExp(`@@PMI-END ${id} (\\d+)@@`);
  const t0 = Date.now();
  const shortCmd = command.length > 200 ? command.slice(0, 200) + '…' : command;

  return new Promise<RunResult>((resolve, reject) => {
    const sock: Socket = createConnection(socketPath);
    let buf = '';
    let scanFrom = 0;
    let done = false;
    const finish = (err: Error | undefined, res?: RunResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poller);
      sock.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const timer = setTimeout(() => {
      finish(
        labError(`guest command timed out after ${timeoutMs} ms: ${shortCmd}`, {
          timeout_ms: timeoutMs,
          command: shortCmd,
          received_bytes: buf.length,
        }),
      );
    }, timeoutMs);
    let checking = false;
    const poller = setInterval(() => {
      if (!opts.abortCheck || checking || done) return;
      checking = true;
      Promise.resolve(opts.abortCheck())
        .then((reason) => {
          if (reason) finish(labError(`guest command aborted: ${reason}: ${shortCmd}`, { reason, command: shortCmd }));
        })
        .catch(() => undefined)
        .finally(() => {
          checking = false;
        });
    }, 500);

    sock.setEncoding('latin1');
    sock.on('connect', () => {
      // The leading newline terminates any partial line an interrupted earlier call left behind.
      sock.write(`\nPMICMD ${id} ${guestTmo} ${payload}\n`);
    });
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const m = endRe.exec(buf.slice(Math.max(0, scanFrom - 80)));
      scanFrom = buf.length;
      if (!m) return;
      const b = buf.indexOf(begin);
      const s = buf.indexOf(mid, b);
      const e = buf.lastIndexOf(`@@PMI-END ${id} `);
      if (b < 0 || s < 0 || e < s) {
        finish(labError(`garbled guest command output (markers missing) for: ${shortCmd}`, { command: shortCmd }));
        return;
      }
      try {
        const stdout = decodeBlock(buf.slice(b + begin.length, s));
        const stderr = decodeBlock(buf.slice(s + mid.length, e));
        finish(undefined, { stdout, stderr, exitCode: Number(m[1]), ms: Date.now() - t0 });
      } catch (err) {
        finish(labError(`cannot decode guest command output for: ${shortCmd}`, { command: shortCmd }, err));
      }
    });
    sock.on('error', (err) => {
      finish(labError(`guest command channel ${socketPath} failed: ${err.message}`, { socket: socketPath }, err));
    });
    sock.on('close', () => {
      finish(labError(`guest command channel closed before the command finished: ${shortCmd}`, { socket: socketPath }));
    });
  });
}
