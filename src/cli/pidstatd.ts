import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { closeInheritedDescriptors } from '../sys/descriptors.js';
import { packageRoot } from '../sys/paths.js';
import { CommandError, ExitCode } from './errors.js';
import { joinHostPort } from '../wire/address.js';
import { defaultPort } from '../net/host.js';
import { describeFileLimit, fileLimit } from '../sys/filelimit.js';
import { DAEMON_HEAP_OPTION } from '../daemon/heap.js';
import { startMetricsFile, type MetricsFile } from '../daemon/metrics.js';
import { INSPECT_PORT_OPTION } from '../daemon/inspector.js';
import { loadLinuxCalls } from '../sys/native.js';
import { describeProblem, errnoOf, systemProblem, type Problem } from '../sys/problems.js';
import { NOTIFY_ENV, notifierFrom, openNotifier, startHeartbeat, STATUS_INTERVAL_MS, watchdogIntervalMs, type Notifier } from '../daemon/notify.js';
import { printable } from '../wire/printable.js';
import { pidfileOwner, removePidfile, writePidfile } from '../daemon/pidfile.js';
import { LAST_RESTART_ENV, RESTARTS_ENV, restartsFrom, supervise, type Outcome, type Restarts, type SupervisorMessage } from '../daemon/supervisor.js';
import { startServer, type Server, type ServerOptions, type ServerStats } from '../daemon/server.js';
import { openSyslog, SYSLOG_SOCKET, type Severity } from '../daemon/syslog.js';
import { parseArgs } from './args.js';
import { readVersion } from './options.js';
import { CWD_ENV, readConfig, ROLE_ENV, SPEC, userDirectory, type DaemonConfig } from './pidstatd-config.js';
import { runCli } from './runner.js';
import { writeErr } from './stdio.js';

/**
 * pidstatd: the daemon. Three roles share this module:
 *
 * - foreground (`--foreground`, or what a service manager runs): serves and
 *   logs to stderr;
 * - detached (the default): the command the user typed starts a supervisor in
 *   a new session and waits for its word that the server listens, or why it
 *   cannot;
 * - the supervisor runs the server as its child and restarts it if it dies
 *   (daemon/supervisor.ts).
 *
 * The roles talk over Node's IPC channel; ROLE_ENV tells a child its role.
 * A detached daemon logs to syslog; the others to stderr.
 *
 * Under a service manager (NOTIFY_SOCKET, notify.ts), every state comes from
 * the process it watches: the foreground daemon itself; when detached, the
 * command typed says READY=1 with MAINPID= the supervisor, and the supervisor
 * sends on what its server says (STATUS=, WATCHDOG=1: the pings come from
 * the loop that answers), so `NotifyAccess=main` does for both shapes.
 */

export { SPEC } from './pidstatd-config.js';

/** Set for a server whose supervisor sends its states to the service manager: they go over IPC. */
const RELAY_ENV = 'PIDSTATD_NOTIFY_RELAY';
/** Not documented, for tests: the STATUS= and metrics file intervals, in ms. */
const INTERVAL_ENV = 'PIDSTATD_TEST_INTERVAL_MS';
type Sink = (text: string, severity: Severity) => void;

const toStderr: Sink = (text) => {
  try {
    writeErr(`pidstatd: ${text}\n`);
  } catch {
    // A log that cannot be written (a full disk, a closed stderr) never stops the daemon.
  }
};

let sink: Sink = toStderr;

function log(text: string, severity: Severity = 'info'): void {
  sink(text, severity);
}

/** A detached daemon's log goes to syslog where there is one (its stderr is /dev/null). */
function logToSyslog(): void {
  const opened = openSyslog('pidstatd');
  if ('syslog' in opened) sink = (text, severity) => opened.syslog.log(text, severity);
}

/** Every counter, named as ServerStats names it: "received 3, answered 2, ..., restarts 1 (the last: ...)". */
function describeStats(stats: ServerStats, restarts: Restarts = { count: 0, last: undefined }): string {
  const counters = Object.entries(stats).map(([name, value]) => `${name} ${value}`);
  counters.push(`restarts ${restarts.count}${restarts.last === undefined ? '' : ` (the last: ${restarts.last})`}`);
  return counters.join(', ');
}

function describeAddress(address: AddressInfo): string {
  return joinHostPort(address.address, address.port);
}

/** Why the socket cannot be had. */
function bindFailure(err: unknown, config: ServerOptions): Problem {
  const { code, message } = errnoOf(err);
  const where = config.fd !== undefined ? `inherited descriptor ${config.fd}`
    : `${config.bind ?? '::'} port ${config.port ?? defaultPort()}`;
  return { kind: 'cannot-listen', where, code, message };
}

export async function main(argv: string[]): Promise<number> {
  const args = await parseArgs(SPEC, argv);
  if (args === undefined) return 0;
  if (args.words.length > 0) throw new CommandError(`unexpected argument '${args.words[0]}'`);
  const config = readConfig(args);
  const role = process.env[ROLE_ENV];
  if (role === 'supervisor' || role === 'server') {
    logToSyslog();
    if (role === 'supervisor') {
      const how = await supervise({ startServer: (restarts, relay) => spawnRole('server', argv, false, relay, restarts), log, pidfile: config.pidfile });
      return how === 'stopped' ? 0 : ExitCode.FAILURE;
    }
    return serve({ ...config, pidfile: undefined }, (message) => process.send?.(message));
  }
  warnIfNotRoot();
  if (config.pidfile !== undefined) refuseLivePidfile(config.pidfile);
  return config.foreground ? serve(config) : detach(argv, config.pidfile);
}

/** Why the addon is not in use, when it was not turned off on purpose. */
function batchMissing(): string {
  const why = loadLinuxCalls().why;
  return why === undefined ? '' : ` (${why})`;
}

function warnIfNotRoot(): void {
  if (process.getuid?.() !== 0) {
    log(`warning: not running as root (uid ${process.getuid?.()}): other users' processes are still seen (kill() says EPERM: they exist), but where /proc hides them (hidepid) their start tokens cannot be read, so answers about them carry none and their subscriptions are refused (the subscribers poll)`, 'warning');
  }
}

/**
 * Serves until SIGTERM or SIGINT; SIGHUP and SIGUSR1 never stop it, not
 * even while it starts. `report` tells a supervisor the outcome of the bind.
 */
async function serve(config: DaemonConfig, report?: (message: SupervisorMessage) => void): Promise<number> {
  const options: ServerOptions = { ...config.server, onError: (err) => log(`socket error: ${err.message}`), onWarning: (text) => log(text, 'warning') };
  if (config.debug) options.onDatagram = (from, text, fate) => log(`${from} "${printable(text)}": ${fate}`);
  let server: Server | undefined;
  const restarts = restartsFrom(process.env);
  process.on('SIGHUP', () => server !== undefined && reloadOnHangup(server));
  process.on('SIGUSR1', () => server !== undefined && log(`counters: ${describeStats(server.stats, restarts)}`));
  if (config.debug && config.server.push !== false) log(describeFileLimit(fileLimit()));
  const startedAt = Date.now();
  try {
    server = await startServer(options);
  } catch (err) {
    const problem = bindFailure(err, config.server);
    report?.({ problem });
    throw new CommandError(describeProblem(problem), ExitCode.FAILURE);
  }
  // A supervised server is only a child: the supervisor owns the pidfile.
  // Written once the port is ours, so a daemon refused for a busy port never
  // touches the pidfile of the one that holds it.
  if (config.pidfile !== undefined) {
    try {
      writeOwnPidfile(config.pidfile, process.pid);
    } catch (err) {
      await server.close();
      throw err;
    }
  }
  // Listened for before the line that says it listens: a SIGTERM sent on that line stops it cleanly.
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
    if (report) process.once('disconnect', () => resolve('the supervisor is gone'));
  });
  const where = describeAddress(server.address());
  log(`listening on ${where}`);
  if (config.debug) {
    log(server.io === 'batch' ? 'reading datagrams in batches (recvmmsg, sendmmsg)' : `reading datagrams through Node's dgram${batchMissing()}`);
  }
  const metrics = config.metricsFile === undefined ? undefined : writeMetrics(config.metricsFile, server, startedAt, restarts.count);
  // The server answers from here on: its socket is bound and read.
  report?.({ ready: where });
  const running = server;
  const status = () => `answering on ${where}; ${describeStats(running.stats, restarts)}`;
  const notifier = serviceNotifier(report);
  if (report === undefined) notifier?.ready(`STATUS=${status()}`);
  const heartbeat = notifier === undefined ? undefined : startHeartbeat(notifier, status, watchdogIntervalMs(), testInterval() ?? STATUS_INTERVAL_MS);
  const why = await stopped;
  log(`${why}: stopping`);
  heartbeat?.stop();
  // A supervised server that stops may be restarted: only its supervisor's stop is the service's.
  if (report === undefined) notifier?.stopping();
  await server.close();
  metrics?.stop();
  if (report) process.disconnect?.();
  if (config.pidfile !== undefined) removePidfile(config.pidfile, process.pid);
  // Every counter, named as in SIGUSR1's line and the metrics file; test/support/fuzzer.ts reads this line's words.
  log(`stopped: ${describeStats(server.stats, restarts)}`);
  return 0;
}

/**
 * Who tells the service manager a server's states: the foreground daemon
 * itself; a supervised server tells its supervisor (the process the service
 * manager watches), where the supervisor has a socket to send them on.
 */
function serviceNotifier(report?: (message: SupervisorMessage) => void): Notifier | undefined {
  if (report === undefined) return notifierFor('the daemon');
  return process.env[RELAY_ENV] === '1' ? notifierFrom((states) => process.connected && report({ notify: states })) : undefined;
}

/** The service manager's notifier where NOTIFY_SOCKET names one; where it cannot be reached, `who` says so once in the log. */
function notifierFor(who: string): Notifier | undefined {
  const opened = openNotifier();
  if (opened === undefined || !('problem' in opened)) return opened;
  log(`warning: ${NOTIFY_ENV} is set, but ${who} cannot notify the service manager (a Type=notify start times out; use Type=simple): ${describeProblem(opened.problem)}`, 'warning');
  return undefined;
}

/** The test suite's short interval for STATUS= and the metrics file (PIDSTATD_TEST_INTERVAL_MS), if any. */
function testInterval(): number | undefined {
  const text = process.env[INTERVAL_ENV];
  return text !== undefined && /^[1-9][0-9]{0,6}$/.test(text) ? Number(text) : undefined;
}

/** --metrics-file: written now, every 15 s and at stop; a failure is logged and the daemon goes on. */
function writeMetrics(file: string, server: Server, startedAt: number, restarts: number): MetricsFile {
  if (!file.endsWith('.prom')) log(`warning: node_exporter's textfile collector reads only files named *.prom, not ${file}`, 'warning');
  return startMetricsFile({
    file,
    stats: () => server.stats,
    startedAt,
    restarts,
    build: { version: readVersion(), io: server.io },
    intervalMs: testInterval(),
    onError: (message) => log(message, 'warning'),
  });
}

/**
 * SIGHUP: the key file read again, without closing the socket (the original
 * restarts its server on HUP, which would drop the datagrams queued
 * meanwhile); a file that cannot be used leaves the keys as they were.
 */
function reloadOnHangup(server: Server): void {
  try {
    const count = server.reloadKeys();
    log(count === 0 ? 'SIGHUP: no key file to re-read' : `SIGHUP: ${count} ${count === 1 ? 'key' : 'keys'} read again`);
  } catch (err) {
    log(`SIGHUP: ${(err as Error).message}; keeping the keys read before`);
  }
}

/** A pidfile naming a live pidstatd belongs to it: starting another would take it over. */
function refuseLivePidfile(file: string): void {
  const owner = pidfileOwner(file);
  if (owner !== undefined) {
    throw new CommandError(`the pidfile ${file} names pidstatd pid ${owner}, which is running: stop it, or give another --pidfile`, ExitCode.FAILURE);
  }
}

function writeOwnPidfile(file: string, pid: number): void {
  try {
    writePidfile(file, pid);
  } catch (err) {
    throw new CommandError(describeProblem(systemProblem(err, `cannot write the pidfile ${file}`)), ExitCode.FAILURE);
  }
}

/**
 * Spawns this command again in another role, with an IPC channel and no
 * terminal, and with Node's inspector unable to open (src/daemon/inspector.ts): a
 * SIGUSR1 that reaches the new process before its first line of JavaScript,
 * when Node's own handler still answers it, opens nothing. Not with
 * --disable-sigusr1 (Node 22.14+): it leaves SIGUSR1 blocked in every
 * thread, so the role's own listener never hears it (Node 24.22).
 * The service manager's watchdog, where it is ours, is handed down
 * (WATCHDOG_PID names us, not the child); the supervisor keeps NOTIFY_SOCKET
 * (it becomes the main pid), and a server never has it: with `relay` its
 * states go to the supervisor.
 */
function spawnRole(role: 'supervisor' | 'server', argv: string[], detached: boolean, relay = false, restarts?: Restarts): ChildProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, [ROLE_ENV]: role, [CWD_ENV]: userDirectory() };
  delete env[RESTARTS_ENV];
  delete env[LAST_RESTART_ENV];
  if (restarts !== undefined && restarts.count > 0) env[RESTARTS_ENV] = String(restarts.count);
  if (restarts?.last !== undefined) env[LAST_RESTART_ENV] = restarts.last;
  if (watchdogIntervalMs() === undefined) delete env['WATCHDOG_USEC'];
  delete env['WATCHDOG_PID'];
  delete env[RELAY_ENV];
  if (role === 'server') delete env[NOTIFY_ENV];
  if (relay) env[RELAY_ENV] = '1';
  return spawn(process.execPath, [INSPECT_PORT_OPTION, DAEMON_HEAP_OPTION, join(packageRoot(), 'bin', 'pidstatd.cjs'), ...argv], {
    cwd: '/',
    detached,
    env,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
}

/** The command a user typed: start the supervisor and wait for its first word. */
async function detach(argv: string[], pidfile: string | undefined): Promise<number> {
  closeInheritedDescriptors();
  const supervisor = spawnRole('supervisor', argv, true);
  const outcome = await new Promise<Outcome>((resolve) => {
    supervisor.once('message', (message: Outcome) => resolve(message));
    supervisor.once('exit', (code, signal) => resolve({ problem: { kind: 'exited-at-start', how: signal ?? `exit ${code}` } }));
  });
  // Gone already (killed at start): its channel is closed, and there is nothing to let go of.
  if (supervisor.connected) supervisor.disconnect();
  supervisor.unref();
  if ('problem' in outcome) throw new CommandError(describeProblem(outcome.problem), ExitCode.FAILURE);
  if (pidfile !== undefined) {
    try {
      // Written here, where a failure can still be reported; the supervisor removes it.
      writeOwnPidfile(pidfile, supervisor.pid!);
    } catch (err) {
      // Gone before the failure is told: a start that failed leaves nothing answering.
      if (supervisor.exitCode === null && supervisor.signalCode === null) {
        supervisor.ref();
        const gone = new Promise((resolve) => supervisor.once('exit', resolve));
        supervisor.kill('SIGTERM');
        await gone;
      }
      throw err;
    }
  }
  // The service manager watched this process: the supervisor is the daemon now, and it answers.
  notifierFor('the detached daemon')?.ready(`MAINPID=${supervisor.pid}`);
  if (existsSync(SYSLOG_SOCKET)) {
    const syslog = openSyslog('pidstatd');
    if ('problem' in syslog) log(`warning: the detached daemon cannot log to ${SYSLOG_SOCKET}, its log is lost: ${describeProblem(syslog.problem)}`, 'warning');
  } else {
    // Said once, here, on the terminal: the daemon's own stderr is /dev/null.
    log(`warning: there is no ${SYSLOG_SOCKET} here: the detached daemon has nowhere to log (--foreground logs to stderr)`, 'warning');
  }
  log(`listening on ${outcome.ready}, detached as pid ${supervisor.pid}`);
  return 0;
}

export const run = (): void => runCli('pidstatd', main);
