// mocha reporter: the spec reporter's output, then `N passed, N failed, N skipped` alone on the
// last line (CI reads that line, not mocha's own summary). Under REQUIRE_SERVICES=1 a skipped
// test counts as failed: CI must not go green on suites that did not run.
'use strict';
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING } =
  Mocha.Runner.constants;

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const strict = process.env.REQUIRE_SERVICES === '1';
    runner.on(EVENT_TEST_PASS, () => passed++);
    runner.on(EVENT_TEST_FAIL, () => failed++);
    runner.on(EVENT_TEST_PENDING, (test) => {
      if (strict) {
        failed++;
        process.stdout.write(
          `REQUIRE_SERVICES=1: skipped test counts as failed: ${test.fullTitle()}\n`,
        );
      } else skipped++;
    });
    runner.once(EVENT_RUN_END, () => {
      if (strict && failed > 0) process.exitCode = 1;
      process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
    });
  }
}

module.exports = SummaryReporter;
