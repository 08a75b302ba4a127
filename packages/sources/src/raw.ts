import { PmiError, hex, type OpenOptions } from '@pmi/core';
import { FileMemory, closeQuietly, normalisedUri, openFile, parseFileUri, parseSizeParam } from './file-memory.js';

/**
 * `raw:PATH[?size=N]` — a flat image: physical address = file offset, ranges = [0, size).
 * `size=` (0x…, decimal or 64M-style) limits the image, or gives the size of a device node
 * whose stat size is 0.
 */
export class RawSource extends FileMemory {
  override describe(): Record<string, unknown> {
    return { ...super.describe(), mapping: 'physical address = file offset' };
  }
}

export async function openRaw(uri: string, rest: string, opts: OpenOptions = {}): Promise<RawSource> {
  const u = parseFileUri('raw', uri, rest, opts, ['size']);
  const sizeParam = u.params.get('size');
  let limit: number | undefined;
  if (sizeParam !== null) limit = parseSizeParam('raw', uri, 'size', sizeParam);
  const f = openFile('raw', uri, u.path, u.writable);
  try {
    let size = f.size;
    if (limit !== undefined) {
      if (f.stat.isFile() && limit > f.size) {
        throw new PmiError(
          'E_SOURCE_URI',
          'raw',
          `size=${sizeParam} (${hex(limit)}) is larger than ${u.path} (${hex(f.size)} bytes)`,
          { uri },
        );
      }
      size = limit;
    }
    return new RawSource({
      kind: 'raw',
      uri: normalisedUri('raw', u.absPath, { size: limit === undefined ? undefined : hex(limit) }),
      path: u.path,
      fd: f.fd,
      fileSize: f.size,
      readOnly: !u.writable,
      live: false,
      segments: [{ start: 0, end: size, fileOffset: 0 }],
    });
  } catch (e) {
    closeQuietly(f.fd);
    throw e;
  }
}
