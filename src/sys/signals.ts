import { constants } from 'node:os';

/** Whether a signal name or number is one this host knows; the canonical name (SIGHUP) or undefined. */
export function parseSignal(text: string): NodeJS.Signals | undefined {
  const bare = text.replace(/^-/, '').toUpperCase();
  if (/^[0-9]+$/.test(bare)) {
    const number = Number(bare);
    return (Object.keys(constants.signals) as NodeJS.Signals[]).find((name) => constants.signals[name] === number);
  }
  const name = (bare.startsWith('SIG') ? bare : `SIG${bare}`) as NodeJS.Signals;
  return name in constants.signals ? name : undefined;
}
