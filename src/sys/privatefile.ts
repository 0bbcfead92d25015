import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { describeProblem, systemProblem } from './problems.js';

/**
 * A file of secrets (a key file), read only if it is a regular file that
 * its reader or root owns and that neither group nor others may read or
 * write (pidstatd(8), Authentication). Opened with O_NONBLOCK, so a FIFO
 * put in its place cannot hang the reader.
 */

/** Why a private file cannot be used, in words that name it. */
export class PrivateFileError extends Error {
  override name = 'PrivateFileError';
}

/** The text of `file` (`what` names it in errors: "key file"); a PrivateFileError if it is not private. */
export function readPrivateFile(file: string, what: string): string {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new PrivateFileError(describeProblem(systemProblem(err, `${what} ${file}`)));
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new PrivateFileError(`${what} ${file}: not a regular file`);
    const uid = process.getuid?.();
    if (uid !== undefined && stat.uid !== uid && stat.uid !== 0) {
      throw new PrivateFileError(`${what} ${file}: owned by uid ${stat.uid}, not by you (uid ${uid}) or root`);
    }
    if ((stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new PrivateFileError(`${what} ${file}: group or others may read or write it (mode ${mode}): run chmod 600 ${file}`);
    }
    return readFileSync(fd, 'latin1');
  } finally {
    closeSync(fd);
  }
}
