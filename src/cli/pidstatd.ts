import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { CommandError, ExitCode } from '../errors.js';
import { defaultPort, joinHostPort } from '../host.js';
import { loadUdpBatch } from '../native.js';
import { DEFAULT_RATE, parseAllow, startServer, type ServerOptions } from '../server.js';
import { parseArgs, type CommandSpec, type OptionTable, type Values } from './args.js';
import { ioFrom, parseInteger, portFrom, portOption } from './options.js';
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
 * - the supervisor runs the server as its child and restarts it if it dies.
 *
 * The roles talk over Node's IPC channel; ROLE_ENV tells a child its role.
 */

const ROLE_ENV = 'PIDSTATD_ROLE';
/** Wait before restarting a server that died: well inside the 2 s promised. */
const RESTART_DELAY_MS = 500;

type Message = { ready: string } | { error: string };

const USAGE = `Usage: $0 [--port N] [--bind ADDR] [--foreground] [--allow CIDR,...]
                [--rate N] [--pidfile FILE] [--debug] [--version] [--help]

Answers pidstat's questions (IPC::Locker's pidstatd protocol) on UDP: does
process PID exist on this host? Detaches unless --foreground is given.`;

export const SPEC = {
  name: 'pidstatd',
  usage: USAGE,
  epilog: 'Exit status: 0 once the daemon answers (detached) or after SIGTERM/SIGINT (foreground); 1 if it cannot listen; 64 usage error.',
  options: {
    port: portOption(true),
    bind: { type: 'string', description: 'Listen on this address only (default :: dual-stack, else 0.0.0.0)' },
    foreground: { type: 'boolean', alias: 'nofork', description: 'Stay attached and log to stderr (what a service manager runs)' },
    allow: { type: 'string', array: true, description: 'Answer only clients in these CIDR ranges, comma-separated (default: everyone)' },
    rate: { type: 'string', description: `Requests answered per second per source address, 0 = no limit (default ${DEFAULT_RATE})` },
    pidfile: { type: 'string', description: 'Write the pid that SIGTERM stops to FILE; removed on exit' },
    debug: { type: 'boolean', description: 'Log each datagram and its fate' },
  },
} as const satisfies CommandSpec<OptionTable>;

interface DaemonConfig {
  server: ServerOptions;
  foreground: boolean;
  pidfile: string | undefined;
  debug: boolean;
}

function log(text: string): void {
  writeErr(`pidstatd: ${text}\n`);
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
    try {
      parseAllow(server.allow);
    } catch (err) {
      throw new CommandError(`--allow: ${(err as Error).message}`);
    }
  }
  if (args.rate !== undefined) server.rate = parseInteger(args.rate, '--rate', 0, 1_000_000_000);
  const fd = inheritedFd(process.env);
  if (fd !== undefined) server.fd = fd;
  const io = ioFrom(process.env);
  if (io !== undefined) server.io = io;
  return { server, foreground: args.foreground === true, pidfile: args.pidfile, debug: args.debug === true };
}

export async function main(argv: string[]): Promise<number> {
  const args = await parseArgs(SPEC, argv);
  if (args === undefined) return 0;
  if (args.words.length > 0) throw new CommandError(`unexpected argument '${args.words[0]}'`);
  const config = readConfig(args);
  const role = process.env[ROLE_ENV];
  if (role === 'supervisor') return supervise(argv, config);
  if (role === 'server') return serve(config, (message) => process.send?.(message));
  warnIfNotRoot();
  return config.foreground ? serve(config) : detach(argv, config.pidfile);
}

/** Why the addon is not in use, when it was not turned off on purpose. */
function batchMissing(): string {
  const why = loadUdpBatch().why;
  return why === undefined ? '' : ` (${why})`;
}

function warnIfNotRoot(): void {
  if (process.getuid?.() !== 0) {
    log(`warning: not running as root (uid ${process.getuid?.()}): other users' processes are judged by /proc`);
  }
}

/** Serves until SIGTERM or SIGINT. `report` tells a supervisor the outcome of the bind. */
async function serve(config: DaemonConfig, report?: (message: Message) => void): Promise<number> {
  const options: ServerOptions = { ...config.server, onError: (err) => log(`socket error: ${err.message}`) };
  if (config.debug) options.onDatagram = (from, text, fate) => log(`${from} ${JSON.stringify(text)}: ${fate}`);
  let server;
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
  if (!report) {
    try {
      writePidfile(config.pidfile, process.pid);
    } catch (err) {
      await server.close();
      throw err;
    }
  }
  const where = describeAddress(server.address());
  log(`listening on ${where}`);
  if (config.debug) {
    log(server.io === 'batch' ? 'reading datagrams in batches (recvmmsg, sendmmsg)' : `reading datagrams through Node's dgram${batchMissing()}`);
  }
  report?.({ ready: where });
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
    if (report) process.once('disconnect', () => resolve('the supervisor is gone'));
  });
  log(`${why}: stopping`);
  await server.close();
  if (report) process.disconnect?.();
  else removePidfile(config.pidfile);
  const { stats } = server;
  log(`stopped: ${stats.received} received, ${stats.answered} answered, ${stats.malformed} malformed, ${stats.denied} denied, ${stats.limited} over the rate`);
  return 0;
}

function writePidfile(file: string | undefined, pid: number): void {
  if (file === undefined) return;
  try {
    writeFileSync(file, `${pid}\n`);
  } catch (err) {
    throw new CommandError(`cannot write the pidfile ${file}: ${(err as Error).message}`, ExitCode.FAILURE);
  }
}

function removePidfile(file: string | undefined): void {
  if (file !== undefined) rmSync(file, { force: true });
}

/** Spawns this command again in another role, with an IPC channel and no terminal. */
function spawnRole(role: 'supervisor' | 'server', argv: string[], detached: boolean): ChildProcess {
  return spawn(process.execPath, [join(packageRoot(), 'bin', 'pidstatd.cjs'), ...argv], {
    cwd: '/',
    detached,
    env: { ...process.env, [ROLE_ENV]: role },
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
}

/** The command a user typed: start the supervisor and wait for its first word. */
async function detach(argv: string[], pidfile: string | undefined): Promise<number> {
  const supervisor = spawnRole('supervisor', argv, true);
  const outcome = await new Promise<Message>((resolve) => {
    supervisor.once('message', (message: Message) => resolve(message));
    supervisor.once('exit', (code, signal) => resolve({ error: `the daemon exited at start (${signal ?? `exit ${code}`})` }));
  });
  supervisor.disconnect();
  supervisor.unref();
  if ('error' in outcome) throw new CommandError(outcome.error, ExitCode.FAILURE);
  try {
    // Written here, where a failure can still be reported; the supervisor removes it.
    writePidfile(pidfile, supervisor.pid!);
  } catch (err) {
    supervisor.kill('SIGTERM');
    throw err;
  }
  log(`listening on ${outcome.ready}, detached as pid ${supervisor.pid}`);
  return 0;
}

/**
 * Runs the server as a child and starts it again whenever it dies, until
 * SIGTERM or SIGINT; the first outcome goes to the command that started us.
 */
function supervise(argv: string[], config: DaemonConfig): Promise<number> {
  process.title = 'pidstatd';
  let stopping = false;
  let everReady = false;
  let child: ChildProcess | undefined;
  return new Promise<number>((resolve) => {
    const stop = () => {
      stopping = true;
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      else finish(0);
    };
    const finish = (code: number) => {
      if (everReady) removePidfile(config.pidfile);
      resolve(code);
    };
    const start = () => {
      child = spawnRole('server', argv, false);
      child.on('message', (message: Message) => {
        if (everReady) return;
        everReady = 'ready' in message;
        process.send?.(message);
        process.disconnect();
      });
      child.once('exit', () => {
        if (stopping) finish(0);
        else if (!everReady) finish(ExitCode.FAILURE);
        else setTimeout(start, RESTART_DELAY_MS);
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    start();
  });
}

export const run = (): void => runCli('pidstatd', main);
