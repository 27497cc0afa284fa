// Kernel profiles keyed by build id: the symbol text (stored gzip) and the profile options, in one
// hash per build with a revision counter, so workers rebuild their cached KernelProfile only when
// an upload changed it.
import type { Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { gzipSync, gunzipSync } from 'node:zlib';
import { KernelProfile, parseProfileOptions, type ProfileOptions } from '../core/symbols/profile.ts';
import { decodeOrcUpload, OrcTable } from '../core/unwind/orc-table.ts';
import type { Keys } from './keys.ts';

export const BUILD_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

export interface KernelInfo {
  buildId: string;
  symbols: number;
  layouts: string[];
  options: ProfileOptions;
  hasSymbols: boolean;
  rev: number;
  /** The ORC table uploaded for the build (PUT .../orc), when there is one. */
  orc?: { entries: number; layout: string };
}

export class KernelStore {
  private readonly cache = new Map<string, { rev: number; profile: KernelProfile; checkedAt: number }>();

  /**
   * revalidateMs: how long a cached profile is used without asking Redis for its revision. 0 (the
   * API) asks every time; workers ask at most once a second per build, so a re-uploaded profile
   * reaches them within that second, and each batch's traces record the revision they were
   * checked with either way.
   */
  constructor(private readonly redis: Redis, private readonly keys: Keys, private readonly revalidateMs = 0) {}

  /** Parses first (a restricted kallsyms or garbage is refused with the parser's message), then stores. */
  async putSymbols(buildId: string, text: string): Promise<KernelInfo> {
    const opts = await this.options(buildId);
    const profile = KernelProfile.fromKallsyms(text, { ...opts, buildId, file: `kernels/${buildId}/symbols` });
    const key = this.keys.kernel(buildId);
    const digest = sha256(text);
    const same = await this.unchanged(key, 'symbols_sha256', digest);
    if (same !== undefined) return info(buildId, profile, opts, true, same);
    const rev = await this.redis.multi().hset(key, 'symbols', gzipSync(text, { level: 6 }), 'symbols_sha256', digest).hincrby(key, 'rev', 1).sadd(this.keys.kernels, buildId).exec();
    return info(buildId, profile, opts, true, Number(rev?.[1]?.[1] ?? 0));
  }

  async putOptions(buildId: string, json: unknown): Promise<ProfileOptions> {
    const opts = parseProfileOptions(json, `kernels/${buildId}/profile`);
    const key = this.keys.kernel(buildId);
    const text = JSON.stringify(opts);
    if ((await this.unchanged(key, 'options', text)) !== undefined) return opts;
    await this.redis.multi().hset(key, 'options', text).hincrby(key, 'rev', 1).sadd(this.keys.kernels, buildId).exec();
    return opts;
  }

  /**
   * The ORC tables in their upload form (decodeOrcUpload). Decoded and built into a table before
   * anything is stored, so a body the workers could not use is refused here with the reason.
   */
  async putOrc(buildId: string, body: Uint8Array): Promise<{ entries: number; layout: string; rev: number }> {
    const table = OrcTable.fromSections(decodeOrcUpload(body));
    const key = this.keys.kernel(buildId);
    const digest = sha256(body);
    const same = await this.unchanged(key, 'orc_sha256', digest);
    if (same !== undefined) return { entries: table.length, layout: table.layout, rev: same };
    const res = await this.redis.multi().hset(key, 'orc', gzipSync(body, { level: 6 }), 'orc_sha256', digest).hincrby(key, 'rev', 1).sadd(this.keys.kernels, buildId).exec();
    return { entries: table.length, layout: table.layout, rev: Number(res?.[1]?.[1] ?? 0) };
  }

  /**
   * The revision when `field` already holds `value`: an upload of what is stored (a host agent
   * re-sending its kernel at every start) keeps the revision, so traces checked against it are not
   * reported as checked against another profile.
   */
  private async unchanged(key: string, field: string, value: string): Promise<number | undefined> {
    const [stored, rev] = await this.redis.hmget(key, field, 'rev');
    return stored === value && rev !== null ? Number(rev) : undefined;
  }

  async hasSymbols(buildId: string): Promise<boolean> {
    return (await this.redis.hexists(this.keys.kernel(buildId), 'symbols')) === 1;
  }

  async list(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.kernels)).sort();
  }

  async info(buildId: string): Promise<KernelInfo | undefined> {
    const p = await this.entry(buildId);
    if (!p) {
      if (!(await this.redis.exists(this.keys.kernel(buildId)))) return undefined;
      return { buildId, symbols: 0, layouts: [], options: await this.options(buildId), hasSymbols: false, rev: Number(await this.redis.hget(this.keys.kernel(buildId), 'rev')) };
    }
    return info(buildId, p.profile, await this.options(buildId), true, p.rev);
  }

  /** The profile for a build (cached per revision), or undefined when its symbols were never uploaded. */
  async get(buildId: string): Promise<KernelProfile | undefined> {
    return (await this.entry(buildId))?.profile;
  }

  /** The profile with the revision it was built from (one round trip when cached). */
  async entry(buildId: string): Promise<{ rev: number; profile: KernelProfile } | undefined> {
    const hit = this.cache.get(buildId);
    const now = Date.now();
    if (hit && this.revalidateMs > 0 && now - hit.checkedAt < this.revalidateMs) return hit;
    const key = this.keys.kernel(buildId);
    const revText = await this.redis.hget(key, 'rev');
    if (revText === null) return undefined;
    const rev = Number(revText);
    if (hit && hit.rev === rev) {
      hit.checkedAt = now;
      return hit;
    }
    // The revision again, in the same read as the data: an upload landing between the two reads
    // must not leave a new profile cached under the old revision.
    const [revNow, symbols, options, orcBytes] = await this.redis.hmgetBuffer(key, 'rev', 'symbols', 'options', 'orc');
    if (!symbols || !revNow) return undefined;
    const opts: ProfileOptions = options ? (JSON.parse(options.toString('utf8')) as ProfileOptions) : {};
    // Validated on upload; the profile carries the table so that checkSample can run orc.
    const orc = orcBytes ? OrcTable.fromSections(decodeOrcUpload(gunzipSync(orcBytes))) : undefined;
    const profile = KernelProfile.fromKallsyms(gunzipSync(symbols).toString('utf8'), { ...opts, buildId, ...(orc ? { orc } : {}) });
    const entry = { rev: Number(revNow.toString()), profile, checkedAt: now };
    this.cache.set(buildId, entry);
    return entry;
  }

  private async options(buildId: string): Promise<ProfileOptions> {
    const o = await this.redis.hget(this.keys.kernel(buildId), 'options');
    return o ? (JSON.parse(o) as ProfileOptions) : {};
  }
}

function info(buildId: string, p: KernelProfile, options: ProfileOptions, hasSymbols: boolean, rev: number): KernelInfo {
  return { buildId, symbols: p.symbols.length, layouts: [...p.layouts], options, hasSymbols, rev, ...(p.orc ? { orc: { entries: p.orc.length, layout: p.orc.layout } } : {}) };
}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
