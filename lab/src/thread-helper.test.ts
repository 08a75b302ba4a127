import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isStaticElf } from './initramfs.js';
import { buildThreadHelper, THREAD_HELPER } from './thread-helper.js';

// The guest's pmi-threads, built as the lab builds it (gcc -static -pthread) and run on the host:
// it must return only once its daemon and all the named threads exist.
describe('pmi-threads helper', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pmi-threads-test-'));
  const started: number[] = [];
  afterAll(() => {
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('is static, and its daemon has exactly the named threads when the command returns', async () => {
    const bin = await buildThreadHelper(join(dir, 'cache'));
    expect(isStaticElf(bin)).toBe(true);
    const exe = join(dir, THREAD_HELPER.comm);
    writeFileSync(exe, bin, { mode: 0o755 });
    // stdio ignored: the daemon keeps whatever it inherits (the guest's console), a pipe would never close
    execFileSync(exe, [], { timeout: 60_000, stdio: 'ignore' });
    const pids = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readlinkSync(`/proc/${d}/exe`) === exe;
        } catch {
          return false;
        }
      })
      .map(Number);
    started.push(...pids);
    expect(pids).toHaveLength(1);
    const [pid] = pids;
    const comm = (p: string) => readFileSync(`/proc/${pid}/task/${p}/comm`, 'utf8').replace(/\n$/, '');
    const tids = readdirSync(`/proc/${pid}/task`);
    expect(tids).toHaveLength(1 + THREAD_HELPER.threadNames.length);
    expect(comm(String(pid))).toBe(THREAD_HELPER.comm);
    const workers = tids.filter((t) => t !== String(pid)).map(comm);
    expect(workers.sort()).toEqual([...THREAD_HELPER.threadNames]);
  });
});
