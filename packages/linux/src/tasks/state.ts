/**
 * Task state letters as `ps` prints them (fs/proc/array.c task_state_array + __task_state_index).
 * The state bits are #defines (not in BTF); they have been stable since 4.14:
 * TASK_RUNNING 0, INTERRUPTIBLE 0x1, UNINTERRUPTIBLE 0x2, __TASK_STOPPED 0x4, __TASK_TRACED 0x8,
 * EXIT_DEAD 0x10, EXIT_ZOMBIE 0x20, TASK_PARKED 0x40 (= TASK_REPORT 0x7f), TASK_NOLOAD 0x400,
 * TASK_RTLOCK_WAIT 0x1000; TASK_IDLE = UNINTERRUPTIBLE | NOLOAD reports as 'I'.
 */
const LETTERS = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];
const TASK_REPORT = 0x7f;
const TASK_IDLE = 0x402;
const TASK_RTLOCK_WAIT = 0x1000;

/** `state` = task->__state (or ->state), `exitState` = task->exit_state. */
export function taskStateLetter(state: number, exitState: number): string {
  let s = (state | exitState) & TASK_REPORT;
  if (state === TASK_IDLE) s = 0x80;
  if (state === TASK_RTLOCK_WAIT) s = 0x2;
  // fls(): index of the highest set bit, 1-based; 0 → running
  const idx = s === 0 ? 0 : 32 - Math.clz32(s);
  return LETTERS[idx] ?? '?';
}
