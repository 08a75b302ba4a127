import { spawn, type SpawnOptions } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PmiError } from '@pmi/core';

export const ORIGIN = 'lab';

export function labError(message: string, data: Record<string, unknown> = {}, cause?: unknown): PmiError {
  return new PmiError('E_LAB', ORIGIN, message, data, cause);
}

/** Cache root for kernels and initramfs images: `$PMI_LAB_CACHE` or `~/.cache/pmi-lab`. */
export function cacheRoot(): string {
  return process.env.PMI_LAB_CACHE || join(homedir(), '.cache', 'pmi-lab');
}

/** State directory (one `<name>.json` per VM): `$PMI_LAB_DIR` or `~/.cache/pmi-lab/vms`. */
export function stateDir(): string {
  return process.env.PMI_LAB_DIR || join(homedir(), '.cache', 'pmi-lab', 'vms');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ExecOptions {
  timeoutMs: number;
  cwd?: string;
  /** File to send stdout to instead of capturing it. */
  stdoutFile?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Run a program (no shell) with a hard timeout. Resolves with its exit status; rejects with
 * E_LAB only when it could not be started or ran out of time (it is killed then).
 */
export async function execProgram(file: string, args: readonly string[], opts: ExecOptions): Promise<ExecResult> {
  let outFd: fsp.FileHandle | undefined;
  if (opts.stdoutFile) outFd = await fsp.open(opts.stdoutFile, 'w');
  try {
    return await new Promise<ExecResult>((resolve, reject) => {
      const so: SpawnOptions = {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ['ignore', outFd ? outFd.fd : 'pipe', 'pipe'],
      };
      const child = spawn(file, args, so);
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        if (stdout.length < 4 << 20) stdout += d;
      });
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        if (stderr.length < 1 << 20) stderr += d;
      });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(labError(`cannot run ${file}: ${e.message}`, { program: file }, e));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) {
          reject(
            labError(`${file} ${args.join(' ')} timed out after ${opts.timeoutMs} ms`, {
              program: file,
              timeout_ms: opts.timeoutMs,
              stderr: tail(stderr, 2000),
            }),
          );
        } else resolve({ stdout, stderr, code, signal });
      });
    });
  } finally {
    await outFd?.close();
  }
}

/** Like execProgram but a non-zero exit is an E_LAB error naming the program and its stderr. */
export async function execChecked(file: string, args: readonly string[], opts: ExecOptions): Promise<ExecResult> {
  const r = await execProgram(file, args, opts);
  if (r.code !== 0) {
    throw labError(
      `${file} ${args.join(' ')} failed (exit ${r.code ?? r.signal}): ${tail(r.stderr.trim(), 600) || '(no stderr)'}`,
      { program: file, exit_code: r.code, stderr: tail(r.stderr, 2000) },
    );
  }
  return r;
}

export function tail(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : text.slice(text.length - maxChars);
}

/** Last n lines of a text (serial logs: `\r\n` line ends are normalised). */
export function tailLines(text: string, n: number): string {
  const lines = text.replace(/\r/g, '').split('\n');
  return lines.slice(Math.max(0, lines.length - n)).join('\n');
}

/** True when pid exists and is not a zombie. */
export function isPidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The NUL-separated command line of a live process, or undefined. */
export function procCmdline(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((s) => s.length > 0);
  } catch {
    return undefined;
  }
}

export async function waitForPidExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isPidAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

export async function rmQuiet(path: string): Promise<void> {
  await fsp.rm(path, { force: true, recursive: true }).catch(() => undefined);
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}

export function randomTag(): string {
  return Math.random().toString(36).slice(2, 10);
}

export function formatBytes(n: number): string {
  if (n % 2 ** 30 === 0) return `${n / 2 ** 30}G`;
  if (n % 2 ** 20 === 0) return `${n / 2 ** 20}M`;
  return `${n}`;
}
