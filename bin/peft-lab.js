#!/usr/bin/env node
'use strict';
// The command-line entry: runs the bundled CLI (npm run build makes it).
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const cli = join(__dirname, '..', 'dist', 'cli.js');
if (!existsSync(cli)) {
  process.stderr.write(`peft-lab: ${cli} is missing; run "npm run build" first\n`);
  process.exit(2);
}
require(cli);
