/** The lab test matrix and the descriptors the global setup provides to test files. */

export interface LabTarget {
  /** `<kernel>:<paging>`, e.g. "6.12:5". */
  id: string;
  kernel: string;
  paging: 4 | 5;
  name: string;
  /** `qemu:<ram_path>?machine=pc` */
  source_uri: string;
  ram_path: string;
  memory_bytes: number;
  /** A sparse copy of guest RAM taken (paused) right after boot + truth. */
  snapshot_path: string;
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

export const DEFAULT_MATRIX = '6.1-cloud:5,6.1-cloud:4,6.12:5,6.12:4';

/** Parse PMI_LAB_MATRIX (`6.1-cloud:5,6.12:4`; paging defaults to 5). */
export function parseMatrix(text: string | undefined): { kernel: string; paging: 4 | 5 }[] {
  const spec = (text ?? '').trim() || DEFAULT_MATRIX;
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const [kernel, p = '5'] = s.split(':');
      if (p !== '4' && p !== '5') throw new Error(`PMI_LAB_MATRIX: bad paging '${p}' in '${s}' (4 or 5)`);
      return { kernel, paging: Number(p) as 4 | 5 };
    });
}

/** The `uname -r` each lab kernel must report. */
export const EXPECTED_RELEASE: Record<string, string> = {
  '6.1-cloud': '6.1.0-57-cloud-amd64',
  '6.12': '6.12.117+deb12-amd64',
};
