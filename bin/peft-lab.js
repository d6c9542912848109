#!/usr/bin/env node
'use strict';
// The command-line entry: runs the bundled CLI (npm run build makes it). The bundle starts by
// itself only when node runs it directly, so its `main` is called here.
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const cli = join(__dirname, '..', 'dist', 'cli.js');
if (!existsSync(cli)) {
  process.stderr.write(`peft-lab: ${cli} is missing; run "npm run build" first\n`);
  process.exit(2);
}
require(cli)
  .main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`peft-lab: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
