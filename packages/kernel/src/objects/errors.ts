import { PmiError, type ErrorCode } from '@pmi/core';
import { vaHex } from '../paging/va.js';

export const ORIGIN = 'objects';

/** Walk errors (cycle, unreadable node, too long, NULL link): a partial result, not a crash. */
export const E_LIST: ErrorCode = 'E_LIST';

export type ListErrorReason = 'cycle' | 'unreadable' | 'too_long' | 'null_link';

export function listError(
  reason: ListErrorReason,
  list: string,
  at: bigint,
  after: bigint | undefined,
  count: number,
  cause?: unknown,
): PmiError {
  const what =
    reason === 'cycle'
      ? `node ${vaHex(at)} seen twice (a cycle not through the head)`
      : reason === 'unreadable'
        ? `node ${vaHex(at)} is unreadable${cause instanceof Error ? ` (${cause.message})` : ''}`
        : reason === 'too_long'
          ? `more than ${count} nodes (limit reached)`
          : `NULL link`;
  return new PmiError(
    E_LIST,
    ORIGIN,
    `${list}: ${what} after ${count} item(s)${after !== undefined ? `, reached from ${vaHex(after)}` : ''}`,
    {
      list,
      reason,
      at: vaHex(at),
      after: after === undefined ? undefined : vaHex(after),
      count,
    },
    cause,
  );
}

export function missingField(struct: string, field: string, detail?: string): PmiError {
  return new PmiError(
    'E_NOT_FOUND',
    ORIGIN,
    `struct ${struct} has no field '${field}'${detail ? ` (${detail})` : ''}`,
    { struct, field },
  );
}

export function usage(msg: string, data: Record<string, unknown> = {}): PmiError {
  return new PmiError('E_USAGE', ORIGIN, msg, data);
}

export function nullPointer(struct: string, path: string, va: bigint): PmiError {
  return new PmiError('E_PAGE_FAULT', ORIGIN, `${struct} at ${vaHex(va)}: '${path}' goes through a NULL pointer`, {
    struct,
    field: path,
    virtual_address: '0x0',
    object: vaHex(va),
    reason: 'null_pointer',
  });
}
