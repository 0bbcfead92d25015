import type { ChildProcess } from 'node:child_process';
import { timeOfDay } from '../sys/time.js';
import { openNotifier } from './notify.js';
import { removePidfile } from './pidfile.js';
import { RestartPace } from './restarts.js';
import type { Severity } from './syslog.js';

/**
 * A detached pidstatd's supervisor (pidstatd(8), DESCRIPTION): it runs the
 * server as its child, starts another when one dies (restarts.ts paces
 * them), passes signals on, and tells the command typed the first outcome.
 * What starts a server, and where words go, are the command's
 * (cli/pidstatd.ts).
 */

/**
 * For a supervised server: how many servers its supervisor has restarted,
 * and why the last one ended, so that its counters say so wherever it is
 * asked (SIGUSR1, the metrics file, STATUS=) even where no log is kept.
 */
export const RESTARTS_ENV = 'PIDSTATD_RESTARTS';
export const LAST_RESTART_ENV = 'PIDSTATD_LAST_RESTART';
/** A server that has not stopped this long after SIGTERM is killed. */
const STOP_GRACE_MS = 5000;

/** What a server tells its supervisor, which tells the command typed the first outcome. */
export type Outcome = { ready: string } | { error: string };
export type SupervisorMessage = Outcome | { notify: string[] };

/** Restarts of this daemon's server by its supervisor, and why the last server ended; none in the foreground. */
export interface Restarts {
  count: number;
  last: string | undefined;
}

export function restartsFrom(env: NodeJS.ProcessEnv): Restarts {
  const count = Number(env[RESTARTS_ENV]);
  return { count: Number.isSafeInteger(count) && count > 0 ? count : 0, last: env[LAST_RESTART_ENV] || undefined };
}

/** What the supervisor needs of the command. */
export interface Supervision {
  /** Starts a server: a child with an IPC channel, told the restarts before it, its states relayed through us if `relay`. */
  startServer(restarts: Restarts, relay: boolean): ChildProcess;
  /** Where the supervisor's words go. */
  log(text: string, severity?: Severity): void;
  /** The pidfile the command typed wrote for us, removed at the end. */
  pidfile: string | undefined;
}

/**
 * Runs the server as a child and starts it again whenever it dies, each
 * failure logged with its reason, until SIGTERM or SIGINT, which stop it for
 * good at any moment, a restart delay included. SIGHUP and SIGUSR1 go on to
 * a server that has said it answers (its listeners for them are in place by
 * then); one that comes while none does is held, and passed on to the next
 * server once that one answers (pidstatd(8), SIGNALS). The first outcome
 * goes to the command that started us.
 */
export function supervise({ startServer, log, pidfile }: Supervision): Promise<'stopped' | 'failed'> {
  process.title = 'pidstatd';
  let stopping = false;
  let everReady = false;
  let child: ChildProcess | undefined;
  /** Whether `child` has said it answers: before, SIGHUP would end it and SIGUSR1 reach Node's own handler. */
  let childReady = false;
  /** SIGHUP and SIGUSR1 that came while no server answered, for the next one that does. */
  const held = new Set<NodeJS.Signals>();
  let restart: NodeJS.Timeout | undefined;
  const pace = new RestartPace();
  /** The wait before the server now due starts, while none runs. */
  let due = 0;
  const restarts: Restarts = { count: 0, last: undefined };
  // The command typed said why it cannot notify, if it cannot.
  const opened = openNotifier();
  const notifier = opened !== undefined && !('why' in opened) ? opened : undefined;
  return new Promise((resolve) => {
    const finish = (how: 'stopped' | 'failed') => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      process.off('SIGHUP', pass);
      process.off('SIGUSR1', pass);
      if (pidfile !== undefined) removePidfile(pidfile, process.pid);
      resolve(how);
    };
    const stop = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      clearTimeout(restart);
      log(`${sig}: stopping`);
      notifier?.stopping();
      const server = child;
      if (server === undefined) return finish('stopped');
      server.kill('SIGTERM');
      setTimeout(() => server.kill('SIGKILL'), STOP_GRACE_MS).unref();
    };
    const pass = (sig: NodeJS.Signals) => {
      if (child !== undefined && childReady) {
        child.kill(sig);
        return;
      }
      if (held.has(sig)) return;
      held.add(sig);
      const now = child !== undefined ? 'the server is starting' : `no server runs now (the next starts within ${due / 1000} s)`;
      log(`${sig}: ${now}; passed on once it answers`);
    };
    const passHeld = (server: ChildProcess) => {
      for (const sig of held) server.kill(sig);
      held.clear();
    };
    const start = () => {
      restart = undefined;
      const server = startServer(restarts, notifier !== undefined);
      const since = performance.now();
      let reason: string | undefined;
      child = server;
      childReady = false;
      server.on('error', (err) => (reason = err.message));
      server.on('message', (message: SupervisorMessage) => {
        if ('notify' in message) return notifier?.send(...message.notify);
        if ('error' in message) reason = message.error;
        if ('ready' in message && child === server) {
          childReady = true;
          passHeld(server);
        }
        if (everReady) return;
        everReady = 'ready' in message;
        if (process.connected) {
          process.send!(message);
          process.disconnect();
        }
      });
      // 'close', not 'exit': it comes after the server's last message.
      server.once('close', (code, signal) => {
        child = undefined;
        childReady = false;
        if (stopping) return finish('stopped');
        if (!everReady) return finish('failed');
        const delay = (due = pace.afterDeath(performance.now() - since));
        const how = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
        restarts.count++;
        restarts.last = `server pid ${server.pid} ${how}${reason !== undefined ? ` (${reason})` : ''} at ${timeOfDay(Date.now())}`;
        log(`server pid ${server.pid} ${how}${reason !== undefined ? ` (${reason})` : ''}; starting another in ${delay / 1000} s`, 'err');
        restart = setTimeout(start, delay);
      });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', pass);
    process.on('SIGUSR1', pass);
    start();
  });
}
