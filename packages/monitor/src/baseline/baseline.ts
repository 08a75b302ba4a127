/**
 * Baseline files (`pmi baseline --out FILE`; docs/monitor.md "Baseline format"): one JSON document
 * holding, per check, the `state` its pass returned — for the byte regions (syscall tables,
 * dispatchers, IDT) their address, size, SHA-256 and bytes (base64, so `pmi repair` can restore
 * them); for text, one SHA-256 per page; for the cross-views, what they compare (module list, …).
 * Addresses are hex strings: JSON numbers would round 64-bit values.
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { PmiError } from '@pmi/core';
import type { DiscoveredKernel } from '@pmi/kernel';
import { vaHex } from '../model.js';

export const BASELINE_FORMAT = 'pmi-baseline';
export const BASELINE_VERSION = 1;

export interface BaselineKernel {
  release: string;
  banner: string;
  /** Virtual KASLR slide (hex): a different slide is a different boot. */
  kaslr_slide: string;
  text: string;
  levels: 4 | 5;
}

export interface Baseline {
  format: typeof BASELINE_FORMAT;
  version: number;
  created: string;
  target: string;
  kernel: BaselineKernel;
  /** check id → that check's state */
  checks: Record<string, unknown>;
}

export function kernelIdentity(d: DiscoveredKernel): BaselineKernel {
  return {
    release: d.facts.release,
    banner: d.facts.banner,
    kaslr_slide: vaHex(d.facts.kaslrSlide),
    text: vaHex(d.facts.textVirt),
    levels: d.facts.levels,
  };
}

/** Why a baseline does not describe this boot of this kernel, or null when it does. */
export function baselineMismatch(b: Baseline, d: DiscoveredKernel): string | null {
  const k = kernelIdentity(d);
  if (b.kernel.release !== k.release)
    return `the baseline is of kernel ${b.kernel.release}, the target runs ${k.release}`;
  if (b.kernel.kaslr_slide !== k.kaslr_slide)
    return `the baseline's KASLR slide ${b.kernel.kaslr_slide} differs from the target's ${k.kaslr_slide}: another boot`;
  return null;
}

export function readBaseline(path: string): Baseline {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PmiError('E_USAGE', 'monitor', `cannot read baseline ${path}: ${(e as Error).message}`, { path });
  }
  let b: Baseline;
  try {
    b = JSON.parse(text) as Baseline;
  } catch (e) {
    throw new PmiError('E_SOURCE_FORMAT', 'monitor', `baseline ${path} is not JSON: ${(e as Error).message}`, { path });
  }
  if (b?.format !== BASELINE_FORMAT || typeof b.checks !== 'object' || !b.kernel)
    throw new PmiError('E_SOURCE_FORMAT', 'monitor', `${path} is not a pmi baseline (format "${String(b?.format)}")`, {
      path,
    });
  if (b.version > BASELINE_VERSION)
    throw new PmiError(
      'E_SOURCE_FORMAT',
      'monitor',
      `baseline ${path} has version ${b.version}; this pmi reads up to ${BASELINE_VERSION}`,
      { path },
    );
  return b;
}

/** Write atomically (temp file + rename), readable by the owner only: it holds kernel addresses. */
export function writeBaseline(path: string, b: Baseline): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(b) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
