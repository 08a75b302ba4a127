/**
 * Errors are values: a stable machine-readable `code`, the layer that raised it
 * (`origin`), and structured `data` (addresses as "0x…" strings) so they survive
 * JSON (CLI `--json`, dashboard) without losing precision.
 */
export type ErrorCode =
  | 'E_USAGE' // bad command line / argument
  | 'E_NO_SOURCE' // no source URI given and none could be inferred
  | 'E_SOURCE_URI' // a source URI that cannot be parsed
  | 'E_SOURCE_FORMAT' // a file whose contents are not the claimed/sniffed format
  | 'E_SOURCE_IO' // the OS refused a read/open/write
  | 'E_OUT_OF_RANGE' // a physical address the source does not have
  | 'E_READ_ONLY' // a write to a source opened read-only
  | 'E_CLOSED' // use after close()
  | 'E_TIMEOUT' // a network wait that ran out
  | 'E_LAB' // lab VM orchestration failed
  | 'E_PAGE_FAULT' // a virtual address that does not translate (data: level, entry)
  | 'E_BTF' // malformed BTF type information
  | 'E_SYMBOLS' // malformed or inconsistent symbol tables
  | 'E_NOT_FOUND' // a kernel structure that discovery could not locate (data: what was tried)
  | 'E_LIST' // a kernel list walk that stopped early (cycle, unreadable node, too long): partial result
  | 'E_INTERNAL';

export class PmiError extends Error {
  readonly code: ErrorCode;
  readonly origin: string;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, origin: string, message: string, data: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PmiError';
    this.code = code;
    this.origin = origin;
    this.data = data;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, origin: this.origin, message: this.message, ...this.data };
  }
}

export function isPmiError(e: unknown): e is PmiError {
  return e instanceof PmiError;
}

/** Wrap an unknown thrown value into a PmiError (keeps PmiErrors as they are). */
export function asPmiError(e: unknown, origin = 'internal'): PmiError {
  if (e instanceof PmiError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new PmiError('E_INTERNAL', origin, msg, {}, e);
}
