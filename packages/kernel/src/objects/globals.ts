/**
 * vmlinux BTF describes no ordinary global variables (only per-CPU VARs in `.data..percpu`), so
 * the globals the views use are mapped to their types here. Address from kallsyms, type from this
 * table, layout from BTF. `KernelObjects.defineGlobal()` adds or overrides entries.
 */

export interface GlobalSpec {
  /**
   * BTF type name of the variable (shape 'object'), of its pointee ('pointer') or of its elements
   * ('array'). A struct/union name, a typedef or a base type name ('long unsigned int'); '*' is an
   * untyped pointer (void *).
   */
  readonly type: string;
  /** 'object' (default): `T name`; 'pointer': `T *name`; 'array': `T name[count]`. */
  readonly shape?: 'object' | 'pointer' | 'array';
  /**
   * Arrays: a number; 'symbol' (the distance to the next kallsyms symbol ÷ element size); or the
   * name of an integer global holding the count (e.g. 'nr_cpu_ids').
   */
  readonly count?: number | 'symbol' | string;
  /** Arrays sized by 'symbol': at most this many elements (default 65536). */
  readonly maxCount?: number;
  /** Other names to try, in order, when the symbol is missing (older/newer kernels). */
  readonly aliases?: readonly string[];
}

/** The built-in table (x86-64 Linux 5.x–6.x). */
export const GLOBAL_TYPES: Readonly<Record<string, GlobalSpec>> = {
  // processes, memory, namespaces
  init_task: { type: 'task_struct' },
  init_mm: { type: 'mm_struct' },
  init_cred: { type: 'cred' },
  init_fs: { type: 'fs_struct' },
  init_files: { type: 'files_struct' },
  init_pid_ns: { type: 'pid_namespace' },
  init_uts_ns: { type: 'uts_namespace' },
  init_ipc_ns: { type: 'ipc_namespace' },
  init_user_ns: { type: 'user_namespace' },
  init_net: { type: 'net' },
  // lists and tables (heads)
  modules: { type: 'list_head' },
  net_namespace_list: { type: 'list_head' },
  super_blocks: { type: 'list_head' },
  slab_caches: { type: 'list_head' },
  crypto_alg_list: { type: 'list_head' },
  file_systems: { type: 'file_system_type', shape: 'pointer' },
  mount_hashtable: { type: 'hlist_head', shape: 'pointer' },
  tcp_hashinfo: { type: 'inet_hashinfo' },
  // kernel log
  prb: { type: 'printk_ringbuffer', shape: 'pointer' },
  printk_rb_static: { type: 'printk_ringbuffer' },
  // interrupts and system calls
  idt_table: { type: 'gate_struct', shape: 'array', count: 256 },
  sys_call_table: { type: '*', shape: 'array', count: 'symbol', maxCount: 1024 },
  ia32_sys_call_table: { type: '*', shape: 'array', count: 'symbol', maxCount: 1024 },
  // CPUs and per-CPU areas
  nr_cpu_ids: { type: 'unsigned int' },
  __per_cpu_offset: { type: 'long unsigned int', shape: 'array', count: 'nr_cpu_ids' },
  __cpu_online_mask: { type: 'cpumask' },
  __cpu_possible_mask: { type: 'cpumask' },
  // memory layout and time
  page_offset_base: { type: 'long unsigned int' },
  vmalloc_base: { type: 'long unsigned int' },
  vmemmap_base: { type: 'long unsigned int' },
  phys_base: { type: 'long unsigned int' },
  max_pfn: { type: 'long unsigned int' },
  totalram_pages: { type: 'atomic_long_t', aliases: ['_totalram_pages'] },
  mem_section: { type: '*', shape: 'pointer' },
  jiffies_64: { type: 'u64' },
  jiffies: { type: 'long unsigned int', aliases: ['jiffies_64'] },
  // strings
  linux_banner: { type: 'char', shape: 'array', count: 'symbol', maxCount: 1024 },
};
