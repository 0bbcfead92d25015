import { DEFAULT_TIMEOUT_MS, DEFAULT_TRIES, PidStatClient, type ClientOptions, type Result } from '../client/client.js';
import { parseDuration, UNIT_NEEDED } from './duration.js';
import { CommandError, ExitCode, isUsageExit } from './errors.js';
import { describeFailure, type Failure } from '../client/failures.js';
import { timeOfDay } from '../sys/time.js';
import { joinHostPort } from '../wire/address.js';
import { defaultPort } from '../net/host.js';
import { parseThresholds, PLUGIN_EXIT, pluginLine, statusOf, timePerfData } from './nagios.js';
import { FLAG_DEAD, FLAG_EXISTS, FLAG_UNKNOWN } from '../wire/protocol.js';
import type { WaitOptions, WaitTarget } from '../deaths/wait.js';
import { COMPLETION_QUESTION, parseArgs, readCommandLine, type CommandSpec, type OptionTable, type Values } from './args.js';
import { colorLevel, ioFrom, keyFileFrom, keyFileOption, parseInteger, portFrom, portOption } from './options.js';
import { Output } from './output.js';
import { runCli } from './runner.js';
import { isTerminal, writeErr, writeOut } from './stdio.js';
import { checkHost, checkPid, parseTargets, unbracket } from './targets.js';

const USAGE = `Usage:
  $0 [options] HOST PID [PID ...] [HOST PID ...]
  $0 [options] HOST:PID [HOST:PID ...]
  $0 [options] PID ...              (on --host, default localhost)
  $0 [options] exists TARGET ...    (the same, in IPC::Locker's spelling)
  $0 [options] ping [HOST]          (is the daemon on HOST answering?)
  $0 wait [-t SECONDS] [--any] TARGET ...   (see $0 wait --help)

Asks the pidstatd daemon on each HOST whether each PID exists, and prints
one line per target: HOST:PID exists|dead|unknown|no_reply.`;

const EPILOG = `Exit status: 0 every target exists; 1 a target is dead and all answered;
2 a target is unknown or got no reply; 64 usage error.
ping prints a monitoring-plugin line with performance data and exits
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (its usage errors too).`;

export const SPEC = {
  name: 'pidstat',
  usage: USAGE,
  epilog: EPILOG,
  commands: ['exists', 'ping', 'wait'],
  options: {
    host: { type: 'string', description: 'Host of the PIDs given alone (default localhost)' },
    port: portOption(),
    'key-file': keyFileOption(),
    timeout: { type: 'string', alias: 't', description: 'The most the whole run takes: seconds, or 500ms, 2m; a target still unanswered then is no_reply (default: as long as the tries take)' },
    'try-timeout': { type: 'string', description: 'Wait this long for a reply before asking again: seconds, or 500ms (default 1s)' },
    tries: { type: 'string', description: 'Requests per target, the first included (default 5)' },
    silent: { type: 'boolean', alias: 's', description: 'Print nothing; only the exit status tells' },
    json: { type: 'boolean', description: 'Print one JSON array of {host, pid, state, tries, ms, start?, error?}' },
    local: { type: 'boolean', default: true, description: 'Answer targets on this host without the daemon (--no-local asks it)', negatedDescription: 'Ask the daemon even about targets on this host (by default they are answered locally)' },
    debug: { type: 'boolean', description: 'Show each datagram sent and received, on stderr' },
    color: { type: 'boolean', description: 'Colour the states (default: when stdout is a terminal, unless NO_COLOR is set)', negatedDescription: 'Never colour the states' },
    warning: { type: 'string', alias: 'w', description: 'ping: WARNING (exit 1) when the answer takes longer than SECONDS' },
    critical: { type: 'string', alias: 'c', description: 'ping: CRITICAL (exit 2) when the answer takes longer than SECONDS' },
  },
} as const satisfies CommandSpec<OptionTable>;

const WAIT_USAGE = `Usage:
  $0 wait [-t SECONDS] [--any] [options] TARGET ...

Returns when every target has died, or the first with --any, and prints
HOST:PID dead for each death as it happens. TARGETs are written as for
pidstat: HOST:PID, HOST PID ..., or a PID on --host (default localhost).`;

const WAIT_EPILOG = `Exit status: 0 the targets died; 124 -t ran out first; 2 a host did not
answer for longer than --dead-after; 64 usage error. Without --dead-after,
a host that does not answer is waited for.`;

/** `pidstat wait` (pidstat(1), WAIT): its own options, as pwait's and waitpid's. */
export const WAIT_SPEC = {
  name: 'pidstat',
  usage: WAIT_USAGE,
  epilog: WAIT_EPILOG,
  options: {
    timeout: { type: 'string', alias: 't', description: 'Give up after this long (exit 124): seconds, or 500ms, 10m, 2h (default: never)' },
    any: { type: 'boolean', description: 'Return when the first target dies, not all of them' },
    'dead-after': { type: 'string', description: 'Silence from a host this long ends the wait with exit 2: 90s, 10m (a unit is needed; default: never)' },
    interval: { type: 'string', description: 'Time between two questions to a host: 500ms, 2s (a unit is needed; default 1s)' },
    host: SPEC.options.host,
    port: portOption(),
    'key-file': keyFileOption(),
    silent: { type: 'boolean', alias: 's', description: 'Print nothing; only the exit status tells' },
    json: { type: 'boolean', description: 'Print each death as one JSON line {host, pid, state, ms} as it happens' },
    local: SPEC.options.local,
    debug: SPEC.options.debug,
    color: SPEC.options.color,
  },
} as const satisfies CommandSpec<OptionTable>;

const PING_USAGE = `Usage:
  $0 ping [-H] HOST [-p PORT] [-t SECONDS] [-w SECONDS] [-c SECONDS] [--pid PID]

A monitoring check of the pidstatd daemon on HOST (default localhost):
asks it about a pid and prints one line a monitoring system reads, with
the response time as performance data. The options are the monitoring
plugins' usual ones, and check_pidstatd's (--hostname, --pid).`;

const PING_EPILOG = `Exit status: 0 OK, 1 WARNING (slower than -w), 2 CRITICAL (slower than
-c, or no answer within -t), 3 UNKNOWN (a usage error).`;

/** `pidstat ping` (pidstat(1), ping): a monitoring plugin's options, as the plugins' guidelines give them. */
export const PING_SPEC = {
  name: 'pidstat',
  usage: PING_USAGE,
  epilog: PING_EPILOG,
  options: {
    hostname: { type: 'string', alias: 'H', description: 'The daemon\'s host (or as the word after ping)' },
    host: SPEC.options.host,
    port: { ...portOption(), alias: 'p' },
    timeout: { type: 'string', alias: 't', description: 'The whole check\'s time: seconds, or 500ms (default 5); CRITICAL after it' },
    tries: { type: 'string', description: 'Questions within --timeout, the first included (default 5)' },
    'try-timeout': { type: 'string', description: 'Wait this long for an answer before asking again (default: --timeout\'s share of each try)' },
    warning: SPEC.options.warning,
    critical: SPEC.options.critical,
    pid: { type: 'string', description: 'Ask about this pid, not 1; any answer is the daemon\'s (check_pidstatd\'s --pid)' },
    'key-file': keyFileOption(),
    verbose: { type: 'boolean', alias: 'v', description: 'Show each datagram sent and received, on stderr (as --debug)' },
    debug: SPEC.options.debug,
    local: { type: 'boolean', default: true, description: 'Taken, and changes nothing: ping always asks the daemon', negatedDescription: 'Taken, and changes nothing: ping always asks the daemon' },
    version: { type: 'boolean', alias: 'V', description: 'Show the version and exit' },
  },
} as const satisfies CommandSpec<OptionTable>;

/** The first word that is neither an option nor an option's value, before the line is read by its own table. */
function firstWord(argv: readonly string[]): string | undefined {
  return readCommandLine(SPEC, argv, { lenient: true }).words[0];
}

/** The exit status for a list of results: grep's convention, 2 winning over 1. */
export function exitCodeFor(results: readonly Result[]): number {
  if (results.some((r) => r.state === 'unknown' || r.state === 'no_reply')) return ExitCode.NO_ANSWER;
  if (results.some((r) => r.state === 'dead')) return ExitCode.DEAD;
  return ExitCode.EXISTS;
}

function toJson(r: Result): Record<string, unknown> {
  const out: Record<string, unknown> = { host: r.host, pid: r.pid, state: r.state, tries: r.tries, ms: Math.round(r.ms * 10) / 10 };
  if (r.start !== undefined) out['start'] = r.start;
  if (r.failure !== undefined) out['error'] = describeFailure(r.failure);
  return out;
}

export async function main(argv: string[]): Promise<number> {
  // The completion script's question names the command line typed so far: its first word picks the table.
  const first = firstWord(argv[0] === COMPLETION_QUESTION ? argv.slice(2) : argv);
  if (first === 'ping') return checkDaemon(argv);
  if (first === 'wait') return waitForTargets(argv);
  const args = await parseArgs(SPEC, argv, ExitCode.USAGE);
  if (args === undefined) return 0;
  if (args.warning !== undefined || args.critical !== undefined) {
    throw new CommandError(`--${args.warning !== undefined ? 'warning' : 'critical'} is for ping: pidstat ping -w SECONDS -c SECONDS HOST`);
  }
  const { words } = args;
  const options = clientOptions(args, args.local === true);
  const output = await outputFor(args);
  const targets = parseTargets(words[0] === 'exists' ? words.slice(1) : words, args.host ?? 'localhost');
  const limitMs = args.timeout === undefined ? undefined : parseDuration(args.timeout, '--timeout');
  const client = new PidStatClient(options);
  if (options.onDebug) options.onDebug(client.io === 'batch' ? 'reading sockets in batches (recvmmsg)' : "reading sockets through Node's dgram");
  // The whole run's limit: what is still unanswered then ends as its last try would.
  const deadline = limitMs === undefined ? undefined : setTimeout(() => client.giveUp(), limitMs);
  try {
    const results = await output.whileWaiting(client.queryMany(targets), () => {
      const { missing, tryNo } = client.progress();
      return `waiting for ${missing} ${missing === 1 ? 'answer' : 'answers'} (try ${tryNo} of ${client.tries})`;
    });
    for (const r of results) {
      if (r.failure !== undefined) output.warn(`pidstat: ${joinHostPort(r.host, r.pid)}: ${describeFailure(r.failure)}`);
    }
    if (args.json) output.json(results.map(toJson));
    else output.results(results);
    return exitCodeFor(results);
  } finally {
    clearTimeout(deadline);
    await client.close();
  }
}

/** The client's options from the command line and PIDSTAT_* (a CommandError for a bad value). */
function clientOptions(args: Values<typeof SPEC.options>, local: boolean): ClientOptions {
  const options: ClientOptions = {
    port: portFrom(args.port, process.env) ?? defaultPort(),
    timeoutMs: args['try-timeout'] === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(args['try-timeout'], '--try-timeout'),
    tries: args.tries === undefined ? DEFAULT_TRIES : parseInteger(args.tries, '--tries', 1, 1000),
    local,
  };
  const keyFile = keyFileFrom(args['key-file'], process.env);
  if (keyFile !== undefined) options.keys = keyFile.keys;
  if (args.debug) options.onDebug = (line) => writeErr(`pidstat: ${line}\n`);
  const io = ioFrom(process.env);
  if (io !== undefined) options.io = io;
  return options;
}

function outputFor(args: { color?: boolean; silent?: boolean }): Promise<Output> {
  return Output.create({ color: colorLevel(args.color, isTerminal(1), process.env), silent: args.silent === true });
}

/**
 * `pidstat wait`: watches every target at once (wait.ts, through pidwatch's
 * way of learning a death) and prints each death as it is learned. Silence
 * never ends it with 0: it is waited for, or with --dead-after ends it with 2.
 */
async function waitForTargets(argv: string[]): Promise<number> {
  const args = await parseArgs(WAIT_SPEC, argv, ExitCode.USAGE);
  if (args === undefined) return 0;
  const targets = parseTargets(args.words.slice(1), args.host ?? 'localhost');
  const limitMs = args.timeout === undefined ? undefined : parseDuration(args.timeout, '-t');
  const { deaths, DEFAULT_INTERVAL_MS } = await import('../deaths/wait.js');
  const opts: WaitOptions = {
    port: portFrom(args.port, process.env) ?? defaultPort(),
    intervalMs: args.interval === undefined ? DEFAULT_INTERVAL_MS : parseDuration(args.interval, '--interval', UNIT_NEEDED),
    local: args.local === true,
  };
  if (args['dead-after'] !== undefined) opts.deadAfterMs = parseDuration(args['dead-after'], '--dead-after', UNIT_NEEDED);
  const keyFile = keyFileFrom(args['key-file'], process.env);
  if (keyFile !== undefined) opts.keys = keyFile.keys;
  if (args.debug) opts.onDebug = (line) => writeErr(`pidstat: ${line}\n`);
  const io = ioFrom(process.env);
  if (io !== undefined) opts.io = io;
  const output = await outputFor(args);
  const until = opts.deadAfterMs === undefined ? 'still waiting' : `waiting up to ${opts.deadAfterMs / 1000} s of silence (--dead-after)`;
  const reach = hostReach((line) => output.warn(line), until);
  opts.onReach = reach.changed;
  const timer = new AbortController();
  opts.signal = timer.signal;
  const deadline = limitMs === undefined ? undefined : setTimeout(() => timer.abort(), limitMs);
  try {
    for await (const end of deaths(targets, opts)) {
      if (end.state === 'silent') {
        output.warn(`pidstat: ${joinHostPort(end.host, end.pid)}: no answer from ${end.host} for ${opts.deadAfterMs! / 1000} s (--dead-after): giving up`);
        return ExitCode.NO_ANSWER;
      }
      // The host told of the death: it answers.
      reach.changed(end, undefined);
      if (args.json) output.line(JSON.stringify({ host: end.host, pid: end.pid, state: end.state, ms: Math.round(end.ms * 10) / 10 }));
      else output.results([{ host: end.host, pid: end.pid, state: end.state, tries: 0, ms: end.ms }]);
      if (args.any) break;
    }
    return ExitCode.EXISTS;
  } catch (err) {
    if (timer.signal.aborted && err === timer.signal.reason) return ExitCode.TIMED_OUT;
    throw err;
  } finally {
    clearTimeout(deadline);
  }
}

/**
 * What `pidstat wait` says of its hosts (pidstat(1), WAIT): one line when a
 * host stops answering, and one when it answers again, once per change
 * however many of its targets are watched. A host counts as not answering
 * from the first of its targets whose watch says so until the last of them
 * hears it again (or ends).
 */
function hostReach(warn: (line: string) => void, until: string) {
  const hosts = new Map<string, { failing: Set<number>; fellSilent: boolean }>();
  return {
    changed(target: WaitTarget, problem: Failure | undefined): void {
      let host = hosts.get(target.host);
      if (problem === undefined) {
        if (host === undefined || !host.failing.delete(target.pid) || host.failing.size > 0) return;
        warn(`pidstat: ${target.host} ${host.fellSilent ? 'answers again' : 'answers'}`);
        return;
      }
      if (host === undefined) hosts.set(target.host, (host = { failing: new Set(), fellSilent: false }));
      const first = host.failing.size === 0;
      host.failing.add(target.pid);
      if (!first) return;
      // A host that had answered says since when it is silent; one never heard says why.
      host.fellSilent = problem.kind === 'silence' && problem.since !== undefined;
      warn(problem.kind === 'silence' && problem.since !== undefined
        ? `pidstat: ${target.host} is not answering since ${timeOfDay(problem.since)}: ${until}`
        : `pidstat: ${target.host} is not answering (${describeFailure(problem)}): ${until}`);
    },
  };
}

/** What a monitoring system shows of the check. */
const SERVICE = 'PIDSTATD';

/**
 * `pidstat ping`, a monitoring plugin: every usage error of its own (the
 * command line, a value, the key file) is UNKNOWN, exit 3, on stdout where
 * Nagios reads it; with nothing there it would show "(No output)".
 * @see https://www.monitoring-plugins.org/doc/guidelines.html#AEN78
 */
async function checkDaemon(argv: string[]): Promise<number> {
  try {
    return await ping(argv);
  } catch (err) {
    if (!(err instanceof CommandError) || !isUsageExit(err.exitCode)) throw err;
    writeOut(`${pluginLine(SERVICE, 'UNKNOWN', err.message)}\n`);
    return PLUGIN_EXIT.UNKNOWN;
  }
}

/**
 * A monitoring check of the daemon on HOST: asks about pid 1 and takes any
 * answer as the daemon's, timed against the thresholds. Never answered
 * locally: it checks the daemon, not the process.
 * @see https://nagios-plugins.org/doc/guidelines.html#PLUGOUTPUT
 */
async function ping(argv: string[]): Promise<number> {
  const args = await parseArgs(PING_SPEC, argv, ExitCode.PLUGIN_UNKNOWN);
  if (args === undefined) return 0;
  const thresholds = parseThresholds(args.warning, args.critical);
  if (args.hostname !== undefined && args.words.length > 1) throw new CommandError(`ping takes one HOST: ${args.hostname} (-H) or ${args.words[1]}, not both`, ExitCode.PLUGIN_UNKNOWN);
  const host = pingHost(args.words.slice(1), args.hostname ?? args.host);
  const pid = args.pid === undefined ? 1 : checkPid(args.pid, '--pid ');
  const tries = args.tries === undefined ? DEFAULT_TRIES : parseInteger(args.tries, '--tries', 1, 1000);
  // The whole check's time, as a plugin's -t: each question waits its share.
  const totalMs = args.timeout === undefined ? DEFAULT_TIMEOUT_MS * DEFAULT_TRIES : parseDuration(args.timeout, '--timeout');
  const options = clientOptions({ port: args.port, 'key-file': args['key-file'], debug: args.debug === true || args.verbose === true, words: [], valueAt: {} }, false);
  options.tries = tries;
  options.timeoutMs = args['try-timeout'] === undefined ? Math.max(1, Math.floor(totalMs / tries)) : parseDuration(args['try-timeout'], '--try-timeout');
  const output = await outputFor({});
  const client = new PidStatClient(options);
  const where = joinHostPort(host, client.port);
  // The whole check's time, whatever --try-timeout makes of the tries.
  const deadline = setTimeout(() => client.giveUp(), totalMs);
  try {
    const result = await client.query({ host, pid, flags: FLAG_EXISTS | FLAG_DEAD | FLAG_UNKNOWN });
    if (result.state === 'no_reply') {
      // A name that does not resolve says so: silence would send the admin to the wrong host.
      const { failure } = result;
      const named = failure?.kind === 'unresolvable' || failure?.kind === 'unreachable';
      const text = named ? capitalized(describeFailure(failure)) : `No response from pidstatd on ${where}`;
      output.line(pluginLine(SERVICE, 'CRITICAL', text));
      return PLUGIN_EXIT.CRITICAL;
    }
    const seconds = result.ms / 1000;
    const status = statusOf(seconds, thresholds);
    output.line(pluginLine(SERVICE, status, `${seconds.toFixed(3)} second response on ${where}`, timePerfData(seconds, thresholds)));
    return PLUGIN_EXIT[status];
  } finally {
    clearTimeout(deadline);
    await client.close();
  }
}

function capitalized(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * ping's one HOST, written as for targets (`[::1]` too). HOST:PORT would be
 * asked as a host of that name: the port has its option, and the error says
 * how to write it.
 */
function pingHost(words: readonly string[], hostOption: string | undefined): string {
  if (words.length > 1) throw new CommandError(`ping takes one HOST, not ${words.length}`, ExitCode.PLUGIN_UNKNOWN);
  const word = words[0] ?? hostOption ?? 'localhost';
  // An IPv6 address has two colons at least; a host with a port, one (or a bracket before it).
  const withPort = /^\[([^\]]*)\]:(.*)$/.exec(word) ?? (word.startsWith('[') ? null : /^([^:]*):([^:]*)$/.exec(word));
  if (withPort) {
    const [, name, port] = withPort;
    const bare = word.startsWith('[') ? `[${name}]` : name;
    throw new CommandError(`'${word}': ping takes a HOST without a port; give the port with --port, as in pidstat --port ${port || 'N'} ping ${bare || 'HOST'}`, ExitCode.PLUGIN_UNKNOWN);
  }
  return checkHost(unbracket(word), word);
}

export const run = (): void => runCli('pidstat', main);
