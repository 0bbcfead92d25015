import { timeOfDay } from '../sys/time.js';

/**
 * Why a question got no answer, or a watch cannot work, as values: the
 * client (client.ts) ends a `no_reply` with one, and the watcher (watch.ts)
 * tells onReach of one. Code decides by `kind`; only describeFailure()
 * turns a failure into words, where it is printed (pidstat(1), States:
 * "a line on standard error says which"; pidwatch(1), DESCRIPTION).
 */
export type Failure =
  /** Every try went unanswered. */
  | { kind: 'timeout'; tries: number }
  /** The host said nothing listens on the port (ICMP port unreachable), on every try. */
  | { kind: 'no-daemon' }
  /** The host name did not resolve; `why` is the resolver's code (ENOTFOUND, EAI_AGAIN). */
  | { kind: 'unresolvable'; host: string; why: string }
  /** No socket could be opened toward any of the host's addresses; `why` is the error's code. */
  | { kind: 'unreachable'; host: string; why: string }
  /** A reply echoed the cookie but was not authenticated by our key: a daemon without keys, or not the one asked. */
  | { kind: 'unauthenticated' }
  /** A keyed daemon refused a request that carried no key (doc/protocol.md, AUTH: the refusal). */
  | { kind: 'key-required'; host: string }
  /** A keyed daemon refused our key: it has not key `keyId` of our key file. */
  | { kind: 'key-refused'; host: string; keyId: number }
  /** The client was closed before an answer came. */
  | { kind: 'closed' }
  /**
   * The watcher asked `questions` times in a row and heard nothing (each a
   * plain timeout). `since`, epoch ms, is when the host last answered: there
   * only when the watch had been answered, and fell silent (a renewal or
   * questions unanswered); a watch never answered has none.
   */
  | { kind: 'silence'; questions: number; since?: number };

/** A failure in the words pidstat prints after `HOST:PID: ` (pidstat(1), States). */
export function describeFailure(failure: Failure): string {
  switch (failure.kind) {
    case 'timeout':
      return `no reply after ${failure.tries} ${failure.tries === 1 ? 'try' : 'tries'}`;
    case 'no-daemon':
      return 'no daemon listening';
    case 'unresolvable':
      return `cannot resolve ${failure.host}: ${failure.why}`;
    case 'unreachable':
      return `cannot reach ${failure.host}: ${failure.why}`;
    case 'unauthenticated':
      return 'reply not authenticated';
    case 'key-required':
      return `the daemon at ${failure.host} requires a key (see --key-file)`;
    case 'key-refused':
      return `the daemon at ${failure.host} refused our key: it has not key ${failure.keyId} of our key file`;
    case 'closed':
      return 'client closed';
    case 'silence':
      return failure.since === undefined ? `no answer to ${failure.questions} questions` : `no answer since ${timeOfDay(failure.since)}`;
  }
}
