/**
 * Every check pmi knows, in the order `pmi check` runs and prints them. The light ones (cheap,
 * byte regions) first: they are also what `pmi watch` polls every interval.
 */
import { PmiError } from '@pmi/core';
import type { Check } from '../checks/types.js';
import { syscallCheck } from '../checks/syscalls.js';
import { idtCheck } from '../checks/idt.js';
import { textCheck } from '../checks/text.js';
import { hiddenProcessesCheck } from '../checks/processes.js';
import { credentialsCheck } from '../checks/credentials.js';
import { hiddenModulesCheck } from '../checks/modules.js';
import { hooksCheck } from '../checks/hooks.js';

export const ALL_CHECKS: readonly Check[] = [
  syscallCheck,
  idtCheck,
  textCheck,
  hiddenProcessesCheck,
  credentialsCheck,
  hiddenModulesCheck,
  hooksCheck,
];

/** Checks by id (`--checks a,b`); unknown ids are a usage error naming the known ones. */
export function selectChecks(ids: readonly string[] | undefined, all: readonly Check[] = ALL_CHECKS): Check[] {
  if (!ids || ids.length === 0) return [...all];
  const out: Check[] = [];
  for (const id of ids) {
    const c = all.find((x) => x.id === id);
    if (!c)
      throw new PmiError('E_USAGE', 'monitor', `unknown check "${id}" (known: ${all.map((x) => x.id).join(', ')})`, {
        id,
      });
    out.push(c);
  }
  return out;
}
