import { execFile } from 'node:child_process';
import {
  existsSync,
  readFileSync,
  mkdtempSync,
  openSync,
  readSync,
  closeSync,
  readdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { isPmiError } from '@pmi/core';
import { fetchKernel, listLabVms, startLabVm, type LabVm } from '@pmi/lab';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'pmi-lab-life-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** qemu processes whose command line mentions this VM name. */
function qemuProcessesFor(name: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readCmdline(Number(d));
      if (cmd.includes('qemu-system') && cmd.includes(`pmi-lab-${name}`)) out.push(Number(d));
    } catch {
      /* raced */
    }
  }
  return out;
}
function isPidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

function readCmdline(pid: number): string {
  const fd = openSync(`/proc/${pid}/cmdline`, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).toString('utf8').replace(/\0/g, ' ');
  } finally {
    closeSync(fd);
  }
}

function cli(args: string[], timeoutMs = 240_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs, maxBuffer: 256 << 20 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('lab lifecycle', () => {
  it('a boot with a bogus kernel path fails fast with E_LAB and leaves no qemu process', async () => {
    const name = `bogus-${process.pid}`;
    const t0 = Date.now();
    const err = await startLabVm({ kernel: '6.12', paging: 4, name, vmlinuz: join(tmp, 'no-such-vmlinuz') }).catch(
      (e: unknown) => e,
    );
    expect(isPmiError(err)).toBe(true);
    expect(isPmiError(err) && err.code).toBe('E_LAB');
    expect(String((err as Error).message)).toMatch(/qemu exited during boot/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(qemuProcessesFor(name)).toEqual([]);
    expect(existsSync(`/dev/shm/pmi-lab-${name}.ram`)).toBe(false);
    expect(listLabVms().some((v) => v.name === name)).toBe(false);
  });

  it('a garbage kernel image fails with E_LAB carrying the console tail', async () => {
    const name = `garbage-${process.pid}`;
    const bogus = join(tmp, 'garbage-vmlinuz');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(bogus, Buffer.alloc(4096, 0x41));
    const err = await startLabVm({ kernel: '6.12', paging: 4, name, vmlinuz: bogus, bootTimeoutMs: 20_000 }).catch(
      (e: unknown) => e,
    );
    expect(isPmiError(err) && err.code).toBe('E_LAB');
    expect(String((err as Error).message)).toContain('serial log tail');
    expect(qemuProcessesFor(name)).toEqual([]);
  });

  describe('panic and ELF dump on a dedicated VM', () => {
    let vm: LabVm | undefined;
    afterAll(async () => {
      await vm?.stop();
    });

    it('boots, dumps an ELF core, panics on sysrq-c with RAM intact, and stops cleanly', async () => {
      vm = await startLabVm({ kernel: '6.12', paging: 4, name: `panic-${process.pid}`, collectTruth: false });
      const elf = join(tmp, 'core.elf');
      const d = await vm.dumpGuestMemory(elf);
      expect(d.bytes).toBeGreaterThan(vm.state.memory_bytes);
      const head = Buffer.alloc(4);
      const fd = openSync(elf, 'r');
      readSync(fd, head, 0, 4, 0);
      closeSync(fd);
      expect(head.toString('latin1')).toBe('\x7fELF');
      expect(await vm.runState()).toBe('running');

      expect(vm.isPanicked()).toBe(false);
      const t0 = Date.now();
      const err = await vm.run('echo c > /proc/sysrq-trigger', { timeoutMs: 60_000 }).catch((e: unknown) => e);
      expect(isPmiError(err) && err.code).toBe('E_LAB');
      expect(Date.now() - t0).toBeLessThan(30_000); // aborted on the panic, not on the timeout
      expect(vm.isPanicked()).toBe(true);
      expect(vm.isAlive()).toBe(true); // panic=0 + -no-reboot: halted, RAM still there
      expect(statSync(vm.ramPath).size).toBe(vm.state.memory_bytes);
      const snap = await vm.snapshot(join(tmp, 'panicked.ram'));
      expect(snap.bytes).toBe(vm.state.memory_bytes);

      const { pid, ram_path } = vm.state;
      await vm.stop();
      vm = undefined;
      expect(isPidAlive(pid)).toBe(false);
      expect(existsSync(ram_path)).toBe(false);
    });
  });

  it('CLI: up (detached) / list / run / truth / down, usage errors exit 2', async () => {
    const name = `cli-${process.pid}`;
    const up = await cli(['up', '--kernel', '6.1-cloud', '--paging', '4', '--memory', '128M', '--name', name]);
    expect(up.stderr).not.toMatch(/E_LAB/);
    expect(up.code).toBe(0);
    expect(up.stdout.trim()).toBe(`${name} qemu:/dev/shm/pmi-lab-${name}.ram?machine=pc`);
    try {
      // the VM outlived the CLI process that started it
      const list = await cli(['list', '--json']);
      type Row = { name: string; mode: string; memory_bytes: number; source_uri: string };
      const vms = (JSON.parse(list.stdout) as { rows: Row[] }).rows;
      const me = vms.find((v) => v.name === name);
      expect(me?.mode).toBe('detached');
      expect(me?.memory_bytes).toBe(128 * 2 ** 20);

      const run = await cli(['run', name, '--', 'echo', 'hi;', 'exit', '3']);
      expect(run.stdout).toBe('hi\n');
      expect(run.code).toBe(3);

      const truth = await cli(['truth', name, '--json', '--recorded']);
      expect(truth.code).toBe(0);
      expect((JSON.parse(truth.stdout) as { uname_r: string }).uname_r).toBe('6.1.0-57-cloud-amd64');

      const bad = await cli(['up', '--paging', '3']);
      expect(bad.code).toBe(2);
      const missing = await cli(['run', 'no-such-vm', '--', 'true']);
      expect(missing.code).toBe(1);
      expect(missing.stderr.trim().split('\n')).toHaveLength(1);
      expect(missing.stderr).toContain('E_LAB');
    } finally {
      const down = await cli(['down', name]);
      expect(down.code).toBe(0);
    }
    expect(existsSync(`/dev/shm/pmi-lab-${name}.ram`)).toBe(false);
    expect(qemuProcessesFor(name)).toEqual([]);
  });

  it('concurrent fetches of one kernel share one download and leave a sound cache', async () => {
    const cache = join(tmp, 'cache');
    const [a, b] = await Promise.all([
      fetchKernel('6.1-cloud', { cacheDir: cache }),
      fetchKernel('6.1-cloud', { cacheDir: cache }),
    ]);
    expect(a.vmlinuz).toBe(b.vmlinuz);
    expect(statSync(a.vmlinuz).size).toBeGreaterThan(1 << 20);
    expect([a.cached, b.cached].filter((c) => !c)).toHaveLength(1);
    expect(readdirSync(join(cache, 'kernels')).sort()).toEqual([a.package]);
  });
});
