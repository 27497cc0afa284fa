// Upload tokens: one per host (or uploader), from STACKSANITY_TOKENS_FILE (lines "name:token" or
// "name token", # comments) or STACKSANITY_TOKENS ("name:token,name:token"). Only SHA-256
// digests are kept; a presented token is hashed once and compared with every stored digest in
// constant time (timingSafeEqual on equal-length digests, no early exit), so neither the length
// nor a matching prefix of a token leaks through timing.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

interface Entry {
  name: string;
  digest: Buffer;
}

export class TokenSet {
  private readonly entries: Entry[] = [];

  add(name: string, token: string): void {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(name)) throw new Error(`token name '${name}' must be 1-128 of A-Z a-z 0-9 . _ -`);
    if (token.length < 16) throw new Error(`the token for '${name}' is shorter than 16 characters`);
    this.entries.push({ name, digest: digest(token) });
  }

  get size(): number {
    return this.entries.length;
  }

  /** The token's name, or undefined. */
  verify(token: string): string | undefined {
    const d = digest(token);
    let found: string | undefined;
    for (const e of this.entries) if (timingSafeEqual(d, e.digest) && found === undefined) found = e.name;
    return found;
  }

  /** Parses "Authorization: Bearer <token>"; undefined when absent or malformed. */
  static bearer(header: string | undefined): string | undefined {
    if (!header) return undefined;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m ? m[1] : undefined;
  }

  static parse(text: string, where: string, into = new TokenSet()): TokenSet {
    let line = 0;
    for (const raw of text.split(/\r?\n|,/)) {
      line++;
      const l = raw.trim();
      if (!l || l.startsWith('#')) continue;
      const m = /^([^\s:]+)\s*[:\s]\s*(\S+)$/.exec(l);
      // The message names the entry, never its token.
      if (!m) throw new Error(`${where}: entry ${line} is not "name:token"`);
      try {
        into.add(m[1]!, m[2]!);
      } catch (e) {
        throw new Error(`${where}: entry ${line}: ${(e as Error).message}`);
      }
    }
    return into;
  }

  static fromEnv(env: Record<string, string | undefined> = process.env): TokenSet {
    return TokenSet.load(env.STACKSANITY_TOKENS_FILE, env.STACKSANITY_TOKENS, 'STACKSANITY_TOKENS');
  }

  /**
   * Admin tokens: the write scope apart from uploads (PUT /v1/findings/{id}), from
   * STACKSANITY_ADMIN_TOKENS_FILE / STACKSANITY_ADMIN_TOKENS in the same forms as upload tokens.
   */
  static adminFromEnv(env: Record<string, string | undefined> = process.env): TokenSet {
    return TokenSet.load(env.STACKSANITY_ADMIN_TOKENS_FILE, env.STACKSANITY_ADMIN_TOKENS, 'STACKSANITY_ADMIN_TOKENS');
  }

  private static load(file: string | undefined, list: string | undefined, listName: string): TokenSet {
    const set = new TokenSet();
    if (file) TokenSet.parse(readFileSync(file, 'utf8'), file, set);
    if (list) TokenSet.parse(list, listName, set);
    return set;
  }
}

export function randomToken(): string {
  return `ss_${randomBytes(24).toString('base64url')}`;
}

/** A stable, non-reversible key for rate limiting per token. */
export function tokenKey(token: string): string {
  return `t:${createHash('sha256').update(token).digest('hex').slice(0, 24)}`;
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
