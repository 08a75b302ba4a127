/** `pmi lsof`, `pmi netstat`: open files of processes and sockets, read from memory. */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { parseSafeNumber } from '@pmi/core';
import { KernelObjects } from '@pmi/kernel';
import { listOpenFiles, listSockets, type OpenFile, type SocketRow } from '@pmi/linux';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { printRows } from '../output.js';

const hex64 = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

/** `pmi lsof --json` row (docs/cli.md). */
export interface LsofRow {
  pid: number;
  comm: string;
  fd: number;
  type: string;
  path: string;
  inode: number;
  pos: number;
  flags: string;
  mode: string;
  file: string;
}

export function lsofRow(f: OpenFile): LsofRow {
  return {
    pid: f.pid,
    comm: f.comm,
    fd: f.fd,
    type: f.type,
    path: f.path,
    inode: f.inode,
    pos: f.pos,
    flags: '0' + f.flags.toString(8),
    mode: f.mode,
    file: hex64(f.file),
  };
}

/** `pmi netstat --json` row (docs/cli.md). */
export interface NetstatRow {
  proto: string;
  state: string;
  local_address: string;
  local_port: number | null;
  remote_address: string;
  remote_port: number | null;
  inode: number;
  uid: number | null;
  pids: number[];
  comms: string[];
  type: string | null;
  sock: string;
  found: string[];
  netns: number | null;
}

export function netstatRow(s: SocketRow): NetstatRow {
  return {
    proto: s.proto,
    state: s.state,
    local_address: s.local_address,
    local_port: s.local_port,
    remote_address: s.remote_address,
    remote_port: s.remote_port,
    inode: s.inode,
    uid: s.uid,
    pids: s.pids,
    comms: s.comms,
    type: s.type ?? null,
    sock: hex64(s.sock),
    found: s.found,
    netns: s.netns,
  };
}

function pidArg(t: string): number {
  try {
    return parseSafeNumber(t, 'PID');
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

export async function lsofCommand(pid: number | undefined, opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = KernelObjects.from(d);
    const r = await listOpenFiles(k, { pid });
    const warnings = [...d.facts.warnings, ...r.warnings];
    printRows(
      r.rows.map(lsofRow),
      [
        { key: 'pid', align: 'right' },
        { key: 'comm' },
        { key: 'fd', align: 'right' },
        { key: 'type' },
        { key: 'mode' },
        { key: 'inode', align: 'right' },
        { key: 'pos', align: 'right' },
        { key: 'path' },
      ],
      warnings,
      { json: !!opts.json },
    );
    return r.warnings.length ? EXIT_PARTIAL : 0;
  });
}

const addr = (a: string, p: number | null): string => (p === null ? a : a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

export async function netstatCommand(opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = KernelObjects.from(d);
    const r = await listSockets(k);
    const warnings = [...d.facts.warnings, ...r.warnings];
    printRows(
      r.rows.map(netstatRow),
      [
        { key: 'proto' },
        { key: 'local_address', header: 'LOCAL', format: (_v, row) => addr(row.local_address, row.local_port) },
        {
          key: 'remote_address',
          header: 'REMOTE',
          format: (_v, row) => (row.proto === 'unix' ? '' : addr(row.remote_address, row.remote_port)),
        },
        { key: 'state' },
        { key: 'uid', align: 'right' },
        { key: 'inode', align: 'right' },
        { key: 'netns', align: 'right' },
        {
          key: 'pids',
          header: 'PID/PROGRAM',
          format: (_v, row) => row.pids.map((p, i) => `${p}/${row.comms[i]}`).join(','),
        },
      ],
      warnings,
      { json: !!opts.json },
      { tables: r.tables },
    );
    return r.warnings.length ? EXIT_PARTIAL : 0;
  });
}

export function registerNetCommands(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  program
    .command('lsof')
    .description('open files of every process (or PID): fd, type, path as /proc/PID/fd shows it, inode, position')
    .argument('[pid]', 'only this process', pidArg)
    .action((pid: number | undefined, _o, cmd: Command) => run(() => lsofCommand(pid, cmd.optsWithGlobals())));
  program
    .command('netstat')
    .description(
      'TCP/UDP (v4, v6) and unix sockets of every network namespace: addresses, ports, state, inode, netns, owners',
    )
    .action((_o, cmd: Command) => run(() => netstatCommand(cmd.optsWithGlobals())));
}
