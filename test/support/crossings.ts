// The entry-boundary cross-check over a live run, as the real-kernel tests assert it: no boundary
// may disagree, and the run must have crossed at least one syscall boundary to mean anything.
import assert from 'node:assert/strict';
import type { CheckedSample } from '../../services/realkernel/run.ts';

export function assertCrossingsAgree(run: readonly CheckedSample[]): void {
  const kinds = new Map<string, number>();
  for (const c of run) {
    for (const x of c.crossings) {
      assert.notEqual(x.result, 'mismatch', `${c.sample.comm}: ${x.message}`);
      kinds.set(`${x.result} ${x.entry}`, (kinds.get(`${x.result} ${x.entry}`) ?? 0) + 1);
    }
  }
  assert.ok((kinds.get('agree syscall') ?? 0) > 0, `crossings: ${JSON.stringify([...kinds])}`);
}
