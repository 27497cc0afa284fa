// /proc/kallsyms and System.map: "addr type name" per line; kallsyms adds "\t[module]" for module
// symbols (kernel/kallsyms.c s_show). Addresses print as zeros when the reader may not see them.
import { DumpError } from '../dump/errors.ts';
import { parseHex64 } from '../u64.ts';
import type { KernelSymbol } from './table.ts';

export interface KallsymsParse {
  /** Every symbol, data included, in file order. */
  symbols: KernelSymbol[];
  /** Lines that were not symbols (blank lines are not counted). */
  skipped: { line: number; text: string }[];
}

export const RESTRICTED_HINT =
  'every address is zero: the file was read without permission to see kernel addresses ' +
  '(kernel.kptr_restrict). Read /proc/kallsyms as root with kptr_restrict <= 1, or run ' +
  '`sysctl -w kernel.kptr_restrict=0` (and kernel.perf_event_paranoid <= 1 for a non-root reader), then read it again';

/**
 * Parses kallsyms or System.map text. Malformed lines are skipped and reported, not fatal: a real
 * System.map carries odd lines (absolute symbols, per-cpu symbols at 0) that must not sink a load.
 * Throws DumpError when no symbol has a non-zero address (restricted access) or nothing parsed.
 */
export function parseKallsyms(text: string, file = 'kallsyms'): KallsymsParse {
  const symbols: KernelSymbol[] = [];
  const skipped: { line: number; text: string }[] = [];
  let nonZero = 0;
  let lineNo = 0;
  let pos = 0;
  const n = text.length;
  while (pos < n) {
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = n;
    const raw = text.slice(pos, eol);
    pos = eol + 1;
    lineNo++;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') continue;
    const tab = line.indexOf('\t');
    const main = tab >= 0 ? line.slice(0, tab) : line;
    const modPart = tab >= 0 ? line.slice(tab + 1).trim() : '';
    const f = main.trim().split(/ +/);
    if (f.length < 3 || f[1]!.length !== 1) {
      skipped.push({ line: lineNo, text: line });
      continue;
    }
    const address = parseHex64(f[0]!);
    if (address === undefined) {
      skipped.push({ line: lineNo, text: line });
      continue;
    }
    let module: string | undefined;
    if (modPart !== '') {
      if (!modPart.startsWith('[') || !modPart.endsWith(']')) {
        skipped.push({ line: lineNo, text: line });
        continue;
      }
      module = modPart.slice(1, -1);
    } else if (f.length > 3 && f[3]!.startsWith('[')) {
      // Some tools rewrite the tab as a space.
      module = f[3]!.replace(/^\[|\]$/g, '');
    }
    if (address !== 0n) nonZero++;
    const sym: KernelSymbol = { name: f[2]!, address, type: f[1]! };
    if (module !== undefined) sym.module = module;
    symbols.push(sym);
  }
  if (symbols.length === 0) {
    throw new DumpError('bad_field', `no symbol lines found (expected "address type name" per line)`, { file });
  }
  if (nonZero === 0) throw new DumpError('bad_field', RESTRICTED_HINT, { file, line: 1, field: 'address' });
  return { symbols, skipped };
}

/** nm letters for code. W/w are weak symbols, which in the kernel are almost always functions. */
export function isTextType(type: string): boolean {
  return type === 'T' || type === 't' || type === 'W' || type === 'w';
}
