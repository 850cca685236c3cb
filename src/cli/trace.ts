/**
 * `fan trace`: fatrace's job, with a path on every event.
 * @packageDocumentation
 */
import { Command, Option } from 'commander';
import { trace, formatFatrace, formatJson, maskOfLetters, TYPE_LETTERS } from '../trace/index.js';
import { LineWriter, onShutdown, positiveInt, reportFailure } from './output.js';

interface TraceFlags {
  currentMount?: boolean;
  json?: boolean;
  filter?: string;
  command?: string;
  ignorePid: number[];
  seconds?: number;
  output?: string;
  timestamp: number;
}

/** Build the `trace` subcommand. */
export function traceCommand(): Command {
  return new Command('trace')
    .description(
      'Report file accesses system-wide, like fatrace: which process opened, read, wrote, closed, ' +
        'created, deleted or renamed which file. Every line carries a full path, also for files ' +
        'that were deleted before the event was read.',
    )
    .argument('[paths...]', 'trace only under these paths (their filesystems are marked); default: every real filesystem')
    .option('-c, --current-mount', 'trace only the filesystem of the current directory')
    .option('-f, --filter <types>', `show only these event types, from ${TYPE_LETTERS} (e.g. -f W+D)`)
    .option('-C, --command <name>', 'show only events of processes with this command name (comm)')
    .addOption(
      new Option('-p, --ignore-pid <pid>', 'ignore events of this process id (repeatable)')
        .argParser((v: string, prev: number[]) => [...prev, positiveInt('--ignore-pid')(v)])
        .default([]),
    )
    .option('-s, --seconds <n>', 'stop after n seconds', positiveInt('--seconds'))
    .option('-o, --output <file>', 'append to this file instead of standard output')
    .addOption(
      new Option('-t, --timestamp', 'prefix a time: once for HH:MM:SS.micro, twice for seconds since the epoch')
        .argParser((_v: string, prev: number) => Math.min(prev + 1, 2))
        .default(0),
    )
    .option('--json', 'write NDJSON: {time, pid, comm, exe, uid, events, types, path, oldPath, newPath, deleted}')
    .addHelpText(
      'after',
      `
Output:
  comm(pid): TYPES path            text, one access per line (fatrace's format)
  comm(pid): <>  old -> new        a rename, both paths on one line

Types:
  R read   W write   O open   C close   + create   D delete   < moved from   > moved to   A attributes
  The kernel merges repeated accesses of one process to one file into one line (e.g. "CWO").

Requirements:
  root (CAP_SYS_ADMIN) and Linux 5.17+ (filesystem marks reporting directory ids and names).
  Filesystems without file handles (e.g. some FUSE mounts) are skipped with a warning.

Examples:
  sudo fan trace -t
  sudo fan trace --json -s 5 /home > accesses.ndjson
  sudo fan trace -f +D -C make`,
    )
    .action(async (paths: string[], flags: TraceFlags) => {
      try {
        await runTrace(paths, flags);
      } catch (err) {
        reportFailure(err);
      }
    });
}

async function runTrace(paths: string[], flags: TraceFlags): Promise<void> {
  const selected = flags.currentMount ? [process.cwd(), ...paths] : paths;
  const filterMask = flags.filter === undefined ? undefined : maskOfLetters(flags.filter);
  const out = new LineWriter(flags.output);
  const timestamp = flags.timestamp as 0 | 1 | 2;
  const session = trace(
    {
      paths: selected.length > 0 ? selected : undefined,
      filterMask,
      command: flags.command,
      ignorePids: flags.ignorePid,
      onSkip: (fs, reason) => process.stderr.write(`fan trace: skipping ${fs.mount.mountPoint}: ${reason}\n`),
      onError: (err) => process.stderr.write(`fan trace: ${err instanceof Error ? err.message : String(err)}\n`),
    },
    (records) => {
      for (const r of records) out.push(flags.json ? formatJson(r) : formatFatrace(r, timestamp));
      out.flush();
    },
  );
  const stop = async (): Promise<void> => {
    await session.close();
    out.close();
  };
  onShutdown(stop);
  if (flags.seconds !== undefined) {
    setTimeout(() => {
      void stop().then(() => process.exit(0));
    }, flags.seconds * 1000);
  }
}
