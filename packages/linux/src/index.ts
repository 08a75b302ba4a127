// Linux views over a discovered kernel (see docs/architecture.md). Each view lives in its own folder.
export const LINUX_PACKAGE = '@pmi/linux';
