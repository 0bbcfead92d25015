import { fstatSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { getSystemErrorMap } from 'node:util';
import { CommandError, ExitCode } from './errors.js';

/**
 * Standard output and error without Node's streams where it can: the first
 * touch of process.stdout loads the stream modules, and for a pipe node:net
 * too, a few milliseconds of a command that answers in fifty. A write goes
 * straight to the descriptor; only when it would block (a non-blocking pipe
 * that is full) does the rest, and all that follows, go through the stream,
 * in order. A reader that went away (`pidstat ... | head -1`) is no error of
 * ours: what it did not read is dropped, and the exit status stays the answer.
 * Nor is a stderr that cannot be written: there is no one left to tell. But
 * stdout that cannot be written (a full disk) loses the answer: the command
 * ends with one line on stderr and exit 74 (pidstat(1), EXIT STATUS), never a stack.
 */

type Fd = 1 | 2;

const streams: Partial<Record<Fd, NodeJS.WriteStream>> = {};
const closed: Partial<Record<Fd, boolean>> = {};

/** Why stdout could not be written, once it could not. */
let failure: CommandError | undefined;
let onFailure: ((failure: CommandError) => void) | undefined;

/** `no space left on device (ENOSPC)`: the system's words for the error's number, and its code. */
function describe(err: NodeJS.ErrnoException): string {
  const reason = err.errno === undefined ? undefined : getSystemErrorMap().get(err.errno)?.[1];
  return reason === undefined || err.code === undefined ? err.code ?? err.message : `${reason} (${err.code})`;
}

/**
 * fd is written no more. For stdout, unless its reader went away, that is
 * the command's failure, told to the listener at once, whether a write or
 * the stream found it.
 */
function lose(fd: Fd, err: NodeJS.ErrnoException): CommandError | undefined {
  closed[fd] = true;
  if (fd === 2 || err.code === 'EPIPE') return undefined;
  if (failure === undefined) {
    failure = new CommandError(`cannot write the output: ${describe(err)}`, ExitCode.OUTPUT_FAILED);
    onFailure?.(failure);
  }
  return failure;
}

/** The stream of fd, made once; its errors come after write() returned. */
function streamOf(fd: Fd): NodeJS.WriteStream {
  let stream = streams[fd];
  if (stream === undefined) {
    stream = fd === 1 ? process.stdout : process.stderr;
    stream.on('error', (err: NodeJS.ErrnoException) => void lose(fd, err));
    streams[fd] = stream;
  }
  return stream;
}

/** Writes text; when stdout cannot be written, throws the failure too, so the command goes no further. */
function write(fd: Fd, text: string): void {
  if (closed[fd]) return;
  const stream = streams[fd];
  if (stream !== undefined) {
    stream.write(text);
    return;
  }
  const bytes = Buffer.from(text);
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(fd, bytes, done);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
      streamOf(fd).write(bytes.subarray(done));
      return;
    }
    const lost = lose(fd, err as NodeJS.ErrnoException);
    if (lost !== undefined) throw lost;
  }
}

/** Calls `listener` (once) when stdout cannot be written. */
export function whenOutputFails(listener: (failure: CommandError) => void): void {
  onFailure = listener;
}

export function writeOut(text: string): void {
  write(1, text);
}

export function writeErr(text: string): void {
  write(2, text);
}

/** The major number of a Linux dev_t (glibc's gnu_dev_major), from fstat's rdev. */
function deviceMajor(rdev: number): number {
  return (Math.floor(rdev / 0x100) & 0xfff) | (Math.floor(rdev / 0x1_0000_0000) & ~0xfff);
}

/** Linux's memory devices (/dev/null, /dev/zero, /dev/full, /dev/urandom): never a terminal. */
const MEMORY_DEVICES_MAJOR = 1;

/**
 * isatty(fd). A pipe, a file or /dev/null (a script's `>/dev/null 2>&1`)
 * is told by fstat alone; node:tty, which loads node:net, only for another
 * character device, which may be a terminal.
 */
export function isTerminal(fd: Fd): boolean {
  try {
    const stat = fstatSync(fd);
    if (!stat.isCharacterDevice() || deviceMajor(stat.rdev) === MEMORY_DEVICES_MAJOR) return false;
  } catch {
    return false;
  }
  const tty = createRequire(import.meta.url)('node:tty') as typeof import('node:tty');
  return tty.isatty(fd);
}

/** The stream of fd, for those that need one (ora, yargs's help width). */
export function stdioStream(fd: Fd): NodeJS.WriteStream {
  return streamOf(fd);
}
