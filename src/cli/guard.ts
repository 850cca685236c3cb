/**
 * `fan guard` and `fan scan`: answer permission events by policy, or by a clamd scan.
 * @packageDocumentation
 */
import { createConnection } from 'node:net';
import { Command, Option } from 'commander';
import { Guard, loadPolicy, policyFrom, type DecisionRecord, type Policy } from '../guard/index.js';
import { ClamdScanner, quarantine } from '../scan/index.js';
import { native } from '../native.js';
import { NonBlockingLines } from './nonblocking-lines.js';
import { onShutdown, positiveInt, reportFailure } from './output.js';

interface CommonFlags {
  json?: boolean;
  log?: string;
  dryRun?: boolean;
  filesystem?: boolean;
  noCache?: boolean;
  cache?: boolean;
}

/**
 * How long a decision line may wait to be written: lines are written in batches, apart from
 * answering (one write(2) per line, in series with the answers, cost a sequential scan more than
 * a tenth of its throughput).
 */
const LOG_FLUSH_MS = 20;

/** Decision lines kept for a reader that does not keep up, before later ones are dropped (counted). */
const LOG_MAX_QUEUED_BYTES = 4 * 1024 * 1024;

/** How long the exit waits for the log's reader to take the last lines. */
const LOG_CLOSE_MS = 2000;

/** The decision log: NDJSON (or text) lines, never blocking the answering thread. */
function decisionLog(flags: CommonFlags): { writer: NonBlockingLines; write(r: DecisionRecord): void } {
  const writer = new NonBlockingLines(flags.log ?? 'stdout', {
    flushAfterMs: LOG_FLUSH_MS,
    maxQueuedBytes: LOG_MAX_QUEUED_BYTES,
    dropNotice: (n) =>
      flags.json
        ? JSON.stringify({ time: new Date().toISOString(), dropped: n, reason: 'the log reader did not keep up' })
        : `DROPPED ${n} decision lines: the log reader did not keep up`,
    onError: (err) => process.stderr.write(`fan: decision log: ${err.message}\n`),
  });
  return {
    writer,
    write(r) {
      writer.push(
        flags.json
          ? JSON.stringify(r)
          : `${r.answer.toUpperCase().padEnd(5)} ${r.event.padEnd(6)} ${r.comm ?? '?'}(${r.pid}) ${r.path}  [${r.rule}${r.signature ? `: ${r.signature}` : ''}${r.error ? `: ${r.error}` : ''}${r.dryRun ? ', dry run' : ''}${r.cached ? ', cached' : ''}]`,
      );
    },
  };
}

/** Ask the clamd socket who serves it, so its own file reads are never held (self-exclusion). */
async function clamdPid(socket: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const conn = createConnection(socket);
    conn.once('connect', () => {
      try {
        const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
        resolve(native.peerCred(fd).pid);
      } catch {
        resolve(undefined);
      }
      conn.destroy();
    });
    conn.once('error', () => resolve(undefined));
  });
}

/** The guard stopped reading events (and released its group): say so, flush the log, exit 1. */
function exitOnFailure(log: NonBlockingLines): (err: Error) => void {
  return (err) => {
    process.stderr.write(`fan: ${err.message}\n`);
    void log.close(LOG_CLOSE_MS).finally(() => process.exit(1));
  };
}

/** Serve until SIGINT/SIGTERM; SIGHUP runs `onHup` (default: flush cached decisions), SIGUSR1 prints metrics. */
function run(guard: Guard, flags: CommonFlags, log: NonBlockingLines, onHup?: () => void): void {
  process.stderr.write(`fan: guarding (${guard.policy.rules.length} rules, deadline ${guard.policy.timeoutMs} ms, errors → ${guard.policy.onError})${flags.dryRun ? ' in dry-run mode: everything is allowed' : ''}\n`);
  process.on(
    'SIGHUP',
    onHup ??
      (() => {
        guard.flushCache();
        process.stderr.write('fan: SIGHUP: cached decisions flushed\n');
      }),
  );
  const printMetrics = (): void => void process.stderr.write(`${JSON.stringify({ metrics: guard.metrics, responses: guard.responseStats })}\n`);
  process.on('SIGUSR1', printMetrics);
  onShutdown(async () => {
    await guard.close(); // answers every pending event before exit
    await log.close(LOG_CLOSE_MS); // the last answers' decisions included
    printMetrics();
  });
}

const common = (cmd: Command): Command =>
  cmd
    .option('--json', 'log decisions as NDJSON')
    .option('--log <file>', 'append the decision log to this file instead of standard output')
    .option('--dry-run', 'decide and log, but always allow')
    .option('--filesystem', 'mark whole filesystems instead of mounts')
    .option('--no-cache', 'do not let the kernel remember allowed files (ignore marks)');

/** Build the `guard` subcommand. */
export function guardCommand(): Command {
  return common(
    new Command('guard')
      .description(
        'Answer every open/exec (and optionally read) of files under PATHS by the rules of a policy file: ' +
          'allow, deny (with an errno), audit, or scan. Every access is answered within the policy deadline, ' +
          'exactly once; SIGINT/SIGTERM answer what is pending before exit; SIGHUP reloads the policy and flushes cached decisions.',
      )
      .requiredOption('-p, --policy <file>', 'YAML or JSON policy (see docs/guard.md)')
      .argument('<paths...>', 'directories to guard (their mounts are marked)'),
  )
    .option('--clamd <socket>', 'clamd unix socket for "scan" rules')
    .addHelpText(
      'after',
      `
Policy example:
  default: allow          # when no rule matches
  onError: allow          # on deadline, scanner or handler failure
  timeoutMs: 2000
  events: [open, exec]
  rules:
    - { name: no-secrets, match: { path: "/srv/secret/**", comm: [curl, wget] }, verdict: deny }
    - { match: { path: "**/*.exe" }, verdict: scan }

Requirements: root (CAP_SYS_ADMIN). Rules denying with an errno other than EPERM need Linux 6.14+
and ext4/xfs/btrfs (pre-content events).`,
    )
    .action(async (paths: string[], flags: CommonFlags & { policy: string; clamd?: string }) => {
      try {
        let policy = await loadPolicy(flags.policy);
        const log = decisionLog(flags);
        const scanner = flags.clamd ? new ClamdScanner({ socket: flags.clamd }) : undefined;
        const scannerPid = flags.clamd ? await clamdPid(flags.clamd) : undefined;
        const guard = Guard.start({
          paths,
          policy,
          scanner,
          dryRun: flags.dryRun,
          cache: flags.cache !== false,
          markKind: flags.filesystem ? 'filesystem' : 'mount',
          log: (r) => log.write(r),
          excludePids: scannerPid ? [scannerPid] : [],
          ownPaths: flags.log ? [flags.log] : [],
          onFailure: exitOnFailure(log.writer),
        });
        run(guard, flags, log.writer, () => {
          loadPolicy(flags.policy).then(
            (next: Policy) => {
              guard.reload(next);
              policy = next;
              process.stderr.write(`fan: policy reloaded (${policy.rules.length} rules); cached decisions flushed\n`);
            },
            (err: unknown) => process.stderr.write(`fan: policy not reloaded: ${(err as Error).message}\n`),
          );
        });
      } catch (err) {
        reportFailure(err);
      }
    });
}

/** Build the `scan` subcommand. */
export function scanCommand(): Command {
  return common(
    new Command('scan')
      .description(
        'On-access virus scanning with clamd, like clamonacc but concurrent: each open of a file under PATHS is ' +
          'scanned (the file descriptor is passed to clamd), clean files are cached in the kernel until modified, ' +
          'infected ones are logged and, with --prevent, denied.',
      )
      .requiredOption('--clamd <socket>', 'clamd unix socket (LocalSocket in clamd.conf)')
      .argument('<paths...>', 'directories to protect (their mounts are marked)'),
  )
    .option('--prevent', 'deny access to infected files (default: only report)')
    .option('--quarantine <dir>', 'move infected files into this directory, with a .json of metadata')
    .option('--instream', 'stream file contents to clamd (INSTREAM) instead of passing the fd (FILDES)')
    .option('-w, --workers <n>', 'scans in flight at once (clamd connections)', positiveInt('--workers'), 4)
    .option('--timeout <ms>', 'answer with --on-error when a scan takes longer', positiveInt('--timeout'), 10_000)
    .addOption(new Option('--on-error <verdict>', 'answer when clamd fails or is slow').choices(['allow', 'deny']).default('allow'))
    .option('--exec', 'scan executions too, not only opens')
    .option('--log-clean', 'log every scanned file, clean ones too (default: only detections, scan errors and deadline answers)')
    .action(
      async (
        paths: string[],
        flags: CommonFlags & {
          clamd: string;
          prevent?: boolean;
          quarantine?: string;
          instream?: boolean;
          workers: number;
          timeout: number;
          onError: 'allow' | 'deny';
          exec?: boolean;
          logClean?: boolean;
        },
      ) => {
        try {
          const scanner = new ClamdScanner({
            socket: flags.clamd,
            mode: flags.instream ? 'instream' : 'fildes',
            poolSize: flags.workers,
            timeoutMs: flags.timeout,
          });
          const log = decisionLog(flags);
          const scannerPid = await clamdPid(flags.clamd);
          const policy = policyFrom({
            default: 'allow',
            onError: flags.onError,
            // The kernel deadline must outlast a scan; the scanner's own timeout answers first.
            timeoutMs: flags.timeout + 1000,
            events: flags.exec ? ['open', 'exec'] : ['open'],
            rules: [{ name: 'scan', verdict: 'scan' }],
          });
          const guard = Guard.start({
            paths,
            policy,
            scanner,
            cache: flags.cache !== false,
            markKind: flags.filesystem ? 'filesystem' : 'mount',
            // Without --prevent, infected files are reported and allowed.
            dryRun: flags.dryRun || !flags.prevent,
            log: (r) => log.write(r),
            logAllowed: flags.logClean === true,
            excludePids: scannerPid ? [scannerPid] : [],
            ownPaths: [flags.log, flags.quarantine].filter((p): p is string => p !== undefined),
            onFailure: exitOnFailure(log.writer),
            onInfected: flags.quarantine
              ? async (r) => {
                  try {
                    const q = await quarantine(r.path, flags.quarantine!, { signature: r.signature, pid: r.pid, comm: r.comm, exe: r.exe, uid: r.uid });
                    process.stderr.write(`fan: quarantined ${r.path} (${r.signature}) as ${q.quarantinedPath}\n`);
                  } catch (err) {
                    process.stderr.write(`fan: could not quarantine ${r.path}: ${(err as Error).message}\n`);
                  }
                }
              : undefined,
          });
          run(guard, flags, log.writer);
        } catch (err) {
          reportFailure(err);
        }
      },
    );
}
