import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readStat, signalProcess } from '../../src/job/tree.js';

/**
 * Run as the first process of a PID namespace of its own (test/unit/pidref.test.ts
 * starts it under `unshare --pid --fork --mount-proc`): makes a pid be
 * reused between the job tree's start-token check and its signal, and prints
 * as JSON whether the later process got the signal meant for the earlier
 * one. The namespace's ns_last_pid picks the next pid handed out, so that
 * the later process gets the earlier one's pid at once; every process of
 * the namespace ends with this one.
 */

// The earlier process: a sleep whose parent is a shell that reaps it as it dies, freeing its pid.
const holder = spawn('sh', ['-c', 'sleep 1000 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
const [chunk] = (await once(holder.stdout!, 'data')) as [Buffer];
const earlier = Number(chunk.toString().trim());
const seen = readStat(earlier);
if (seen === undefined) throw new Error(`cannot read /proc/${earlier}/task/${earlier}/stat`);
let later: ReturnType<typeof spawn> | undefined;
const sent = signalProcess(seen, 'SIGTERM', () => {
  execFileSync('sh', ['-c', `kill -9 ${earlier}; while [ -e /proc/${earlier} ]; do :; done; echo ${earlier - 1} > /proc/sys/kernel/ns_last_pid`]);
  later = spawn('sleep', ['1000'], { stdio: 'ignore' });
});
const ended = later === undefined ? undefined : new Promise<NodeJS.Signals | null>((resolve) => later!.once('exit', (_code, signal) => resolve(signal)));
const signalled = await Promise.race([ended, new Promise((resolve) => setTimeout(() => resolve('alive'), 300))]);
process.stdout.write(`${JSON.stringify({ earlier, later: later?.pid, sent, later_was: signalled })}\n`);
later?.kill('SIGKILL');
process.exit(0);
