/** The firewall helper's entry point (program.ts). process.exit: a watchdog pipe not released must not keep us alive. */
import { firewallProgram } from './program.js';

firewallProgram(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`rxshuttle --firewall: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
