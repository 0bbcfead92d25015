/**
 * What went wrong with this host's system or the daemon's set-up, as
 * values, as the client's Failure (client/failures.ts) is for a question:
 * code decides by `kind`, and only describeProblem() turns a problem into
 * words, where it is printed or logged (pidstatd(8), EXIT STATUS). A problem
 * is plain data, so it crosses a process boundary as it is: a detached
 * daemon's server tells its supervisor why it could not listen, and the
 * supervisor tells the command the user typed.
 */
export type Problem =
  /** A call of the system failed; `doing` says what was being done, naming the file or socket. */
  | { kind: 'system'; doing: string; code: string | undefined; message: string }
  /** The daemon's socket cannot be had; `where` is "ADDRESS port N" or "inherited descriptor N". */
  | { kind: 'cannot-listen'; where: string; code: string | undefined; message: string }
  /** A server ended before it was listening; `how` says how ("exit 1", "SIGKILL"). */
  | { kind: 'exited-at-start'; how: string }
  /** The addon cannot be loaded; `why` is native.ts's account of each place it looked. */
  | { kind: 'no-addon'; why: string }
  /** The addon was built from an older source and lacks a call this needs. */
  | { kind: 'old-addon' }
  /** A Unix socket that is not there (the syslog socket). */
  | { kind: 'no-socket'; path: string }
  /** An environment variable that should name a Unix socket names none (NOTIFY_SOCKET). */
  | { kind: 'not-a-socket-name'; variable: string; value: string };

/** The words for the errno codes users meet, where Node's message would add a syscall and a path already named. */
const ERRNO_WORDS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EADDRNOTAVAIL: 'address not available on this host',
  EAFNOSUPPORT: 'address family not supported',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
};

/** What a thrown error says: its errno's name, where it has one, and its message. */
export function errnoOf(err: unknown): { code: string | undefined; message: string } {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return { code: typeof code === 'string' ? code : undefined, message: err instanceof Error ? err.message : String(err) };
}

/** What was thrown by a call of the system, made while `doing` (a phrase that names the file or socket). */
export function systemProblem(err: unknown, doing: string): Problem {
  return { kind: 'system', doing, ...errnoOf(err) };
}

/** The only place a Problem becomes words. */
export function describeProblem(problem: Problem): string {
  switch (problem.kind) {
    case 'system':
      return `${problem.doing}: ${reason(problem.code, problem.message)}`;
    case 'cannot-listen':
      return `cannot listen on ${problem.where}: ${reason(problem.code, problem.message)}`;
    case 'exited-at-start':
      return `the daemon exited at start (${problem.how})`;
    case 'no-addon':
      return problem.why;
    case 'old-addon':
      return 'the addon was built from an older source (reinstall to rebuild it)';
    case 'no-socket':
      return `${problem.path} does not exist`;
    case 'not-a-socket-name':
      return `${problem.variable}=${problem.value} is neither an absolute path nor an @abstract name`;
  }
}

function reason(code: string | undefined, message: string): string {
  return (code !== undefined && ERRNO_WORDS[code]) || message;
}
