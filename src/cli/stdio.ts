import { fstatSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Standard output and error without Node's streams where it can: the first
 * touch of process.stdout loads the stream modules, and for a pipe node:net
 * too, a few milliseconds of a command that answers in fifty. A write goes
 * straight to the descriptor; only when it would block (a non-blocking pipe
 * that is full) does the rest, and all that follows, go through the stream,
 * in order. A reader that went away (`pidstat ... | head -1`) is no error of
 * ours: what it did not read is dropped, and the exit status stays the answer.
 */

type Fd = 1 | 2;

const streams: Partial<Record<Fd, NodeJS.WriteStream>> = {};
const closed: Partial<Record<Fd, boolean>> = {};

/** The stream of fd, made once, with EPIPE ignored. */
function streamOf(fd: Fd): NodeJS.WriteStream {
  let stream = streams[fd];
  if (stream === undefined) {
    stream = fd === 1 ? process.stdout : process.stderr;
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
    streams[fd] = stream;
  }
  return stream;
}

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
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') closed[fd] = true;
    else if (code === 'EAGAIN') streamOf(fd).write(bytes.subarray(done));
    else throw err;
  }
}

export function writeOut(text: string): void {
  write(1, text);
}

export function writeErr(text: string): void {
  write(2, text);
}

/**
 * isatty(fd). A pipe or a file is told by fstat alone; node:tty, which
 * loads node:net, only for a character device, which may be a terminal.
 */
export function isTerminal(fd: Fd): boolean {
  try {
    if (!fstatSync(fd).isCharacterDevice()) return false;
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
