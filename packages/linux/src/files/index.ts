// Open files (lsof): fd tables of processes, file paths via the mount-aware d_path (../memory/dentry.ts).
export { listOpenFiles, type OpenFile, type OpenFilesResult, type OpenFilesOptions, type FileType } from './lsof.js';
