/**
 * Integrity commands (docs/cli.md "Integrity"): `pmi check`, `pmi baseline`, and (in watch.ts)
 * `pmi watch`, `pmi alerts`, `pmi repair`. Thin: the checks live in @pmi/monitor.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { PmiError } from '@pmi/core';
import {
  ALL_CHECKS,
  baselineMismatch,
  checkContext,
  exitCodeOf,
  readBaseline,
  runChecks,
  selectChecks,
  vmlinuzCheck,
  writeBaseline,
  type Baseline,
  type Finding,
} from '@pmi/monitor';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { resolveSourceUri } from '../context.js';
import { printJson, printRows } from '../output.js';

type Run = (action: () => Promise<number>) => Promise<void>;

export interface CheckOptions extends KernelOptions {
  baseline?: string;
  checks?: string;
  vmlinuz?: string;
}

/** The checks to run: the registry (or --checks), plus the on-disk comparison with --vmlinuz. */
export function checksFor(opts: CheckOptions) {
  const checks = selectChecks(list(opts.checks));
  if (opts.vmlinuz) {
    if (!existsSync(opts.vmlinuz))
      throw new PmiError('E_USAGE', 'cli', `--vmlinuz ${opts.vmlinuz}: no such file`, { path: opts.vmlinuz });
    checks.push(vmlinuzCheck(opts.vmlinuz));
  }
  return checks;
}

const list = (s: string | undefined) =>
  s
    ?.split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export async function checkCommand(opts: CheckOptions): Promise<number> {
  const checks = checksFor(opts);
  const base: Baseline | undefined = opts.baseline ? readBaseline(opts.baseline) : undefined;
  const { uri } = await resolveSourceUri(opts);
  return withKernel(opts, async (d) => {
    const warnings: string[] = [];
    let usable = base;
    if (base) {
      const why = baselineMismatch(base, d);
      if (why) {
        warnings.push(`${why}: checked without it (first observation)`);
        usable = undefined;
      }
    }
    const pass = await runChecks(checkContext(d), checks, usable, uri);
    const rows: (Finding & { ms?: number })[] = [];
    for (const r of pass.results) {
      rows.push(...r.findings);
      warnings.push(...r.warnings.map((w) => `${r.check}: ${w}`));
    }
    const code = exitCodeOf(pass.results);
    const summary = pass.results.map((r) => ({
      check: r.check,
      findings: r.findings.length,
      tampering: r.findings.filter((f) => f.kind === 'tampering').length,
      partial: r.partial,
      ms: Math.round(r.ms),
    }));
    if (opts.json) {
      printJson({
        rows,
        warnings,
        checks: summary,
        baseline: usable ? opts.baseline : null,
        kernel: pass.baseline.kernel,
        verdict: code === 4 ? 'tampered' : code === 3 ? 'partial' : 'clean',
      });
    } else {
      printRows(
        rows,
        [
          { key: 'check' },
          { key: 'kind' },
          { key: 'severity' },
          { key: 'address' },
          { key: 'symbol' },
          { key: 'evidence' },
        ],
        warnings,
        { json: false },
      );
      process.stderr.write(
        summary
          .map(
            (s) =>
              `${s.check}: ${s.tampering ? `${s.tampering} tampering` : 'clean'}${s.partial ? ' (partial)' : ''}, ${s.ms} ms`,
          )
          .join('; ') + (usable ? ` — against baseline ${opts.baseline}\n` : ' — no baseline: first observation\n'),
      );
    }
    return code;
  });
}

export async function baselineCommand(opts: CheckOptions & { out: string }): Promise<number> {
  const checks = checksFor(opts);
  const { uri } = await resolveSourceUri(opts);
  return withKernel(opts, async (d) => {
    const pass = await runChecks(checkContext(d), checks, undefined, uri);
    writeBaseline(opts.out, pass.baseline);
    const code = exitCodeOf(pass.results);
    const warnings = pass.results.flatMap((r) => r.warnings.map((w) => `${r.check}: ${w}`));
    const tampering = pass.results.flatMap((r) => r.findings.filter((f) => f.kind === 'tampering'));
    // A baseline of an already tampered kernel would hide the tampering: say so loudly.
    for (const f of tampering) warnings.push(`the baseline includes a tampering finding: ${f.evidence}`);
    if (opts.json)
      printJson({ out: opts.out, kernel: pass.baseline.kernel, checks: Object.keys(pass.baseline.checks), warnings });
    else {
      process.stdout.write(
        `baseline of ${pass.baseline.kernel.release} (slide ${pass.baseline.kernel.kaslr_slide}) → ${opts.out}: ${Object.keys(pass.baseline.checks).join(', ')}\n`,
      );
      for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    }
    return code;
  });
}

export function registerMonitorCommands(program: Command, run: Run): void {
  const known = ALL_CHECKS.map((c) => c.id).join(', ');
  program
    .command('check')
    .description(
      'one pass of every integrity check (syscall dispatch, IDT, text, …): rows of check, kind, severity, address, symbol, evidence; exit 0 clean, 3 partial, 4 tampering',
    )
    .option('--baseline <file>', 'compare with a baseline written by `pmi baseline` (default: first observation)')
    .option('--checks <ids>', `comma-separated subset (${known})`)
    .option(
      '--vmlinuz <file>',
      'also compare kernel text and rodata with this on-disk kernel (bzImage) after relocation',
    )
    .action((_o, cmd: Command) => run(() => checkCommand(cmd.optsWithGlobals())));
  program
    .command('baseline')
    .description('record a baseline of every check (regions, hashes, values) to FILE for check/watch --baseline')
    .requiredOption('--out <file>', 'where to write the baseline (JSON, mode 0600)')
    .option('--checks <ids>', `comma-separated subset (${known})`)
    .action((_o, cmd: Command) => run(() => baselineCommand(cmd.optsWithGlobals())));
}
