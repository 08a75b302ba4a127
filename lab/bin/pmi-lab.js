#!/usr/bin/env node
// Committed executable shim: the compiled CLI lives in dist/ (built by `npm run build`).
import { main } from '../dist/cli.js';

// `pmi-lab truth --json | head`: a closed pipe is not an error.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
});
process.exitCode = await main(process.argv);
