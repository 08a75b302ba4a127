// Open files (lsof): fd tables of processes, file paths via a mount-aware d_path.
export { listOpenFiles, type OpenFile, type OpenFilesResult, type OpenFilesOptions, type FileType } from './lsof.js';
export { DentryPaths, type PathRef, type ResolvedPath } from './dpath.js';
