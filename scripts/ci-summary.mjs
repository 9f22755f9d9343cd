#!/usr/bin/env node
// Prints the one plain closing line the CI reads: `N passed, N failed`
// (`, N skipped` appended when tests were skipped or todo), from vitest's JSON
// report (`vitest run --reporter=json --outputFile=FILE`).
//
//   node scripts/ci-summary.mjs [REPORT] [VITEST_EXIT_STATUS]
//
// REPORT defaults to .ci/vitest-report.json. A missing or unreadable report
// prints `0 passed, 1 failed`. A test file that failed without a failed test
// (import error, failing beforeAll…) counts as one failure, and so does a
// non-zero VITEST_EXIT_STATUS with no failure in the report (e.g. unhandled
// errors), so the line never says `0 failed` for a red run.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? '.ci/vitest-report.json';
const status = process.argv[3] === undefined ? undefined : Number(process.argv[3]);

function summary() {
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return { passed: 0, failed: 1, skipped: 0 };
  }
  const num = (v) => (Number.isFinite(v) ? v : 0);
  const passed = num(report.numPassedTests);
  let failed = num(report.numFailedTests);
  const skipped = num(report.numPendingTests) + num(report.numTodoTests);
  for (const f of Array.isArray(report.testResults) ? report.testResults : []) {
    const tests = Array.isArray(f.assertionResults) ? f.assertionResults : [];
    if (f.status === 'failed' && !tests.some((t) => t.status === 'failed')) failed += 1;
  }
  if (failed === 0 && (report.success === false || (status !== undefined && status !== 0))) failed = 1;
  return { passed, failed, skipped };
}

const { passed, failed, skipped } = summary();
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
