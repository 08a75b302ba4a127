/** The lab test matrix and the descriptors the global setup provides to test files. */

export interface LabTarget {
  /** `<kernel>:<paging>[:smpN]`, e.g. "6.12:5" or "6.12:5:smp2". */
  id: string;
  kernel: string;
  /**
   * The paging mode the guest kernel runs, from its own /proc/cpuinfo (`la57`). Equal to the matrix
   * entry's, except for a kernel built without CONFIG_X86_5LEVEL (Debian's 5.10) on an LA57 CPU: it
   * runs 4-level, and pmi must find 4 levels there.
   */
  paging: 4 | 5;
  /** The CPU QEMU offered had LA57 (the matrix entry asked for 5-level). */
  cpu_la57: boolean;
  /** vCPUs (`-smp`). */
  smp: number;
  /** The Debian packages booted (sid: linux-binary-* + linux-modules-*) and, when the pinned one had left
   * its suite, which newer kernel was taken instead. */
  packages: readonly string[];
  substituted?: string;
  /** `uname -r` the booted package must report (its lib/modules directory name). */
  expected_release: string;
  name: string;
  /** `qemu:<ram_path>?machine=pc` */
  source_uri: string;
  ram_path: string;
  memory_bytes: number;
  /** A sparse copy of guest RAM taken (paused) right after boot + truth. */
  snapshot_path: string;
  /**
   * `<snapshot_path>.vcpus.json`: QEMU's view of each vCPU, read in the snapshot's pause —
   * `{collected_at, vcpus: [{cpu, gs_base, kernel_gs_base, rip, rsp, cpl, halted}]}` (lab/src/vcpus.ts).
   */
  vcpus_path: string;
  /**
   * The thread listing taken again right after the snapshot (the truth's is from before it; a
   * kworker's name changes with its work item): `{collected_at, threads: ThreadEntry[]}`.
   */
  threads_after_path: string;
  truth_path: string;
  state_path: string;
  release: string;
  boot_ms: number;
  kallsyms_ms: number;
}

declare module 'vitest' {
  export interface ProvidedContext {
    labTargets: LabTarget[];
  }
}

/**
 * Every lab kernel on a 4-level and an LA57 CPU (5-level paging, except 5.10: Debian builds it without
 * CONFIG_X86_5LEVEL, so it runs 4-level there); one target per kernel boots with two vCPUs (per-CPU data,
 * run queues). Two SMP guests booting at once are four vCPU threads on two cores: the global setup
 * boots at most two guests at a time and they idle (HLT) once ready.
 */
export const DEFAULT_MATRIX = '5.10:4:smp2,5.10:5,6.1-cloud:5:smp2,6.1-cloud:4,6.12:5:smp2,6.12:4,7.x:4:smp2,7.x:5';

export interface MatrixEntry {
  kernel: string;
  paging: 4 | 5;
  smp: number;
}

/** Parse PMI_LAB_MATRIX (`kernel[:paging[:smpN]]`, comma-separated; paging defaults to 5, smp to 1). */
export function parseMatrix(text: string | undefined): MatrixEntry[] {
  const spec = (text ?? '').trim() || DEFAULT_MATRIX;
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const [kernel, p = '5', cpus = 'smp1', ...rest] = s.split(':');
      if (p !== '4' && p !== '5') throw new Error(`PMI_LAB_MATRIX: bad paging '${p}' in '${s}' (4 or 5)`);
      const m = /^smp([1-8])$/.exec(cpus);
      if (!m || rest.length > 0)
        throw new Error(`PMI_LAB_MATRIX: bad entry '${s}' (kernel[:4|5[:smpN]], N from 1 to 8)`);
      return { kernel, paging: Number(p) as 4 | 5, smp: Number(m[1]) };
    });
}

/** The `uname -r` of each lab kernel's pinned package (7.x may be substituted when sid moved on). */
export const EXPECTED_RELEASE: Record<string, string> = {
  '5.10': '5.10.0-32-amd64',
  '6.1-cloud': '6.1.0-57-cloud-amd64',
  '6.12': '6.12.117+deb12-amd64',
  '7.x': '7.2.13+deb14-amd64',
};
