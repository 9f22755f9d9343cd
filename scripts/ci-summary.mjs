#!/usr/bin/env node
// Prints what the CI reads from vitest's JSON report (`vitest run --reporter=json
// --outputFile=FILE`): one line per skipped test, then their count, then the plain closing line
// `N passed, N failed`, always the last line:
//
//   skipped: test/sudoers.test.ts > sudoers > passes visudo -c (visudo is not installed)
//   1 skipped
//   412 passed, 0 failed
//
//   node scripts/ci-summary.mjs [REPORT] [VITEST_EXIT_STATUS]
//
// A skipped test's reason is its meta.skipReason (test/support/skip.ts: skipBecause), if it has
// one. REPORT defaults to .ci/vitest-report.json. A missing or unreadable report prints
// `0 passed, 1 failed`. A test file that failed without a failed test (import error, failing
// beforeAll…) counts as one failure, and so does a non-zero VITEST_EXIT_STATUS with no failure in
// the report (e.g. unhandled errors), so the line never says `0 failed` for a red run.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

const file = process.argv[2] ?? '.ci/vitest-report.json';
const status = process.argv[3] === undefined ? undefined : Number(process.argv[3]);

const SKIPPED = new Set(['skipped', 'pending', 'todo', 'disabled']);

/** One line for a skipped test: its file, suites and name, and why if it says. */
function skippedLine(testFile, test) {
  const where = typeof testFile.name === 'string' ? relative(process.cwd(), testFile.name) || testFile.name : '?';
  const titles = [...(Array.isArray(test.ancestorTitles) ? test.ancestorTitles : []), test.title].filter(
    (t) => typeof t === 'string' && t !== '',
  );
  const reason = typeof test.meta?.skipReason === 'string' ? test.meta.skipReason : test.status === 'todo' ? 'todo' : undefined;
  return `skipped: ${[where, ...titles].join(' > ')}${reason ? ` (${reason})` : ''}`;
}

function summary() {
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    report = null;
  }
  if (typeof report !== 'object' || report === null) return { passed: 0, failed: 1, skipped: 0, skippedLines: [] };
  const num = (v) => (Number.isFinite(v) ? v : 0);
  const passed = num(report.numPassedTests);
  let failed = num(report.numFailedTests);
  const skippedLines = [];
  for (const f of Array.isArray(report.testResults) ? report.testResults : []) {
    const tests = Array.isArray(f.assertionResults) ? f.assertionResults : [];
    if (f.status === 'failed' && !tests.some((t) => t.status === 'failed')) failed += 1;
    for (const t of tests) if (SKIPPED.has(t.status)) skippedLines.push(skippedLine(f, t));
  }
  const skipped = Math.max(num(report.numPendingTests) + num(report.numTodoTests), skippedLines.length);
  if (failed === 0 && (report.success === false || (status !== undefined && status !== 0))) failed = 1;
  return { passed, failed, skipped, skippedLines };
}

const { passed, failed, skipped, skippedLines } = summary();
for (const line of skippedLines) console.log(line);
if (skipped > 0) console.log(`${skipped} skipped`);
console.log(`${passed} passed, ${failed} failed`);
