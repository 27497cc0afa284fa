#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx's loader: one artefact, no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../services/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
// The command has finished: whatever still holds the event loop now (a leaked socket or timer)
// would keep a failed start hanging. The timer itself does not hold the loop.
setTimeout(() => process.exit(), 3000).unref();
