// Integrity checks and the live monitor (layer above @pmi/linux, below the CLI): see docs/monitor.md.
export const MONITOR_PACKAGE = '@pmi/monitor';
export * from './model.js';
export * from './checks/index.js';
export * from './baseline/index.js';
export * from './run/index.js';
export * from './watch/index.js';
export * from './alerts/format.js';
export * from './alerts/ndjson.js';
export * from './alerts/webhook.js';
export * from './store/store.js';
export * from './store/sink.js';
export { SCHEMA_VERSION, PMI_APPLICATION_ID } from './store/schema.js';
export * from './metrics/metrics.js';
export * from './metrics/server.js';
export * from './repair/index.js';
export {
  hiddenProcessesCheck,
  judgeHiddenTasks,
  HIDDEN_PROCESSES,
  PF_EXITING,
  type TaskSighting,
  type TaskView,
  type HiddenTasksVerdict,
  type HiddenProcessesState,
} from './checks/processes.js';
export {
  credentialsCheck,
  judgeCredentials,
  judgeElevation,
  compoundHead,
  CREDENTIALS,
  type CredTask,
  type CredPlace,
  type CredentialsState,
} from './checks/credentials.js';
export {
  hiddenModulesCheck,
  judgeModules,
  findSelfPointers,
  moduleNameOf,
  moduleSpace,
  HIDDEN_MODULES,
  MODULES_END,
  MODULES_VADDR_1G,
  MODULES_VADDR_512M,
  type ModuleSighting,
  type ModuleView,
  type ModulesState,
} from './checks/modules.js';
export * from './vmlinuz/index.js';
export * from './checks/hooks.js';
