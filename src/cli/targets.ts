import { CommandError } from './errors.js';
import { ipFamily } from '../wire/address.js';
import { COOKIE_LENGTH } from '../wire/cookie.js';
import { isValidHost, MAX_HOST_BYTES, parsePid } from '../wire/protocol.js';
import type { Target } from '../client/questions.js';

/** Signed, hex and exponent numbers: meant as pids, never host names. */
const LOOKS_NUMERIC = /^(?:[+-][0-9]+|0x[0-9a-f]+|[0-9]+(?:\.[0-9]+)?e[+-]?[0-9]+)$/i;

/**
 * Reads pidstat's target words (pidstat(1), Targets): HOST:PID, [IPv6]:PID,
 * a PID on the current host, or a HOST that becomes the current host for the
 * PIDs after it. Throws a CommandError that names the offending word.
 */
export function parseTargets(words: readonly string[], defaultHost: string): Target[] {
  const targets: Target[] = [];
  let current = checkHost(unbracket(defaultHost), '--host');
  let hostWithoutPid: string | undefined;
  for (const word of words) {
    if (/^[0-9]+$/.test(word) || LOOKS_NUMERIC.test(word)) {
      targets.push({ host: current, pid: checkPid(word) });
      hostWithoutPid = undefined;
      continue;
    }
    const split = splitHostPid(word);
    if (split !== undefined) {
      targets.push({ host: checkHost(split.host, word), pid: checkPid(split.pid, `'${word}': `) });
      continue;
    }
    if (hostWithoutPid !== undefined) throw noPidAfter(hostWithoutPid, word);
    current = checkHost(unbracket(word), word);
    hostWithoutPid = word;
  }
  if (hostWithoutPid !== undefined) throw noPidAfter(hostWithoutPid);
  if (targets.length === 0) throw new CommandError('no target given: name HOST PID, HOST:PID or a PID');
  return targets;
}

/** HOST:PID or [IPv6]:PID; undefined for a word that is a host alone. */
function splitHostPid(word: string): { host: string; pid: string } | undefined {
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(word);
  if (bracketed) return { host: bracketed[1]!, pid: bracketed[2]! };
  if (!word.includes(':') || ipFamily(unbracket(word)) === 6) return undefined;
  const colon = word.lastIndexOf(':');
  const host = word.slice(0, colon);
  if (host.includes(':')) {
    throw new CommandError(`'${word}': write an IPv6 address in brackets, as [::1]:PID`);
  }
  return { host, pid: word.slice(colon + 1) };
}

/** A host word without the brackets of `[::1]`. */
export function unbracket(word: string): string {
  return /^\[.*\]$/.test(word) ? word.slice(1, -1) : word;
}

/** A pid word as a request can carry it, or a CommandError that says where it was (`where`: an option, the word it is part of) and what a pid is. */
export function checkPid(text: string, where = ''): number {
  const pid = parsePid(text);
  if (pid === undefined) throw new CommandError(`${where}'${text}' is not a pid (a decimal number from 1 to 2147483647)`);
  return pid;
}

/** The longest host word a request can carry with its cookie. */
export const MAX_HOST_WORD = MAX_HOST_BYTES - COOKIE_LENGTH;

/** A host word as a request can carry it, or a CommandError naming `word`. */
export function checkHost(host: string, word: string): string {
  if (!isValidHost(host)) {
    const what = host === '' ? 'an empty host' : `'${host}' is not a host name or address`;
    throw new CommandError(`'${word.length > 60 ? `${word.slice(0, 60)}...` : word}': ${what}`);
  }
  if (host.length > MAX_HOST_WORD) {
    throw new CommandError(`'${word.slice(0, 60)}...': a host name is over ${MAX_HOST_WORD} bytes, with no room left for the cookie`);
  }
  return host;
}

function noPidAfter(host: string, next?: string): CommandError {
  const then = next === undefined ? '' : ` but the host '${next}'`;
  const form = host.includes(':') ? 'HOST PID, or an IPv6 address in brackets, as [::1]:PID' : 'HOST PID or HOST:PID';
  return new CommandError(`host '${host}' has no PID after it${then}: name ${form}`);
}
