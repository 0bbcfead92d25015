import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { packageRoot } from '../sys/paths.js';
import { CommandError } from './errors.js';
import { KeyFileError, readKeyFile, type KeyRing } from '../wire/keys.js';
import { loadLinuxCalls } from '../sys/native.js';
import type { OptionSpec } from './args.js';

/**
 * What every command shares: the options all of them take and the parsers
 * of their values. Precedence: defaults < PIDSTAT_* environment < flags.
 */

export const ENV_PORT = 'PIDSTAT_PORT';
/** How sockets are read: auto, batch (the addon native/linux.c) or dgram (Node's); for testing and trouble. */
export const ENV_IO = 'PIDSTAT_IO';

export const ENV_KEY_FILE = 'PIDSTAT_KEY_FILE';

/** The `--key-file` option, shared by all commands. */
export function keyFileOption(daemon = false): OptionSpec {
  const what = daemon ? 'Answer only requests authenticated by a key of FILE; SIGHUP re-reads it'
    : 'Authenticate requests with the first key of FILE and accept only replies authenticated by it';
  return { type: 'string', description: `${what} (env ${ENV_KEY_FILE}; lines '<id> <hex secret>', mode 600)` };
}

/**
 * The key file from `--key-file`, else PIDSTAT_KEY_FILE, made absolute against
 * `cwd` and checked now, so that a file that cannot be used is a usage error
 * (64) before anything is sent; undefined when neither is given.
 */
export function keyFileFrom(flag: string | undefined, env: NodeJS.ProcessEnv, cwd = process.cwd()): { file: string; keys: KeyRing } | undefined {
  const given = flag ?? (env[ENV_KEY_FILE] === '' ? undefined : env[ENV_KEY_FILE]);
  if (given === undefined) return undefined;
  if (given === '') throw new CommandError('--key-file needs a file name');
  const file = resolve(cwd, given);
  try {
    return { file, keys: readKeyFile(file) };
  } catch (err) {
    if (err instanceof KeyFileError) throw new CommandError(err.message);
    throw err;
  }
}

/** PIDSTAT_IO, checked (batch only where the addon was built); undefined when unset. */
export function ioFrom(env: NodeJS.ProcessEnv): 'auto' | 'batch' | 'dgram' | undefined {
  const io = env[ENV_IO];
  if (io === undefined || io === '') return undefined;
  if (io !== 'auto' && io !== 'batch' && io !== 'dgram') throw new CommandError(`${ENV_IO} must be auto, batch or dgram, not '${io}'`);
  const missing = io === 'batch' ? loadLinuxCalls().why : undefined;
  if (missing !== undefined) {
    throw new CommandError(`${ENV_IO}=batch, but the addon is not there (${missing}): build it with a C compiler (npm run build), or unset ${ENV_IO}`);
  }
  return io;
}

/** The package's version, read only when asked for. */
export function readVersion(): string {
  const pkg = join(packageRoot(), 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

/** The `--port` option, shared by all commands: the daemons' port, or for the daemon its own. */
export function portOption(daemon = false): OptionSpec {
  const what = daemon ? 'UDP port to listen on' : 'UDP port of the daemons';
  return {
    type: 'string',
    description: `${what} (env ${ENV_PORT}; default: the pidstatd entry of /etc/services, else 1752)${daemon ? '; 0 picks a free one' : ''}`,
  };
}

/** An integer from min to max; `what` names the value in the error. */
export function parseInteger(text: string, what: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new CommandError(`${what} must be a whole number from ${min} to ${max}, not '${text}'`);
  }
  return Number(text);
}

/** The port from `--port`, else PIDSTAT_PORT, else undefined (the default). */
export function portFrom(flag: string | undefined, env: NodeJS.ProcessEnv, allowZero = false): number | undefined {
  const min = allowZero ? 0 : 1;
  if (flag !== undefined) return parseInteger(flag, '--port', min, 65535);
  const fromEnv = env[ENV_PORT];
  if (fromEnv !== undefined && fromEnv !== '') return parseInteger(fromEnv, ENV_PORT, min, 65535);
  return undefined;
}

/**
 * The colour level of a stream: `--color`/`--no-color` first, then NO_COLOR
 * (any non-empty value turns colour off), then FORCE_COLOR, then whether the
 * stream is a terminal. chalk's own detection ignores NO_COLOR and reads the
 * whole process.argv, so it is not used.
 * @see https://no-color.org/
 */
export function colorLevel(flag: boolean | undefined, isTTY: boolean, env: NodeJS.ProcessEnv): 0 | 1 | 2 | 3 {
  const forced = env['FORCE_COLOR'];
  const forcedLevel = forced === undefined ? undefined
    : forced === '' || forced === 'true' ? 1
    : forced === 'false' ? 0
    : Math.min(3, Math.max(0, Number.parseInt(forced, 10) || 0)) as 0 | 1 | 2 | 3;
  if (flag === false) return 0;
  if (flag === true) return forcedLevel || 1;
  if (env['NO_COLOR']) return 0;
  if (forcedLevel !== undefined) return forcedLevel;
  return isTTY ? 1 : 0;
}
