#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { isPmiError, PmiError } from '@pmi/core';
import { fetchKernel, KERNELS } from './kernels.js';
import { labSourceUri, listLabVms } from './state.js';
import type { GroundTruth } from './truth.js';
import { LabVm, openLabVm, startLabVm, type Paging } from './vm.js';
import { formatBytes } from './util.js';

const usage = (msg: string): PmiError => new PmiError('E_USAGE', 'pmi-lab', msg);
const out = (s: string): void => {
  process.stdout.write(s.endsWith('\n') ? s : s + '\n');
};
const progress = (msg: string): void => {
  process.stderr.write(msg + '\n');
};

function summariseTruth(t: GroundTruth): string {
  const lines = [
    `uname_r   ${t.uname_r}`,
    `cmdline   ${t.cmdline}`,
    `memory    ${(t.mem_total_bytes / 2 ** 20).toFixed(1)} MiB MemTotal, la57 ${t.la57 ? 'yes' : 'no'}`,
    `kallsyms  ${t.kallsyms.length} symbols (transfer ${(t.kallsyms_ms / 1000).toFixed(1)} s)`,
    `modules   ${t.modules.map((m) => `${m.name}@${m.address}`).join(' ')}`,
    `tcp       ${t.net_tcp.map((r) => `${r.local_ip}:${r.local_port}/${r.state}`).join(' ')}`,
    `tcp6      ${t.net_tcp6.map((r) => `[${r.local_ip}]:${r.local_port}/${r.state}`).join(' ')}`,
    `udp       ${t.net_udp.map((r) => `${r.local_ip}:${r.local_port}/${r.state}`).join(' ')}`,
    `udp6      ${t.net_udp6.map((r) => `[${r.local_ip}]:${r.local_port}/${r.state}`).join(' ')}`,
    `unix      ${t.net_unix.length} sockets, netns ${t.netns ?? '?'}; other namespaces: ${t.other_netns.length}`,
    `processes ${t.ps.length} (user processes below)`,
  ];
  for (const p of t.ps.filter((p) => p.args !== '')) {
    lines.push(
      `  ${String(p.pid).padStart(5)} ${String(p.ppid).padStart(5)} uid=${String(p.uid).padEnd(5)} ${p.comm.padEnd(16)} ${p.args}`,
    );
  }
  return lines.join('\n');
}

/** `[name] out`: one word is the output path, two are name and path. */
function nameAndPath(words: string[], what: string): [string | undefined, string] {
  if (words.length === 1) return [undefined, words[0]];
  if (words.length === 2) return [words[0], words[1]];
  throw usage(`${what}: expected [NAME] OUT`);
}

/** Words after `--` on the real command line (commander drops the separator). */
function afterSeparator(argv: readonly string[]): { before: string[]; after: string[] } | undefined {
  const runAt = argv.indexOf('run');
  const sep = argv.indexOf('--', runAt);
  if (runAt < 0 || sep < 0) return undefined;
  return { before: argv.slice(runAt + 1, sep).filter((a) => !a.startsWith('-')), after: argv.slice(sep + 1) };
}

export function buildProgram(): Command {
  const program = new Command('pmi-lab')
    .description(
      'QEMU lab targets for pmi: boot Debian kernels with a known workload, read their live RAM, record ground truth',
    )
    .option('-v, --verbose', 'print full error details (serial log tail) on failure')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('up')
    .description('start a detached lab VM (survives this command) and print its name and source URI')
    .addOption(
      new Option('--kernel <id>', 'kernel').choices([...KERNELS.flatMap((k) => [k.id, ...k.aliases])]).default('6.12'),
    )
    .addOption(new Option('--paging <n>', 'paging levels: 5 (LA57) or 4').choices(['4', '5']).default('5'))
    .option('--smp <n>', 'vCPUs (TCG: one host thread each)', '1')
    .option('--memory <size>', 'guest RAM (e.g. 256M, 2G)', '256M')
    .option('--name <name>', 'VM name (default: generated)')
    .option('--append <args>', 'extra kernel command-line arguments')
    .option('--boot-timeout <s>', 'seconds to wait for the guest to come up', '180')
    .option('--procs <n>', 'extra idle sleep processes the guest starts before it is ready (scale tests)', '0')
    .option('--json', 'print the VM state as JSON')
    .action(
      async (o: {
        kernel: string;
        paging: string;
        smp: string;
        memory: string;
        name?: string;
        append?: string;
        bootTimeout: string;
        procs: string;
        json?: boolean;
      }) => {
        const vm = await startLabVm({
          kernel: o.kernel,
          paging: Number(o.paging) as Paging,
          smp: Number(o.smp),
          memory: o.memory,
          name: o.name,
          append: o.append,
          detached: true,
          bootTimeoutMs: Number(o.bootTimeout) * 1000,
          extraProcesses: Number(o.procs),
          log: progress,
        });
        if (o.json) out(JSON.stringify({ ...vm.state, source_uri: vm.sourceUri }, null, 2));
        else out(`${vm.name} ${vm.sourceUri}`);
      },
    );

  program
    .command('down')
    .description('stop a lab VM (QMP quit, then SIGTERM/SIGKILL) and remove its RAM file and state')
    .argument('[name]', 'VM name (default: the only running one)')
    .option('--all', 'stop every running lab VM')
    .action(async (name: string | undefined, o: { all?: boolean }) => {
      if (o.all && name) throw usage('down: give a NAME or --all, not both');
      const vms = o.all ? listLabVms().map((s) => new LabVm(s)) : [openLabVm(name)];
      await Promise.all(vms.map((v) => v.stop()));
      for (const v of vms) out(`stopped ${v.name}`);
    });

  program
    .command('list')
    .description('list running lab VMs')
    .option('--json', 'JSON {rows, warnings}: one VM state (+ source_uri) per row')
    .action((o: { json?: boolean }) => {
      const vms = listLabVms();
      if (o.json) {
        out(
          JSON.stringify(
            // the project's list contract (docs/cli.md): {rows, warnings}
            { rows: vms.map((v) => ({ ...v, source_uri: labSourceUri(v) })), warnings: [] },
            null,
            2,
          ),
        );
        return;
      }
      if (vms.length === 0) {
        out('no lab VMs running');
        return;
      }
      for (const v of vms) {
        out(
          `${v.name}\t${v.kernel}\tpaging=${v.paging}\t${formatBytes(v.memory_bytes)}\t${v.status}\tpid=${v.pid}\t${labSourceUri(v)}`,
        );
      }
    });

  program
    .command('truth')
    .description('collect ground truth from inside the guest now (or print the recorded one)')
    .argument('[name]', 'VM name (default: the only running one)')
    .option('--json', 'print the whole truth JSON')
    .option('--recorded', 'print the truth recorded at boot instead of collecting')
    .action(async (name: string | undefined, o: { json?: boolean; recorded?: boolean }) => {
      const vm = openLabVm(name);
      const t = o.recorded ? await vm.recordedTruth() : await vm.groundTruth();
      out(o.json ? JSON.stringify(t, null, 2) : summariseTruth(t));
    });

  program
    .command('run')
    .description('run a shell command in the guest: pmi-lab run [NAME] -- CMD...; exits with its status')
    .argument('[words...]')
    .option('--timeout <s>', 'seconds before giving up', '60')
    .allowUnknownOption()
    .action(async (words: string[], o: { timeout: string }) => {
      const split = afterSeparator(process.argv);
      const before = split ? split.before.filter((w) => w !== o.timeout) : [];
      const cmd = split ? split.after : words;
      if (cmd.length === 0) throw usage('run: expected -- CMD...');
      if (before.length > 1) throw usage(`run: expected at most one NAME before --, got ${before.join(' ')}`);
      const vm = openLabVm(before[0]);
      const r = await vm.run(cmd.join(' '), { timeoutMs: Number(o.timeout) * 1000 });
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      process.exitCode = r.exitCode;
    });

  program
    .command('snapshot')
    .description(
      'copy the guest RAM (paused around the copy) to OUT, and the vCPU registers of that pause to OUT.vcpus.json: pmi-lab snapshot [NAME] OUT',
    )
    .argument('<words...>')
    .action(async (words: string[]) => {
      const [name, path] = nameAndPath(words, 'snapshot');
      const r = await openLabVm(name).snapshot(path);
      out(`${r.path} ${r.bytes} bytes in ${r.ms} ms; vCPUs: ${r.vcpus_path}`);
    });

  program
    .command('dump')
    .description('QMP dump-guest-memory into an ELF core: pmi-lab dump [NAME] OUT.elf')
    .argument('<words...>')
    .action(async (words: string[]) => {
      const [name, path] = nameAndPath(words, 'dump');
      const r = await openLabVm(name).dumpGuestMemory(path);
      out(`${r.path} ${r.bytes} bytes in ${r.ms} ms`);
    });

  program
    .command('fetch')
    .description('download and extract a lab kernel into the cache')
    .addOption(
      new Option('--kernel <id>', 'kernel (or "all")')
        .choices([...KERNELS.flatMap((k) => [k.id, ...k.aliases]), 'all'])
        .default('all'),
    )
    .action(async (o: { kernel: string }) => {
      const ids = o.kernel === 'all' ? KERNELS.map((k) => k.id) : [o.kernel];
      for (const id of ids) {
        const t0 = Date.now();
        const k = await fetchKernel(id, { log: progress });
        out(
          `${k.id}\t${k.packages.join('+')}${k.substituted ? ` (${k.substituted})` : ''}\t${k.release}\t${k.cached ? 'cached' : `fetched in ${Date.now() - t0} ms`}\t${k.vmlinuz}`,
        );
      }
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const verbose = argv.includes('-v') || argv.includes('--verbose');
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return 0;
      return 2; // commander already printed the message
    }
    if (isPmiError(e) && e.code === 'E_USAGE') {
      process.stderr.write(`pmi-lab: ${e.message}\n`);
      return 2;
    }
    const msg = e instanceof Error ? e.message : String(e);
    const code = isPmiError(e) ? e.code : 'E_INTERNAL';
    if (verbose) process.stderr.write(`pmi-lab: ${code}: ${msg}\n`);
    else
      process.stderr.write(`pmi-lab: ${code}: ${msg.split('\n')[0]}${msg.includes('\n') ? ' (-v for details)' : ''}\n`);
    return 1;
  }
}

function invokedDirectly(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  // `pmi-lab truth --json | head`: a closed pipe is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`pmi-lab: ${String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
