/** A minimal cpio "newc" writer: enough for an initramfs (dirs, files, symlinks, device nodes). */

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number; uid?: number; gid?: number }
  | { kind: 'file'; path: string; data: Uint8Array | string; mode?: number; uid?: number; gid?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serialise entries (paths without a leading slash) into a newc archive with the trailer. */
export function buildCpio(entries: readonly CpioEntry[], mtime = 0): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (
    name: string,
    mode: number,
    data: Buffer,
    uid = 0,
    gid = 0,
    rdevMajor = 0,
    rdevMinor = 0,
    nlink = 1,
  ): void => {
    const nameBuf = Buffer.from(name + '\0', 'utf8');
    const header =
      '070701' +
      hex8(ino++) +
      hex8(mode) +
      hex8(uid) +
      hex8(gid) +
      hex8(nlink) +
      hex8(mtime) +
      hex8(data.length) +
      hex8(0) +
      hex8(0) +
      hex8(rdevMajor) +
      hex8(rdevMinor) +
      hex8(nameBuf.length) +
      hex8(0);
    parts.push(Buffer.from(header, 'ascii'), nameBuf, Buffer.alloc(pad4(110 + nameBuf.length)));
    parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    switch (e.kind) {
      case 'dir':
        push(path, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0), e.uid, e.gid, 0, 0, 2);
        break;
      case 'file': {
        const data = typeof e.data === 'string' ? Buffer.from(e.data, 'utf8') : Buffer.from(e.data);
        push(path, S_IFREG | (e.mode ?? 0o644), data, e.uid, e.gid);
        break;
      }
      case 'symlink':
        push(path, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'char':
        push(path, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), 0, 0, e.major, e.minor);
        break;
    }
  }
  ino = 0;
  push('TRAILER!!!', 0, Buffer.alloc(0), 0, 0, 0, 0, 1);
  return Buffer.concat(parts);
}

/** Parse a newc archive back into (name, mode, data) triples; used by tests and diagnostics. */
export function parseCpio(buf: Buffer): { name: string; mode: number; data: Buffer }[] {
  const out: { name: string; mode: number; data: Buffer }[] = [];
  let off = 0;
  while (off + 110 <= buf.length) {
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== '070701') throw new Error(`bad cpio magic at ${off}`);
    const field = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    off += 110 + nameSize;
    off += pad4(110 + nameSize);
    const data = buf.subarray(off, off + size);
    off += size + pad4(size);
    if (name === 'TRAILER!!!') break;
    out.push({ name, mode, data });
  }
  return out;
}
