import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { parseAllow } from '../daemon/allow.js';
import { DEFAULT_RATE, type ServerOptions } from '../daemon/server.js';
import type { CommandSpec, OptionTable, Values } from './args.js';
import { CommandError } from './errors.js';
import { ioFrom, keyFileFrom, keyFileOption, parseInteger, portFrom, portOption } from './options.js';

/**
 * pidstatd's command line and environment (pidstatd(8), OPTIONS): its option
 * table, and the configuration read from them, checked before anything
 * starts, with relative paths read against the user's directory in every
 * role.
 */

export const ROLE_ENV = 'PIDSTATD_ROLE';
/** The directory the user started pidstatd in: the roles work in /, and read relative paths against it. */
export const CWD_ENV = 'PIDSTATD_CWD';
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

export interface DaemonConfig {
  server: ServerOptions;
  foreground: boolean;
  pidfile: string | undefined;
  metricsFile: string | undefined;
  debug: boolean;
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
export function userDirectory(): string {
  return process.env[ROLE_ENV] === undefined ? process.cwd() : process.env[CWD_ENV] ?? '/';
}

export function readConfig(args: Values<typeof SPEC.options>): DaemonConfig {
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

