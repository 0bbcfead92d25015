import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ROOT } from '../support/helpers.js';
import { COOKIE_LENGTH } from '../../src/wire/cookie.js';
import { FALLBACK_PORT } from '../../src/net/host.js';
import { daemonIdentity, MAC_HEX_DIGITS, readKeyFile, signLine, verify, type KeyRing } from '../../src/wire/keys.js';
import * as protocol from '../../src/wire/protocol.js';
import { DEFAULT_RATE } from '../../src/daemon/server.js';

/**
 * doc/protocol.md against the code: its worked example's MACs are the ones
 * src/wire/keys.ts computes and accepts, every message the codec sends and every
 * limit it enforces is in it, and it is linked from the README and the man
 * pages. Also: comments cite the repository's own documents, never a file
 * outside it.
 */

const DOC = 'doc/protocol.md';
const doc = readFileSync(`${ROOT}${DOC}`, 'utf8');

/** The text of one `## ` section of the document, up to the next. */
function section(heading: string): string {
  const start = doc.indexOf(`\n## ${heading}`);
  assert.notEqual(start, -1, `${DOC} has no section "## ${heading}"`);
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end === -1 ? undefined : end);
}

/** The lines of a text's indented code blocks that match `re` (anchored, without the indent). */
function codeLines(text: string, re: RegExp): RegExpMatchArray[] {
  return text.split('\n').flatMap((line) => {
    const match = line.startsWith('    ') ? re.exec(line.slice(4)) : null;
    return match === null ? [] : [match];
  });
}

function only(text: string, re: RegExp, what: string): RegExpMatchArray {
  const found = codeLines(text, re);
  assert.equal(found.length, 1, `the worked example shows one ${what} (found ${found.length})`);
  return found[0]!;
}

const hmac = (secret: string, bytes: string) => createHmac('sha256', Buffer.from(secret, 'hex')).update(bytes, 'latin1').digest('hex');

describe(`${DOC}: the worked example is what the code computes`, () => {
  const example = section('Worked example');
  const [, id, secret] = only(example, /^([1-9][0-9]*) ([0-9a-f]{32,})$/, 'key file line');
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-protocol-doc-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const keyFile = join(dir, 'keys');
  writeFileSync(keyFile, `${id} ${secret}\n`);
  chmodSync(keyFile, 0o600);
  const ring: KeyRing = readKeyFile(keyFile);
  const key = ring.first;

  const [, address, port] = only(example, /^pidstatd (\S+) ([0-9]+)$/, 'identity line');
  const identity = `pidstatd ${address} ${port}\n`;

  test('the identity line is the canonical one for its address', () => {
    assert.equal(daemonIdentity(address!, Number(port)), identity);
  });

  test('the keyed request is signed and verified as keys.ts does', () => {
    const [line, signed, mac] = only(example, /^(PIDR \S+ \S+ \S+ \S+ [0-9]+:)([0-9a-f]+)$/, 'keyed request');
    assert.equal(mac!.length, MAC_HEX_DIGITS);
    const request = protocol.decodeRequest(Buffer.from(`${line}\n`, 'latin1'));
    assert.ok(request.host !== undefined && request.auth !== undefined, 'a keyed request has a host and an authenticator');
    assert.equal(signLine(key, protocol.keyedRequestLine({ ...request, host: request.host })), line);
    assert.equal(verify(request.auth, ring.byId), key, 'the daemon accepts it');
    // What the MAC covers, and the digest it begins, shown in the text.
    assert.equal(codeLines(example, /^(.*)$/).filter((m) => m[1] === signed).length, 1, `${signed} is shown as the bytes covered`);
    assert.ok(example.includes(`begins \`${hmac(secret!, signed!).slice(0, MAC_HEX_DIGITS)}\``), 'the digest shown is the HMAC of those bytes');
  });

  test('each keyed reply is signed over the identity and verified as keys.ts does', () => {
    const replies = codeLines(example, /^((?:EXIS|UNKN) \S+ \S+ \S+ \S+ [0-9]+:)([0-9a-f]{32})$/);
    assert.ok(replies.length >= 2, 'an exists and a dead reply');
    for (const [line, signed, mac] of replies) {
      const reply = protocol.decodeReply(Buffer.from(line!, 'latin1'));
      assert.equal(signLine(key, protocol.keyedReplyLine(reply), identity), line, `${line}: the daemon signs it so`);
      assert.equal(verify(reply.auth, ring.byId, identity), key, `${line}: the client accepts it`);
      assert.equal(verify(reply.auth, ring.byId, daemonIdentity('192.0.2.18', Number(port))), undefined, `${line}: not from another daemon`);
      assert.equal(verify(reply.auth, ring.byId), undefined, `${line}: not without the identity`);
      assert.equal(hmac(secret!, identity + signed).slice(0, MAC_HEX_DIGITS), mac);
    }
    // The whole digest shown is that of the first reply.
    const [, digest] = /`([0-9a-f]{64})`/.exec(example) ?? [];
    assert.equal(digest, hmac(secret!, identity + replies[0]![1]!));
  });

  test('the refusal is what a keyed daemon answers a request without a key', () => {
    const [line] = only(example, /^PIDR [0-9]+ \S+ [0-9]+$/, 'request without a key');
    const [refusal] = only(example, /^AUTH .*$/, 'refusal');
    const request = protocol.decodeRequest(Buffer.from(`${line}\n`, 'latin1'));
    assert.equal(request.auth, undefined);
    assert.equal(protocol.refusalLine(request.pid, request.host!), refusal);
    assert.ok(refusal!.length <= line!.length + 1, 'no longer than the request');
    assert.deepEqual(protocol.decodeRefusal(Buffer.from(refusal!, 'latin1')), { pid: request.pid, host: request.host });
  });
});

describe(`${DOC} says what the code does`, () => {
  test('the table of canonical addresses is daemonIdentity()', () => {
    const rows = [...doc.matchAll(/^\| `([^`]+)` \| `(pidstatd \S+ ([0-9]+))` \|$/gm)];
    assert.ok(rows.length >= 4, `found ${rows.length} rows`);
    for (const [, asked, line, port] of rows) assert.equal(daemonIdentity(asked!, Number(port)), `${line}\n`, asked);
  });

  test('the refusal example of the AUTH section counts its bytes right', () => {
    const match = /`(PIDR [^`]+)` and its newline,\s+([0-9]+) bytes, get the ([0-9]+) of `(AUTH [^`]+)`/.exec(section('AUTH'));
    assert.ok(match, 'the AUTH section shows a request and its refusal with their lengths');
    const [, request, requestBytes, refusalBytes, refusal] = match;
    assert.equal(Number(requestBytes), request!.length + 1);
    assert.equal(Number(refusalBytes), refusal!.length);
    const decoded = protocol.decodeRequest(Buffer.from(`${request}\n`, 'latin1'));
    assert.equal(protocol.refusalLine(decoded.pid, decoded.host!), refusal);
  });

  test('every message the codec sends is documented, with a heading and its layout', () => {
    // A message the code sends is a template literal that starts with its word: `PIDR ${...`.
    const source = readFileSync(`${ROOT}src/wire/protocol.ts`, 'utf8') + readFileSync(`${ROOT}src/wire/pushwire.ts`, 'utf8');
    const sent = new Set([...source.matchAll(/`([A-Z]{4}) \$\{/g)].map((m) => m[1]!));
    assert.deepEqual([...sent].sort(), ['ACKN', 'AUTH', 'EXIS', 'NOTE', 'PIDR', 'SUBC', 'SUBR', 'SUBS', 'UNKN'], 'the scan of src/wire/protocol.ts and src/wire/pushwire.ts finds the messages');
    for (const word of sent) {
      assert.match(doc, new RegExp(`^##+ .*\\b${word}\\b`, 'm'), `${word} has a heading`);
      assert.ok(codeLines(doc, new RegExp(`^${word} <pid> `)).length > 0, `${word}'s layout is shown`);
    }
  });

  test('every flag bit is in the table', () => {
    for (const [name, bit] of Object.entries(protocol).filter(([name]) => /^FLAG_/.test(name))) {
      assert.match(doc, new RegExp(`^\\| ${bit as number} \\| `, 'm'), `${name}`);
    }
  });

  test('the limits the code enforces are the ones written', () => {
    const numbers: Record<string, number> = {
      MAX_PID: protocol.MAX_PID,
      MAX_HOST_BYTES: protocol.MAX_HOST_BYTES,
      MAX_DATAGRAM_BYTES: protocol.MAX_DATAGRAM_BYTES,
      'host name before the cookie': protocol.MAX_HOST_BYTES - COOKIE_LENGTH,
      MAC_HEX_DIGITS,
      FALLBACK_PORT,
      DEFAULT_RATE,
      DEFAULT_FLAGS: protocol.DEFAULT_FLAGS,
      ALL_FLAGS: protocol.ALL_FLAGS,
    };
    for (const [name, value] of Object.entries(numbers)) assert.match(doc, new RegExp(`\\b${value}\\b`), `${name} (${value})`);
  });

  test('the README and the man pages link to it', () => {
    for (const file of ['README.md', 'man/pidstat.1', 'man/pidwatch.1', 'man/pidstatd.8']) {
      assert.ok(readFileSync(`${ROOT}${file}`, 'utf8').includes(DOC), `${file} names ${DOC}`);
    }
  });
});

/** Every file under `dir`, recursively, as a path relative to the repository. */
function filesUnder(dir: string): string[] {
  return (readdirSync(`${ROOT}${dir}`, { recursive: true }) as string[])
    .map((name) => `${dir}/${name}`)
    .filter((file) => statSync(`${ROOT}${file}`).isFile());
}

test('comments cite the repository\'s own documents, never a file outside it', () => {
  // This file names what it looks for.
  const self = 'test/features/protocol-doc.test.ts';
  const offenders: string[] = [];
  for (const file of ['src', 'test', 'bin', 'scripts'].flatMap(filesUnder)) {
    if (file === self) continue;
    readFileSync(`${ROOT}${file}`, 'latin1').split('\n').forEach((line, i) => {
      if (/CONTRACT|\.\.\/shared/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, [], 'cite doc/protocol.md, the man pages or the README instead');
});
