/** The exit-code contract (docs/cli.md). */
export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;
export const EXIT_PARTIAL = 3;
/** `pmi check`/`pmi watch`: tampering found (wins over EXIT_PARTIAL). */
export const EXIT_TAMPERED = 4;
