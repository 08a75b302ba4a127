import { describe, expect, it } from 'vitest';
import { formatWorkerId, procTaskName, PF_WQ_WORKER, wqWorkerComm, type WorkerInfo } from '../src/index.js';

const OLD = { formatId: false };
const NEW = { formatId: true };
const NEW_RT = { formatId: true, rtNice: -21 };
const PF_KTHREAD = 0x00200000;

const worker = (w: Partial<WorkerInfo>): WorkerInfo => ({
  desc: '',
  busy: false,
  hasPool: true,
  id: 1,
  poolCpu: 0,
  poolId: 0,
  nice: 0,
  ...w,
});

describe('wq_worker_comm (kernel/workqueue.c)', () => {
  it('up to 6.9: task->comm, then -desc after a work item, +desc while running one', () => {
    expect(wqWorkerComm('kworker/0:1', worker({ desc: 'events' }), OLD)).toBe('kworker/0:1-events');
    expect(wqWorkerComm('kworker/0:1', worker({ desc: 'events', busy: true }), OLD)).toBe('kworker/0:1+events');
    expect(wqWorkerComm('kworker/u4:2', worker({ desc: '' }), OLD)).toBe('kworker/u4:2'); // never ran one
    // a rescuer not rescuing has no pool: the comm alone (its desc is not shown)
    expect(wqWorkerComm('mm_percpu_wq', worker({ hasPool: false, desc: 'x', rescueWq: 'mm_percpu_wq' }), OLD)).toBe(
      'mm_percpu_wq',
    );
    // the id is task->comm as stored: truncated names stay truncated
    expect(wqWorkerComm('kworker/u256:12', worker({ desc: 'events_unbound' }), OLD)).toBe(
      'kworker/u256:12-events_unbound',
    );
  });

  it('6.10+: the id rebuilt by format_worker_id (untruncated), same suffix rule', () => {
    const bound = worker({ id: 3, poolCpu: 1, desc: 'events' });
    expect(formatWorkerId(bound, NEW)).toBe('kworker/1:3');
    expect(wqWorkerComm('kworker/1:3', bound, NEW)).toBe('kworker/1:3-events');
    expect(formatWorkerId(worker({ id: 0, poolCpu: 0, nice: -20 }), NEW)).toBe('kworker/0:0H');
    expect(formatWorkerId(worker({ id: 0, poolCpu: 0, nice: -21 }), NEW_RT)).toBe('kworker/0:0F');
    expect(formatWorkerId(worker({ id: 0, poolCpu: 0, nice: -21 }), NEW)).toBe('kworker/0:0H'); // no RT pool
    expect(formatWorkerId(worker({ id: 12, poolCpu: -1, poolId: 256 }), NEW)).toBe('kworker/u256:12');
    expect(formatWorkerId(worker({ hasPool: false }), NEW)).toBe('kworker/dying');
    const rescuer = worker({ hasPool: false, rescueWq: 'quota_events_unbound', desc: 'quota_events_unbound' });
    expect(wqWorkerComm('kworker/R-quota_', rescuer, NEW)).toBe('kworker/R-quota_events_unbound');
    // a rescuer at work has the pool it rescues: desc shown
    expect(
      wqWorkerComm(
        'kworker/R-kblockd',
        { ...rescuer, rescueWq: 'kblockd', hasPool: true, busy: true, desc: 'kblockd' },
        NEW,
      ),
    ).toBe('kworker/R-kblockd+kblockd');
  });

  it('at most 63 characters (proc_task_name formats into 64 bytes)', () => {
    const long = 'x'.repeat(40);
    expect(wqWorkerComm('kworker/R-' + long.slice(0, 5), worker({ rescueWq: long, desc: long }), NEW)).toHaveLength(63);
  });
});

describe('proc_task_name (fs/proc/array.c)', () => {
  it('workers → wq_worker_comm; other kthreads → full name; the rest → task->comm', () => {
    const w = worker({ desc: 'events' });
    expect(procTaskName('kworker/0:1', PF_KTHREAD | PF_WQ_WORKER, { worker: w, style: OLD })).toBe(
      'kworker/0:1-events',
    );
    expect(procTaskName('kworker/0:1', PF_KTHREAD | PF_WQ_WORKER, { style: OLD })).toBe('kworker/0:1');
    expect(procTaskName('irq/24-virtio0-', PF_KTHREAD, { fullName: 'irq/24-virtio0-config', style: OLD })).toBe(
      'irq/24-virtio0-config',
    );
    expect(procTaskName('ksoftirqd/0', PF_KTHREAD, { style: OLD })).toBe('ksoftirqd/0');
    // a user task's name is task->comm even if something looked like a full name
    expect(procTaskName('pmi-worker-1', 0, { fullName: 'nope', style: OLD })).toBe('pmi-worker-1');
  });
});
