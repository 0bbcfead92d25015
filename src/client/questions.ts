/**
 * What a client asks (Target) and answers (Result), and the questions it is
 * waiting on, each found two ways. By what the caller asked (questionOf():
 * pid, host, flags, start token): a second query for the very same question
 * joins the first, and two that differ in any of these are never joined. By
 * what a reply must echo (pid and the <host> field sent, cookie included:
 * doc/protocol.md, The cookie): anything else is late, crossed or forged.
 */
import type { Endpoint } from './endpoints.js';
import type { Failure } from './failures.js';
import type { ProcessRef } from '../sys/pidref.js';
import { ALL_FLAGS, type State } from '../wire/protocol.js';

/** A process on a host: the process (with its start token, a reused pid then counts as dead) and where it runs. */
export interface Target extends ProcessRef {
  host: string;
  /** Request flags (protocol FLAG_*): which answers the daemon may send. @default 15 */
  flags?: number;
}

export interface Result {
  host: string;
  pid: number;
  state: State | 'no_reply';
  /** Requests sent; 0 when answered locally. */
  tries: number;
  /** Time from the query to its answer, in ms. */
  ms: number;
  /** Start token of the live process, where known. */
  start?: string;
  /** Why there is no answer, for `no_reply`; describeFailure() says it in words. */
  failure?: Failure;
}

/** A question being asked: one target, retried on its own schedule until answered or out of tries. */
export interface Question {
  /** questionOf() its target: what a second query for the same question finds. */
  readonly key: string;
  /** pid and the <host> field sent, cookie included: what a reply must echo. */
  readonly wireKey: string;
  readonly target: Target;
  /** The request, as sent on every try. */
  readonly wire: Buffer;
  endpoints: Endpoint<Question>[];
  tries: number;
  /** Endpoints that refused the current try. */
  refused: number;
  readonly startedAt: number;
  timer?: NodeJS.Timeout;
  /** Those waiting for the answer: the first query and any that joined it. */
  readonly settle: ((result: Result) => void)[];
  /** A reply echoed the cookie but was not authenticated by our key: the question ends with this try. */
  unauthenticated: boolean;
}

/** The key of a pid and a host field: a reply's (with the cookie), or pidstat's own question (without). */
export function pidHostKey(pid: number, host: string): string {
  return `${pid} ${host}`;
}

/**
 * A question as the caller asked it: two that differ in flags or start token
 * are never joined. pidstat's own question (every answer, no token) keeps
 * the short key: 100 000 pending questions hold 100 000 of them.
 */
export function questionOf(target: Target, flags: number): string {
  if (flags === ALL_FLAGS && target.start === undefined) return pidHostKey(target.pid, target.host);
  return `${target.pid} ${target.host} ${flags} ${target.start ?? '-'}`;
}

/** The questions waiting for an answer. */
export class Questions {
  private readonly byQuestion = new Map<string, Question>();
  private readonly byWireKey = new Map<string, Question>();

  get size(): number {
    return this.byQuestion.size;
  }

  /** The question asked as `key` (questionOf()), if it is waiting. */
  asked(key: string): Question | undefined {
    return this.byQuestion.get(key);
  }

  add(question: Question): void {
    this.byQuestion.set(question.key, question);
    this.byWireKey.set(question.wireKey, question);
  }

  /** Whether `question` still waits: not answered, ended or closed. */
  waits(question: Question): boolean {
    return this.byQuestion.get(question.key) === question;
  }

  /** The question a reply or refusal naming `pid` and the host field `host` answers, if any. */
  answeredBy(pid: number, host: string): Question | undefined {
    return this.byWireKey.get(pidHostKey(pid, host));
  }

  remove(question: Question): void {
    if (this.waits(question)) this.byQuestion.delete(question.key);
    this.byWireKey.delete(question.wireKey);
  }

  all(): Question[] {
    return [...this.byQuestion.values()];
  }
}
