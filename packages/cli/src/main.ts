/**
 * Entry point: runs the command tree and maps outcomes to the exit-code contract
 * (docs/cli.md): 0 ok, 1 error, 2 usage, 3 partial result.
 */
import { CommanderError } from 'commander';
import { asPmiError } from '@pmi/core';
import { buildProgram } from './program.js';
import { printError } from './output.js';

import { EXIT_ERROR, EXIT_OK, EXIT_USAGE } from './exit-codes.js';

export { EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL } from './exit-codes.js';

export async function main(argv: string[]): Promise<number> {
  let status = EXIT_OK;
  const json = argv.includes('--json');
  const program = buildProgram(
    async (action) => {
      try {
        status = await action();
      } catch (e) {
        const err = asPmiError(e, 'cli');
        printError(err, { json });
        status = err.code === 'E_USAGE' ? EXIT_USAGE : EXIT_ERROR;
      }
    },
    (program) => {
      program.exitOverride();
      if (json) {
        // Usage errors in --json mode are JSON too, so scripts parse one format.
        program.configureOutput({
          writeErr: () => {}, // the hint after an error is plain text; JSON mode prints only the error object
          outputError: (s) =>
            process.stderr.write(
              JSON.stringify({ error: { code: 'E_USAGE', message: s.trim().replace(/^error: /, '') } }) + '\n',
            ),
        });
      }
    },
  );
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE;
    }
    printError(asPmiError(e, 'cli'), { json });
    return EXIT_ERROR;
  }
  return status;
}
