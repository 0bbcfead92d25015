import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
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
import { NOTIFY_ENV, notifierFrom, openNotifier, startHeartbeat, STATUS_INTERVAL_MS, watchdogIntervalMs, type Notifier } from '../daemon/notify.js';
import { printable } from '../wire/printable.js';
import { pidfileOwner, removePidfile, writePidfile } from '../daemon/pidfile.js';
import { LAST_RESTART_ENV, RESTARTS_ENV, restartsFrom, supervise, type Outcome, type Restarts, type SupervisorMessage } from '../daemon/supervisor.js';
import { parseAllow } from '../daemon/allow.js';
import { DEFAULT_RATE, startServer, type Server, type ServerOptions, type ServerStats } from '../daemon/server.js';
import { openSyslog, SYSLOG_SOCKET, type Severity } from '../daemon/syslog.js';
import { parseArgs, type CommandSpec, type OptionTable, type Values } from './args.js';
import { ioFrom, keyFileFrom, keyFileOption, parseInteger, portFrom, portOption, readVersion } from './options.js';
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

const ROLE_ENV = 'PIDSTATD_ROLE';
/** The directory the user started pidstatd in: the roles work in /, and read relative paths against it. */
const CWD_ENV = 'PIDSTATD_CWD';
/** Set for a server whose supervisor sends its states to the service manager: they go over IPC. */
const RELAY_ENV = 'PIDSTATD_NOTIFY_RELAY';
/** Not documented, for tests: the STATUS= and metrics file intervals, in ms. */
const INTERVAL_ENV = 'PIDSTATD_TEST_INTERVAL_MS';
const USAGE = `Usage: $0 [--port N] [--bind ADDR] [--foreground] [--allow CIDR,...]
                [--rate N] [--pidfile FILE] [--key-file FILE] [--metrics-file FILE]
                [--debug] [--version] [--help]

Answers pidstat's questions (IPC::Locker's pidstatd protocol) on UDP: does
process PID exist on this host? Detaches unless --foreground is given.`;

export const SPEC = {
  name: 'pidstatd',
  usage: USAGE,
  epilog: 'Exit status: 0 once the daemon answers (detached) or after SIGTERM/SIGINT (foreground); 1 if it cannot listen; 64 usage error.',
  options: {
    port: portOption(true),
    'key-file': keyFileOption(true),
    bind: { type: 'string', description: 'Listen on this address only (default :: dual-stack, else 0.0.0.0)' },
    foreground: { type: 'boolean', description: 'Stay attached and log to stderr (what a service manager runs)' },
    // IPC::Locker's pidstatd spells --foreground `--nofork` (Getopt::Long's `fork!`), hence `--no-fork` too.
    fork: { type: 'boolean', description: 'Detach (the default); --no-fork and --nofork, as in IPC::Locker, are --foreground', negatedDescription: 'Stay attached, as --foreground (IPC::Locker\'s --nofork)' },
    allow: { type: 'string', array: true, description: 'Answer only clients in these CIDR ranges, comma-separated (default: everyone)' },
    rate: { type: 'string', description: `Requests answered per second per source address, 0 = no limit (default ${DEFAULT_RATE})` },
    pidfile: { type: 'string', description: 'Write the pid that SIGTERM stops to FILE; removed on exit' },
    push: { type: 'boolean', default: true, description: 'Tell subscribers of a watched death at once (doc/protocol.md, Death notices)', negatedDescription: 'Answer no subscription, as an old daemon: clients poll' },
    'max-subscriptions': { type: 'string', description: 'Subscriptions to death notices kept at most (default 100000)' },
    'max-subscriptions-per-source': { type: 'string', description: 'Subscriptions kept at most from one source network (default 10000)' },
    'source-prefix-v4': { type: 'string', description: 'IPv4 clients in one /N count as one source, 0-32; 127.0.0.0/8 is always one (default 32)' },
    'source-prefix-v6': { type: 'string', description: 'IPv6 clients in one /N count as one source, 0-128 (default 64)' },
    'metrics-file': { type: 'string', description: 'Write the counters to FILE every 15 s and at stop, in the Prometheus text format (node_exporter textfile collector)' },
    debug: { type: 'boolean', description: 'Log each datagram and its fate' },
  },
} as const satisfies CommandSpec<OptionTable>;

interface DaemonConfig {
  server: ServerOptions;
  foreground: boolean;
  pidfile: string | undefined;
  metricsFile: string | undefined;
  debug: boolean;
}

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

/** The error text a user reads when the socket cannot be had. */
function bindFailure(err: NodeJS.ErrnoException, config: ServerOptions): string {
  const reasons: Record<string, string> = {
    EADDRINUSE: 'address already in use',
    EACCES: 'permission denied',
    EADDRNOTAVAIL: 'address not available on this host',
    EAFNOSUPPORT: 'address family not supported',
  };
  const reason = (err.code && reasons[err.code]) ?? err.message;
  const where = config.fd !== undefined ? `inherited descriptor ${config.fd}`
    : `${config.bind ?? '::'} port ${config.port ?? defaultPort()}`;
  return `cannot listen on ${where}: ${reason}`;
}

/**
 * The socket a service manager handed over (sd_listen_fds(3)): fd 3 when
 * LISTEN_PID is this process and LISTEN_FDS is at least 1.
 * @see https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html
 */
function inheritedFd(env: NodeJS.ProcessEnv): number | undefined {
  if (env['LISTEN_PID'] !== String(process.pid)) return undefined;
  return Number(env['LISTEN_FDS']) >= 1 ? 3 : undefined;
}

/** Where relative paths (--pidfile, --key-file, --metrics-file) are read from: the user's directory, in the roles too, which work in /. */
function userDirectory(): string {
  return process.env[ROLE_ENV] === undefined ? process.cwd() : process.env[CWD_ENV] ?? '/';
}

function readConfig(args: Values<typeof SPEC.options>): DaemonConfig {
  const server: ServerOptions = {};
  const port = portFrom(args.port, process.env, true);
  if (port !== undefined) server.port = port;
  if (args.bind !== undefined) {
    if (isIP(args.bind) === 0) throw new CommandError(`--bind needs an IPv4 or IPv6 address, not '${args.bind}'`);
    server.bind = args.bind;
  }
  if (args.allow !== undefined) {
    server.allow = args.allow.flatMap((list) => list.split(',')).filter((range) => range !== '');
    // Taken for "no list", an empty one would answer everyone: the opposite of what was asked.
    if (server.allow.length === 0) throw new CommandError('--allow needs at least one CIDR range (such as 10.0.0.0/8); leave it out to answer everyone');
    try {
      parseAllow(server.allow);
    } catch (err) {
      throw new CommandError(`--allow: ${(err as Error).message}`);
    }
  }
  const keyFile = keyFileFrom(args['key-file'], process.env, userDirectory());
  if (keyFile !== undefined) {
    server.keyFile = keyFile.file;
    server.keys = keyFile.keys;
  }
  if (args.rate !== undefined) server.rate = parseInteger(args.rate, '--rate', 0, 1_000_000_000);
  if (args.push === false) server.push = false;
  if (args['max-subscriptions'] !== undefined) server.maxSubscriptions = parseInteger(args['max-subscriptions'], '--max-subscriptions', 0, 10_000_000);
  if (args['max-subscriptions-per-source'] !== undefined) {
    server.maxSubscriptionsPerSource = parseInteger(args['max-subscriptions-per-source'], '--max-subscriptions-per-source', 0, 10_000_000);
  }
  if (args['source-prefix-v4'] !== undefined) server.sourcePrefixV4 = parseInteger(args['source-prefix-v4'], '--source-prefix-v4', 0, 32);
  if (args['source-prefix-v6'] !== undefined) server.sourcePrefixV6 = parseInteger(args['source-prefix-v6'], '--source-prefix-v6', 0, 128);
  const fd = inheritedFd(process.env);
  if (fd !== undefined) server.fd = fd;
  const io = ioFrom(process.env);
  if (io !== undefined) server.io = io;
  if (args.pidfile === '') throw new CommandError('--pidfile needs a file name');
  const pidfile = args.pidfile === undefined ? undefined : resolve(userDirectory(), args.pidfile);
  if (args['metrics-file'] === '') throw new CommandError('--metrics-file needs a file name');
  const metricsFile = args['metrics-file'] === undefined ? undefined : resolve(userDirectory(), args['metrics-file']);
  return { server, foreground: args.foreground === true || args.fork === false, pidfile, metricsFile, debug: args.debug === true };
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
    const message = bindFailure(err as NodeJS.ErrnoException, config.server);
    report?.({ error: message });
    throw new CommandError(message, ExitCode.FAILURE);
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
  if (opened === undefined || !('why' in opened)) return opened;
  log(`warning: ${NOTIFY_ENV} is set, but ${who} cannot notify the service manager (a Type=notify start times out; use Type=simple): ${opened.why}`, 'warning');
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
    throw new CommandError(`cannot write the pidfile ${file}: ${(err as Error).message}`, ExitCode.FAILURE);
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
    supervisor.once('exit', (code, signal) => resolve({ error: `the daemon exited at start (${signal ?? `exit ${code}`})` }));
  });
  // Gone already (killed at start): its channel is closed, and there is nothing to let go of.
  if (supervisor.connected) supervisor.disconnect();
  supervisor.unref();
  if ('error' in outcome) throw new CommandError(outcome.error, ExitCode.FAILURE);
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
    if ('why' in syslog) log(`warning: the detached daemon cannot log to ${SYSLOG_SOCKET}, its log is lost: ${syslog.why}`, 'warning');
  } else {
    // Said once, here, on the terminal: the daemon's own stderr is /dev/null.
    log(`warning: there is no ${SYSLOG_SOCKET} here: the detached daemon has nowhere to log (--foreground logs to stderr)`, 'warning');
  }
  log(`listening on ${outcome.ready}, detached as pid ${supervisor.pid}`);
  return 0;
}

export const run = (): void => runCli('pidstatd', main);
