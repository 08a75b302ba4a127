#!/usr/bin/env node
// Committed executable shim: the compiled entry point lives in dist/ (built by `npm run build`).
import { main } from '../dist/main.js';

process.exitCode = await main(process.argv.slice(2));
