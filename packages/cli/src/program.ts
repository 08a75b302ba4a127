/**
 * The `pmi` command tree. Each action is a thin call into a command module; option
 * parsing, exit codes and error rendering are handled here once for all commands.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { isPmiError, parseBigNumber, parseSafeNumber, parseSize, PmiError } from '@pmi/core';
import { infoCommand, symCommand, typesCommand } from './commands/kernel.js';
import { sourceCommand } from './commands/source.js';
import { readCommand } from './commands/read.js';
import { grepCommand } from './commands/grep.js';
import { adapterCommand } from './commands/adapter.js';
import { registerProcessCommands } from './commands/processes.js';
import { registerKernelViewCommands } from './commands/kernel-views.js';
import { registerNetCommands } from './commands/net.js';
import { registerCpuCommands } from './commands/cpus.js';
import { registerMonitorCommands } from './commands/monitor.js';
import { registerWatchCommands } from './commands/watch.js';

/** Commander argument parser adapter: our typed E_USAGE errors become commander usage errors (exit 2). */
function arg<T>(parse: (text: string) => T): (text: string) => T {
  return (text: string) => {
    try {
      return parse(text);
    } catch (e) {
      throw new InvalidArgumentError(isPmiError(e) ? e.message : String(e));
    }
  };
}

export type Action = (...args: unknown[]) => Promise<number>;

/**
 * `configure` runs before any subcommand is added: commander copies exitOverride and
 * output settings into subcommands only when they are created.
 */
export function buildProgram(
  run: (action: () => Promise<number>) => Promise<void>,
  configure: (program: Command) => void = () => {},
): Command {
  const program = new Command('pmi');
  configure(program);
  program
    .description("Physical Machine Introspection: read and analyse a machine's physical memory from outside")
    .addOption(
      new Option('-s, --source <uri>', 'target to read (default: $PMI_SOURCE, else the single running lab VM)'),
    )
    .option('--json', 'print one JSON document on stdout (errors as JSON on stderr)')
    .option('--symbols <System.map>', 'symbol file, used when kallsyms is not found in memory (or with --prefer-file)')
    .option('--isf <file.json[.xz]>', 'Volatility 3 ISF symbol file (symbols), same role as --symbols')
    .option('--btf <file>', 'vmlinux BTF (/sys/kernel/btf/vmlinux copy or ELF vmlinux), used when BTF is not in memory')
    .option(
      '--prefer-file',
      'trust --symbols/--isf/--btf over what memory says (default: memory wins, disagreements are warned)',
    )
    .option('--no-cache', 'ignore and do not update the discovery hints cache (~/.cache/pmi/discovery-hints.json)')
    .showHelpAfterError('(run `pmi --help` for usage)')
    .enablePositionalOptions(false);

  program
    .command('source')
    .description('describe the target: source kind, read-only/live, physical ranges')
    .option('--ranges', 'print only the physical ranges, as a table')
    .action((o, cmd: Command) => run(() => sourceCommand(cmd.optsWithGlobals())));

  program
    .command('read')
    .description('read physical memory: raw bytes to stdout (default), --hex for a hexdump -C view')
    .argument(
      '<addr>',
      'physical address, or virtual with --virtual (0x hex or decimal)',
      arg((t) => parseBigNumber(t, 'address')),
    )
    .argument(
      '<len>',
      'length in bytes (0x hex, decimal, or 4K/1M)',
      arg((t) => parseSize(t, 'length')),
    )
    .option('--hex', 'print a hexdump -C style dump')
    .option('--virtual', 'ADDR is a kernel virtual address, translated through the kernel page table')
    .option(
      '--pid <pid>',
      "ADDR is a virtual address of process PID, read through the process's page tables",
      arg((t) => parseSafeNumber(t, '--pid')),
    )
    .action((addr: bigint, len: number, _o, cmd: Command) => run(() => readCommand(addr, len, cmd.optsWithGlobals())))
    .addHelpText('after', '\nIf any byte cannot be read nothing is written and pmi exits 1 naming the address.');

  program
    .command('grep')
    .description('search all physical memory for a string (or --hex bytes); rows of address + preview')
    .argument('<pattern>', 'text to find (UTF-8), or hex bytes with --hex')
    .option('--hex', 'pattern is hex bytes, e.g. "9f eb 01 00"')
    .option(
      '--max <n>',
      'stop after n matches',
      arg((t) => parseSafeNumber(t, '--max')),
      100,
    )
    .action((pattern: string, _o, cmd: Command) => run(() => grepCommand(pattern, cmd.optsWithGlobals())));

  program
    .command('info')
    .description('find the kernel in memory: release, paging mode, KASLR, DTB, symbols, BTF, how each was found')
    .action((_o, cmd: Command) => run(() => infoCommand(cmd.optsWithGlobals())));

  program
    .command('sym')
    .description('look up kernel symbols: rows of name, address, type, module (every match)')
    .argument('<name...>', 'symbol names (module:name for module symbols)')
    .action((names: string[], _o, cmd: Command) => run(() => symCommand(names, cmd.optsWithGlobals())));

  program
    .command('types')
    .description("print a struct/union layout from the kernel's BTF: offsets, sizes, field types")
    .argument('<struct>', 'type name, e.g. task_struct')
    .action((name: string, _o, cmd: Command) => run(() => typesCommand(name, cmd.optsWithGlobals())));

  program
    .command('adapter')
    .description('serve the target over NetTLP (be the adapter in software) until SIGINT/SIGTERM')
    .requiredOption('--listen <ip>', 'IPv4 address to listen on (loopback, e.g. 127.0.0.2, unless --allow is given)')
    .option(
      '--port-base <n>',
      'first UDP port; tag t uses port-base+t',
      arg((t) => parseSafeNumber(t, '--port-base')),
      12288,
    )
    .option(
      '--tags <n>',
      'number of tags (sockets), 1-256',
      arg((t) => parseSafeNumber(t, '--tags')),
      256,
    )
    .option(
      '--mps <bytes>',
      'max payload size of completions',
      arg((t) => parseSize(t, '--mps')),
      256,
    )
    .option(
      '--rcb <bytes>',
      'read completion boundary (64 or 128)',
      arg((t) => parseSize(t, '--rcb')),
      64,
    )
    .option('--writable', 'apply memory writes (default: read-only, writes are dropped and counted)')
    .option('--allow <cidrs>', 'comma-separated client networks allowed (default: loopback only)')
    .option('--fault <spec>', 'fault injection for tests, e.g. loss=0.05,reorder=0.05,dup=0.01,delay=2ms,seed=1')
    .option('--pcap <file>', 'record every datagram in and out as Ethernet/IPv4/UDP frames')
    .addOption(
      new Option('--split <mode>', 'completion splitting: rcb (like a root complex) or mps (fewer, larger completions)')
        .choices(['rcb', 'mps'])
        .default('rcb'),
    )
    .addOption(
      new Option('--io <mode>', 'socket I/O: native (recvmmsg/sendmmsg addon, npm run build:native) or dgram')
        .choices(['auto', 'native', 'dgram'])
        .default('auto'),
    )
    .option(
      '--spin <us>',
      'native I/O: busy-wait up to us microseconds for the next request before sleeping (0 = never)',
      arg((t) => parseSafeNumber(t, '--spin')),
      50,
    )
    .option(
      '--stats-interval <ms>',
      'print stats as a JSON line on stderr every ms',
      arg((t) => parseSafeNumber(t, '--stats-interval')),
    )
    .action((_o, cmd: Command) => run(() => adapterCommand(cmd.optsWithGlobals())));

  registerKernelViewCommands(program, run);
  registerNetCommands(program, run);
  registerProcessCommands(program, run);
  registerCpuCommands(program, run);
  registerMonitorCommands(program, run);
  registerWatchCommands(program, run);
  return program;
}

export { PmiError };
