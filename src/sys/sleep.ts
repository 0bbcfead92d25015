/**
 * Waiting a while: the one sleep of the suite, which an AbortSignal cuts
 * short (pidwatch's interval between questions, its --kill-after, the rounds
 * of a signal to a job).
 */
import { setTimeout as timeout } from 'node:timers/promises';

/** Resolves after `ms`, or as soon as `signal` aborts (the caller reads `signal.aborted`); never rejects for the abort. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await timeout(ms, undefined, signal === undefined ? undefined : { signal });
  } catch (err) {
    if (!signal?.aborted) throw err;
  }
}
