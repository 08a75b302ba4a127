/**
 * A real rootkit-style module (lab/rootkit, built at test time against Debian's headers) against
 * `pmi check` and `pmi watch`, on the 6.1-cloud and 6.12 lab kernels (dedicated VMs; the shared
 * matrix guests are not touched). On load it redirects sys_call_table[110], unlinks a root
 * `sleep` from the task list, unlinks itself from the module list and raises a uid-1000 `sleep` to
 * uid 0 by editing its cred. The module's own log (parseRootkitLog: addresses it touched) is the
 * truth each finding is compared with.
 *
 * - `pmi watch` started on the clean guest reports all four as alerts after the load;
 * - `pmi check` (first observation) exits 4 with the four findings and nothing else of kind
 *   tampering: the legitimate exceptions (init_cred shared by kernel threads, threads sharing their
 *   group's cred — the workload runs a multi-threaded helper) raise nothing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildRootkitModule,
  loadRootkit,
  startLabVm,
  startRootkitVictims,
  type LabVm,
  type RootkitLoadResult,
} from '@pmi/lab';

const PMI = fileURLToPath(new URL('../../cli/bin/pmi.js', import.meta.url));
const KERNELS = (process.env.PMI_ROOTKIT_KERNELS ?? '6.1-cloud,6.12').split(',').filter(Boolean);
const hex = (v: bigint) => '0x' + v.toString(16).padStart(16, '0');

interface Row {
  check: string;
  kind: string;
  key: string;
  address: string | null;
  evidence: string;
  type?: string;
}

describe.each(KERNELS.map((k) => [k]))(
  'the lab rootkit on %s: pmi check and pmi watch see all four effects',
  (kernel) => {
    let vm: LabVm;
    let scratch: string;
    let victims: { hidePid: number; rootPid: number };
    let loaded: RootkitLoadResult;
    const watchLines: Row[] = [];
    let watch: ReturnType<typeof spawn> | undefined;

    beforeAll(async () => {
      scratch = mkdtempSync(join(tmpdir(), 'pmi-rk-'));
      const ko = await buildRootkitModule(kernel);
      vm = await startLabVm({
        kernel,
        paging: 4,
        name: `rk${process.pid}${kernel.replace(/\W/g, '')}`,
        collectTruth: false,
      });
      victims = await startRootkitVictims(vm);
      watch = spawn(
        process.execPath,
        [PMI, 'watch', '--source', vm.sourceUri, '--json', '--no-db', '--interval', '5', '--budget', '16'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let err = '';
      watch.stderr!.on('data', (b: Buffer) => (err += b.toString()));
      const started = new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`watch did not start: ${err.slice(-2000)}`)), 180_000);
        createInterface({ input: watch!.stdout! }).on('line', (l) => {
          try {
            const row = JSON.parse(l) as Row & { event?: string };
            watchLines.push(row);
            if (row.type === 'event' && row.event === 'started') {
              clearTimeout(t);
              resolve();
            }
          } catch {
            /* not JSON */
          }
        });
      });
      await started;
      loaded = await loadRootkit(vm, ko, { hidePid: victims.hidePid, rootPid: victims.rootPid });
      expect(loaded.log.done, loaded.dmesg).toBe(true);
    }, 600_000);

    afterAll(async () => {
      if (watch && watch.exitCode === null) {
        watch.kill('SIGINT');
        await new Promise((r) => watch!.once('exit', r));
      }
      await vm?.stop();
      rmSync(scratch, { recursive: true, force: true });
    });

    const expectFour = (rows: Row[], where: string) => {
      const log = loaded.log;
      const tamper = rows.filter((r) => (r.type ?? 'alert') === 'alert' && (r.kind ?? 'tampering') === 'tampering');
      const byCheck = (c: string) => tamper.filter((r) => r.check === c);
      // 1. the table entry the module wrote, at the address it logged
      const sc = byCheck('syscalls').find((r) => r.key === `sys_call_table:${log.syscall!.nr}`);
      expect(sc, `${where}: syscall-table finding`).toBeDefined();
      expect(sc!.address).toBe(hex(log.syscall!.entry));
      // 2. the unlinked task
      const hp = byCheck('hidden_processes');
      expect(
        hp.some((r) => r.evidence.includes(String(log.hiddenTask!.pid))),
        `${where}: hidden process ${log.hiddenTask!.pid} in ${JSON.stringify(hp)}`,
      ).toBe(true);
      // 3. the module that unlinked itself
      const hm = byCheck('hidden_modules');
      expect(
        hm.some((r) => r.evidence.includes('pmi_rootkit')),
        `${where}: hidden module in ${JSON.stringify(hm)}`,
      ).toBe(true);
      // 4. the raised cred
      const cr = byCheck('credentials');
      expect(
        cr.some((r) => r.evidence.includes(String(log.rootTask!.pid))),
        `${where}: credentials finding for ${log.rootTask!.pid} in ${JSON.stringify(cr)}`,
      ).toBe(true);
      return tamper;
    };

    it('pmi watch (started on the clean guest) alerts on all four', async () => {
      const deadline = Date.now() + 60_000;
      let lastErr: unknown;
      while (Date.now() < deadline) {
        try {
          expectFour(watchLines, 'watch');
          lastErr = undefined;
          break;
        } catch (e) {
          lastErr = e;
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      if (lastErr) throw lastErr;
      console.log(
        `[rootkit ${kernel}] watch: ${watchLines.filter((l) => l.type === 'alert').length} alerts: ` +
          watchLines
            .filter((l) => l.type === 'alert')
            .map((l) => `${l.check}:${l.key}`)
            .join(' '),
      );
    }, 120_000);

    it('pmi check exits 4 with the four findings and no other tampering (legitimate exceptions raise nothing)', () => {
      const r = spawnSync(process.execPath, [PMI, 'check', '--source', vm.sourceUri, '--json'], {
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(r.status, r.stderr).toBe(4);
      const doc = JSON.parse(r.stdout) as { rows: Row[]; warnings: string[] };
      const tamper = expectFour(doc.rows, 'check');
      const log = loaded.log;
      const explained = tamper.filter(
        (t) =>
          t.key === `sys_call_table:${log.syscall!.nr}` ||
          t.evidence.includes('pmi_rootkit') ||
          t.evidence.includes(String(log.hiddenTask!.pid)) ||
          t.evidence.includes(String(log.rootTask!.pid)),
      );
      expect(tamper.filter((t) => !explained.includes(t))).toEqual([]);
      console.log(
        `[rootkit ${kernel}] check: ${tamper.length} tampering rows, warnings ${JSON.stringify(doc.warnings)}`,
      );
    }, 300_000);
  },
);
