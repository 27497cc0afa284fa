// JSON schemas of the API: fastify validates requests with them and @fastify/swagger builds the
// OpenAPI document at /docs from the very same objects.
import { ENTRY_LAYOUTS } from '../core/symbols/profile.ts';
import { ENTRY_TYPES } from '../core/symbols/entry-types.ts';
import { REASONS, VERDICTS } from '../core/check/reasons.ts';
import { REJECT_REASONS } from '../core/dump/errors.ts';
import { STRATEGIES } from '../core/unwind/types.ts';
import { SOURCES } from '../pipeline/job.ts';
import { MAX_NOTE } from '../pipeline/findings.ts';

export const BuildIdParams = {
  type: 'object',
  required: ['buildId'],
  properties: { buildId: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$', description: 'Kernel build id (as in the samples\' .kernel line).' } },
} as const;

export const IdParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,200}$' } },
} as const;

export const ErrorBody = {
  type: 'object',
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    reason: { type: 'string' },
  },
  additionalProperties: true,
} as const;

const SampleError = {
  type: 'object',
  properties: {
    index: { type: 'integer', description: '0-based index of the sample in the upload, rejected ones included' },
    line: { type: 'integer' },
    field: { type: 'string' },
    reason: { type: 'string', enum: [...REJECT_REASONS] },
    message: { type: 'string' },
  },
} as const;

export const UploadQuery = {
  type: 'object',
  properties: {
    source: { type: 'string', enum: [...SOURCES], default: 'upload', description: 'What produced the samples (the `source` label of stacksanity_samples_received_total).' },
    kernel: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$', description: 'Build id for samples that name none.' },
  },
  additionalProperties: false,
} as const;

export const UploadHeaders = {
  type: 'object',
  properties: {
    'idempotency-key': { type: 'string', minLength: 1, maxLength: 200, description: 'Makes a retried upload return the same job (default: the body\'s hash).' },
  },
} as const;

export const UploadReply = {
  type: 'object',
  properties: {
    job: { type: 'string' },
    accepted: { type: 'integer' },
    rejected: { type: 'integer' },
    duplicate: { type: 'boolean', description: 'The same upload was queued before (or is being queued by a concurrent request): job, accepted and rejected are that first upload\'s; it is not checked or counted again.' },
    status: { type: 'string', description: 'URL of the job status' },
    errors: { type: 'array', items: SampleError },
    errors_truncated: { type: 'boolean' },
  },
} as const;

export const ConflictReply = {
  type: 'object',
  description: 'The Idempotency-Key (or, without one, these bytes) was used for a different request within the idempotency window; nothing of this request was queued.',
  properties: {
    error: { type: 'string', enum: ['idempotency_conflict'] },
    job: { type: 'string', description: 'The job id the key names (the first request\'s batch)' },
    message: { type: 'string' },
  },
} as const;

export const RejectedReply = {
  type: 'object',
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    rejected: { type: 'integer' },
    errors: { type: 'array', items: SampleError },
    errors_truncated: { type: 'boolean' },
  },
} as const;

const DUMP_DESCRIPTION = 'A batch of samples: the text dump (perf script superset, docs/dump-format.md), a JSON dump document or array, or NDJSON; any of them gzip-compressed (detected from the bytes).';

export const SamplesBody = {
  content: {
    'text/plain': { schema: { description: DUMP_DESCRIPTION } },
    'application/json': { schema: { description: DUMP_DESCRIPTION } },
    'application/x-ndjson': { schema: { description: DUMP_DESCRIPTION } },
    'application/gzip': { schema: { description: DUMP_DESCRIPTION } },
    'application/octet-stream': { schema: { description: DUMP_DESCRIPTION } },
  },
} as const;

export const SymbolsBody = {
  content: {
    'text/plain': { schema: { description: '/proc/kallsyms (read as root) or System.map; gzip allowed.' } },
    'application/gzip': { schema: { description: 'gzip of the above' } },
    'application/octet-stream': { schema: { description: 'either of the above' } },
  },
} as const;

export const ProfileBody = {
  type: 'object',
  properties: {
    buildId: { type: 'string', description: 'ignored: the path names the build (accepted so that a profile file can be sent as is)' },
    layouts: { type: 'array', items: { type: 'string', enum: [...ENTRY_LAYOUTS] }, description: 'Entry layouts the build\'s entry code produces (inferred from the symbols when absent).' },
    stubs: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        properties: {
          entry: { type: 'string', enum: [...ENTRY_TYPES] },
          offset: { type: 'integer', multipleOf: 8 },
          indirect: { type: 'boolean' },
        },
        additionalProperties: false,
      },
    },
    kasan: { type: 'boolean' },
    framePointers: { type: 'boolean', description: 'false: built without frame pointers; the frame-pointer strategies then answer not_applicable' },
  },
  additionalProperties: false,
} as const;

export const KernelReply = {
  type: 'object',
  properties: {
    buildId: { type: 'string' },
    symbols: { type: 'integer' },
    layouts: { type: 'array', items: { type: 'string' } },
    hasSymbols: { type: 'boolean' },
    rev: { type: 'integer' },
    options: { type: 'object', additionalProperties: true },
    orc: { type: 'object', properties: { entries: { type: 'integer' }, layout: { type: 'string' } }, description: 'The ORC table uploaded for the build, if any.' },
  },
} as const;

export const OrcBody = {
  content: {
    'application/octet-stream': { schema: { description: 'The ORC upload form: 24-byte header ("SSORC\\0" "1\\0", layout 2|3, 3 zero bytes, u32 entries, u64 .orc_unwind_ip load address), then .orc_unwind_ip and .orc_unwind as in the vmlinux (docs/api.md).' } },
    'application/gzip': { schema: { description: 'gzip of the above' } },
  },
} as const;

export const OrcReply = {
  type: 'object',
  properties: { buildId: { type: 'string' }, entries: { type: 'integer' }, layout: { type: 'string' }, rev: { type: 'integer' } },
} as const;

export const SummaryQuery = {
  type: 'object',
  properties: {
    host: { type: 'string', maxLength: 200 },
    kernel: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
  },
  additionalProperties: false,
} as const;

const FILTER_REASONS = [...REASONS, ...VERDICTS, 'false_reliable', 'disagreement'];

export const TracesQuery = {
  type: 'object',
  properties: {
    host: { type: 'string', maxLength: 200 },
    kernel: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
    strategy: { type: 'string', enum: [...STRATEGIES, 'orc'], description: 'traces on which this strategy failed' },
    reason: { type: 'string', enum: FILTER_REASONS, description: 'traces failing with this reason (of an entry-aware strategy), false_reliable or disagreement' },
    status: { type: 'string', enum: ['failing', 'passing'] },
    since: { type: 'string', description: 'ISO 8601 time or milliseconds since the epoch (received at or after)' },
    until: { type: 'string', description: 'ISO 8601 time or milliseconds since the epoch (received at or before)' },
    cursor: { type: 'string', maxLength: 400, description: 'the `next` value of the previous page' },
    limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
  },
  additionalProperties: false,
} as const;

export const TraceListReply = {
  type: 'object',
  properties: {
    items: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          received_at: { type: 'string' },
          host: { type: 'string' },
          kernel: { type: 'string' },
          status: { type: 'string' },
          strategies: { type: 'array', items: { type: 'string' } },
          reasons: { type: 'array', items: { type: 'string' } },
          url: { type: 'string' },
        },
      },
    },
    next: { type: ['string', 'null'] },
  },
} as const;

export const FindingIdParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^[0-9a-f]{16}$', description: 'A finding id: 16 hex digits, stable across kernel builds.' } },
} as const;

export const FindingsQuery = {
  type: 'object',
  properties: {
    state: { type: 'string', enum: ['new', 'known'] },
    strategy: { type: 'string', pattern: '^[a-z_]{1,32}(,[a-z_]{1,32})?$', description: 'a strategy, or a pair "a,b" for disagreements' },
    kernel: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$', description: 'findings seen on this build (among the first 20 builds a finding lists)' },
    sort: { type: 'string', enum: ['count', 'last_seen'], default: 'count', description: 'most frequent first, or most recently seen first' },
    cursor: { type: 'string', maxLength: 400, description: 'the `next` value of the previous page' },
    limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
  },
  additionalProperties: false,
} as const;

export const FindingBody = {
  type: 'object',
  required: ['state'],
  properties: {
    state: { type: 'string', enum: ['known', 'new'], description: 'known: acknowledged, its failures no longer page; new: back to untriaged' },
    note: { type: 'string', maxLength: MAX_NOTE, description: 'why it is known (a bug link, "blind spot of the retpoline thunks"); replaces the previous note, kept when absent' },
  },
  additionalProperties: false,
} as const;

const nullableString = { type: ['string', 'null'] } as const;

export const Finding = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    title: { type: 'string' },
    strategy: { type: 'string' },
    verdict: { type: 'string' },
    reason: { type: 'string' },
    entry: { type: 'string' },
    fn: { type: 'string', description: 'where the walk stopped, or the first frame lost or invented' },
    where: { type: 'string', description: 'stopped (the walk ended in an error in fn), lost (fn is missing), extra (fn was invented), ended (a complete walk judged wrong at its last frame), disagreed' },
    false_reliable: { type: 'boolean' },
    count: { type: 'integer', description: 'failing unwinds of this signature, every one counted once' },
    first_seen: { type: 'string' },
    last_seen: { type: 'string' },
    hosts: { type: 'array', items: { type: 'string' }, description: 'the first 20 hosts it was seen on' },
    kernels: { type: 'array', items: { type: 'string' }, description: 'the first 20 kernel builds it was seen on' },
    offsets: { type: 'array', items: { type: 'string' }, description: 'the first 10 fn+0xoff it was seen at' },
    examples: {
      type: 'array',
      description: 'the newest stored traces of it (at most 5; evicted ones left out)',
      items: { type: 'object', properties: { id: { type: 'string' }, url: { type: 'string' } } },
    },
    state: { type: 'string', enum: ['new', 'known'] },
    note: nullableString,
    acknowledged_by: nullableString,
    acknowledged_at: nullableString,
  },
} as const;

export const FindingListReply = {
  type: 'object',
  properties: {
    items: { type: 'array', items: Finding },
    next: { type: ['string', 'null'] },
    total: { type: 'integer', description: 'findings stored' },
    overflow: { type: 'integer', description: 'failing unwinds of new findings not stored because STACKSANITY_FINDINGS_MAX findings are (still counted in the metrics)' },
  },
} as const;
