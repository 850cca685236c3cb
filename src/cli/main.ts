#!/usr/bin/env node
/**
 * `fan`: the command line of the fanotify package.
 * @packageDocumentation
 */
import { Command } from 'commander';
import { traceCommand } from './trace.js';
import { watchCommand } from './watch.js';
import { journalCommand } from './journal.js';
import { guardCommand, scanCommand } from './guard.js';
import { hsmCommand } from './hsm.js';
import { serveCommand } from './serve.js';
import { connectCommand } from './connect.js';
import { reportFailure } from './output.js';

const program = new Command('fan')
  .description(
    'Linux fanotify from the command line: trace file access system-wide, watch trees, guard opens.\n' +
      'Most commands need root (CAP_SYS_ADMIN) and Linux 5.17+; see each command\'s --help.',
  )
  .version('0.1.0', '-V, --version')
  .showHelpAfterError('(run with --help for usage)')
  .addHelpText(
    'after',
    `
Examples:
  sudo fan watch --json /srv/app       changes under /srv/app as NDJSON, ready in constant time
  sudo fan journal run /srv/app        record changes; then: fan journal since /srv/app CURSOR
  sudo fan guard -p policy.yaml /srv   answer opens under /srv by policy rules
  sudo fan scan --clamd /run/clamav/clamd.ctl --prevent /home   on-access virus scanning
  sudo fan hsm mount http://host/tree /data/tree   a remote tree as files fetched on first read
  sudo fan trace                       every file access on every real filesystem
  sudo fan trace --json /srv           NDJSON records for accesses under /srv
  sudo fan trace -c -f +D<> -s 10      creates, deletes and renames on this mount, 10 seconds
  sudo fan serve --journal             serve events to local users (fan connect, watch() without root)
  fan connect /run/fanotify/fan.sock ~/src   changes under ~/src through the daemon

Exit status: 0 on success, 1 on a runtime failure, 2 on a usage error.`,
  );

program.addCommand(watchCommand());
program.addCommand(journalCommand());
program.addCommand(guardCommand());
program.addCommand(scanCommand());
program.addCommand(traceCommand());
program.addCommand(hsmCommand());
program.addCommand(serveCommand());
program.addCommand(connectCommand());

program.exitOverride((err) => {
  process.exit(err.exitCode === 0 ? 0 : 2);
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  reportFailure(err);
}
