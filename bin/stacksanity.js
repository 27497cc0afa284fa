#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx's loader: one artefact, no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../services/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
