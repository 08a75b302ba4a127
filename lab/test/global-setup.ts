import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { fetchKernel, LabVm, resolveKernel, startLabVm, statePath } from '@pmi/lab';
import { parseMatrix, type LabTarget } from './targets.js';

/**
 * Boots the kernel × paging matrix once per `vitest run --project lab` (at most two at a time:
 * the machine has two cores), records ground truth, snapshots each guest's RAM (with QEMU's view
 * of the vCPUs in the same pause), lists the threads again right after it, and provides
 * the targets to every test file. Teardown stops them all; the library's exit/signal handlers
 * kill them too if the run is interrupted.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const matrix = parseMatrix(process.env.PMI_LAB_MATRIX);
  for (const m of matrix) resolveKernel(m.kernel);
  const snapDir = mkdtempSync(join(tmpdir(), 'pmi-lab-snap-'));
  const vms: LabVm[] = [];
  const targets: LabTarget[] = new Array(matrix.length);
  const t0 = Date.now();
  const teardown = async (): Promise<void> => {
    await Promise.all(vms.map((vm) => vm.stop().catch(() => undefined)));
    rmSync(snapDir, { recursive: true, force: true });
  };
  try {
    let next = 0;
    let stopping = false;
    const worker = async (): Promise<void> => {
      while (next < matrix.length && !stopping) {
        const i = next++;
        const { kernel, paging, smp } = matrix[i];
        const name = `t${process.pid}-${kernel.replace(/\./g, '')}-p${paging}${smp > 1 ? `-smp${smp}` : ''}`;
        const log = (m: string) => process.stderr.write(`[lab] ${m}\n`);
        const fetched = await fetchKernel(kernel, { log });
        log(
          `${name}: booting ${fetched.packages.join(' + ')} (${fetched.version}, Debian ${fetched.suite}), release ${fetched.release}` +
            (fetched.substituted ? ` — ${fetched.substituted}` : ''),
        );
        const vm = await startLabVm({ kernel, paging, smp, name, log }).catch((e: unknown) => {
          stopping = true;
          throw e;
        });
        vms.push(vm);
        const truth = await vm.recordedTruth();
        // What the guest kernel runs, by its own account: a kernel without CONFIG_X86_5LEVEL stays
        // 4-level on an LA57 CPU (Debian 5.10) — a target of its own, not a failed boot.
        const runs: 4 | 5 = truth.la57 ? 5 : 4;
        if (runs !== paging)
          log(`${name}: the CPU offers LA57 but ${fetched.release} runs ${runs}-level paging (no CONFIG_X86_5LEVEL)`);
        const snapshot_path = join(snapDir, `${name}.ram`);
        const snap = await vm.snapshot(snapshot_path);
        // the threads again right after the snapshot (workqueue workers rename with each work item)
        const after = await vm.threadsNow();
        const threads_after_path = join(snapDir, `${name}.threads-after.json`);
        writeFileSync(threads_after_path, JSON.stringify(after) + '\n');
        process.stderr.write(
          `[lab] ${name}: snapshot ${snap.bytes} bytes in ${snap.ms} ms; ${after.threads.length} threads after it\n`,
        );
        targets[i] = {
          id: `${kernel}:${paging}${smp > 1 ? `:smp${smp}` : ''}`,
          kernel,
          paging: runs,
          cpu_la57: paging === 5,
          smp,
          packages: fetched.packages,
          substituted: fetched.substituted,
          expected_release: fetched.release,
          name,
          source_uri: vm.sourceUri,
          ram_path: vm.state.ram_path,
          memory_bytes: vm.state.memory_bytes,
          snapshot_path,
          vcpus_path: snap.vcpus_path,
          threads_after_path,
          truth_path: vm.state.truth_path,
          state_path: statePath(name),
          release: vm.state.release,
          boot_ms: vm.state.boot_ms,
          kallsyms_ms: truth.kallsyms_ms,
        };
      }
    };
    // allSettled: never tear down while the other worker is still booting a VM.
    const results = await Promise.allSettled([worker(), worker()]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (e) {
    await teardown();
    throw e;
  }
  process.stderr.write(`[lab] matrix of ${matrix.length} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  project.provide('labTargets', targets);
  return teardown;
}
