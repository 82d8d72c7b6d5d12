// What the browser test scripts share: reading their settings from the
// environment and running their `main` under a watchdog.

// The value of the environment variable `name`; exits with status 2 when it
// is not set (the Rust test that runs the script sets them all).
export function env(script, name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${script}: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

// Runs `main`, printing `[tag] ok` on success; a failure prints its stack and
// exits with status 1, and a run longer than `wholeTestMs` exits with 3.
export function run(tag, wholeTestMs, main) {
  const watchdog = setTimeout(() => {
    console.error(`[${tag}] not done within ${wholeTestMs} ms`);
    process.exit(3);
  }, wholeTestMs);
  main().then(
    () => {
      clearTimeout(watchdog);
      console.log(`[${tag}] ok`);
    },
    (e) => {
      console.error(`[${tag}] FAILED: ${e.stack ?? e}`);
      process.exit(1);
    },
  );
}
