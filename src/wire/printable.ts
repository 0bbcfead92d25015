/**
 * Datagram text fit for a terminal: every byte outside printable ASCII is
 * written `\xNN` (a backslash as `\\`), so a forged datagram shown by
 * --debug cannot write control sequences to the user's terminal (pidstat(1),
 * --debug). Text made with 'latin1' holds one char per byte.
 */
export function printable(text: string): string {
  return text.replace(/[^\x20-\x5b\x5d-\x7e]/g, (char) => {
    if (char === '\\') return '\\\\';
    if (char === '\n') return '\\n';
    return `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}
