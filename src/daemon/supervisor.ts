import type { ChildProcess } from 'node:child_process';
import { describeProblem, systemProblem, type Problem } from '../sys/problems.js';
import { timeOfDay } from '../sys/time.js';
import { openNotifier, type Notifier } from './notify.js';
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
export type Outcome = { ready: string } | { problem: Problem };
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
export function supervise(supervision: Supervision): Promise<'stopped' | 'failed'> {
  process.title = 'pidstatd';
  return new Promise((resolve) => new Supervisor(supervision, resolve).start());
}

class Supervisor {
  private stopping = false;
  private everReady = false;
  private child: ChildProcess | undefined;
  /** Whether `child` has said it answers: before, SIGHUP would end it and SIGUSR1 reach Node's own handler. */
  private childReady = false;
  /** SIGHUP and SIGUSR1 that came while no server answered, for the next one that does. */
  private readonly held = new Set<NodeJS.Signals>();
  private restart: NodeJS.Timeout | undefined;
  private readonly pace = new RestartPace();
  /** The wait before the server now due starts, while none runs. */
  private due = 0;
  private readonly restarts: Restarts = { count: 0, last: undefined };
  private readonly notifier: Notifier | undefined;

  constructor(
    private readonly supervision: Supervision,
    private readonly resolve: (how: 'stopped' | 'failed') => void,
  ) {
    // The command typed said why it cannot notify, if it cannot.
    const opened = openNotifier();
    this.notifier = opened !== undefined && !('problem' in opened) ? opened : undefined;
    process.on('SIGTERM', this.stop);
    process.on('SIGINT', this.stop);
    process.on('SIGHUP', this.pass);
    process.on('SIGUSR1', this.pass);
  }

  /** Starts a server, and another each time one dies, after the pace's wait. */
  readonly start = (): void => {
    this.restart = undefined;
    const server = this.supervision.startServer(this.restarts, this.notifier !== undefined);
    const since = performance.now();
    let reason: string | undefined;
    this.child = server;
    this.childReady = false;
    server.on('error', (err) => (reason = describeProblem(systemProblem(err, 'cannot start the server'))));
    server.on('message', (message: SupervisorMessage) => {
      if ('problem' in message) reason = describeProblem(message.problem);
      this.heard(server, message);
    });
    // 'close', not 'exit': it comes after the server's last message.
    server.once('close', (code, signal) => {
      this.child = undefined;
      this.childReady = false;
      if (this.stopping) return this.finish('stopped');
      if (!this.everReady) return this.finish('failed');
      const delay = (this.due = this.pace.afterDeath(performance.now() - since));
      const how = `${signal !== null ? `was killed by ${signal}` : `exited with status ${code}`}${reason !== undefined ? ` (${reason})` : ''}`;
      this.restarts.count++;
      this.restarts.last = `server pid ${server.pid} ${how} at ${timeOfDay(Date.now())}`;
      this.supervision.log(`server pid ${server.pid} ${how}; starting another in ${delay / 1000} s`, 'err');
      this.restart = setTimeout(this.start, delay);
    });
  };

  /** A server's word: states for the service manager, that it answers, or why it cannot; the first outcome goes to the command typed. */
  private heard(server: ChildProcess, message: SupervisorMessage): void {
    if ('notify' in message) return this.notifier?.send(...message.notify);
    if ('ready' in message && this.child === server) {
      this.childReady = true;
      for (const sig of this.held) server.kill(sig);
      this.held.clear();
    }
    if (this.everReady) return;
    this.everReady = 'ready' in message;
    if (process.connected) {
      process.send!(message);
      process.disconnect();
    }
  }

  private readonly stop = (sig: NodeJS.Signals): void => {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.restart);
    this.supervision.log(`${sig}: stopping`);
    this.notifier?.stopping();
    const server = this.child;
    if (server === undefined) return this.finish('stopped');
    server.kill('SIGTERM');
    setTimeout(() => server.kill('SIGKILL'), STOP_GRACE_MS).unref();
  };

  private readonly pass = (sig: NodeJS.Signals): void => {
    if (this.child !== undefined && this.childReady) {
      this.child.kill(sig);
      return;
    }
    if (this.held.has(sig)) return;
    this.held.add(sig);
    const now = this.child !== undefined ? 'the server is starting' : `no server runs now (the next starts within ${this.due / 1000} s)`;
    this.supervision.log(`${sig}: ${now}; passed on once it answers`);
  };

  private finish(how: 'stopped' | 'failed'): void {
    process.off('SIGTERM', this.stop);
    process.off('SIGINT', this.stop);
    process.off('SIGHUP', this.pass);
    process.off('SIGUSR1', this.pass);
    if (this.supervision.pidfile !== undefined) removePidfile(this.supervision.pidfile, process.pid);
    this.resolve(how);
  }
}
