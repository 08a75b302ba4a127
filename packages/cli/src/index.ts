export { main, EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL } from './main.js';
export { resolveSourceUri, openTarget, withTarget } from './context.js';
export { hexdump, printRows, printJson } from './output.js';
export { grepPhysical, parsePattern } from './commands/grep.js';
export { readAll } from './commands/read.js';
export { describeTarget } from './commands/source.js';
