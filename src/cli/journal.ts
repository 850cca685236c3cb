/**
 * `fan journal`: record changes persistently and ask what changed since a cursor.
 * @packageDocumentation
 */
import { realpathSync } from 'node:fs';
import { Command, Option } from 'commander';
import { FanotifyError } from '../errors.js';
import {
  Recorder,
  JournalStore,
  openJournal,
  parseCursor,
  formatCursor,
  pidAlive,
  defaultStateDir,
  DEFAULT_RETENTION,
  rootTag,
  type SinceResult,
} from '../journal/index.js';
import { action, LineWriter, onShutdown, positiveInt } from './output.js';

interface CommonFlags {
  stateDir?: string;
  json?: boolean;
}

const stateDirOption = (): Option =>
  new Option('--state-dir <dir>', `where journal.db lives (default ${defaultStateDir()})`);

function realRoot(root: string): string {
  try {
    return realpathSync(root);
  } catch {
    throw new FanotifyError(`journal: ${root}: no such directory`, 'ENOENT');
  }
}

/** Parse a duration like 90s, 30m, 12h, 7d (or plain milliseconds). */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    process.stderr.write(`fan: a duration looks like 90s, 30m, 12h or 7d; got "${text}"\n`);
    process.exit(2);
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms'];
  return Number(m[1]) * unit;
}

function formatSince(r: SinceResult, json: boolean, out: LineWriter): void {
  if (json) {
    out.push(JSON.stringify(r));
    return;
  }
  if (r.freshInstance) out.push(`# fresh instance (${r.reason}): listing every entry; treat your view as unknown`);
  for (const c of r.changes) {
    const dir = c.isDir ? '/' : '';
    out.push(c.kind === 'renamed' ? `renamed ${c.oldPath}${dir} -> ${c.path}${dir}` : `${c.kind.padEnd(7)} ${c.path}${dir}`);
  }
  out.push(`# cursor ${r.cursor}`);
}

/** Build the `journal` command and its subcommands. */
export function journalCommand(): Command {
  const journal = new Command('journal').description(
    'A persistent, crash-safe record of what changed under directory trees, queried by cursor: ' +
      '"what changed since I last looked?", across your restarts and the recorder\'s.',
  );

  journal
    .command('run')
    .description('Record changes under the roots until stopped (SIGINT/SIGTERM). Reconciles on start, so changes made while it was not running are recorded too.')
    .argument('<roots...>', 'directories to record')
    .addOption(stateDirOption())
    .option('--max-age <duration>', 'drop changes older than this (e.g. 7d, 12h)', parseDuration)
    .option('--max-changes <n>', `keep at most n changes per root (default ${DEFAULT_RETENTION.maxChanges})`, positiveInt('--max-changes'))
    .addOption(
      new Option('-i, --ignore <glob>', 'do not record paths matching this (repeatable)')
        .argParser((v: string, prev: string[]) => [...prev, v])
        .default([]),
    )
    .option('--bounded-queue', 'keep the kernel event queue at /proc/sys/fs/fanotify/max_queued_events: a burst beyond it overflows and is reconciled (default: unlimited queue, nothing overflows)')
    .option('--json', 'log reconciliations and errors as NDJSON')
    .action(
      action(async (roots: string[], flags: CommonFlags & { maxAge?: number; maxChanges?: number; ignore: string[]; boundedQueue?: boolean }) => {
        const log = (obj: Record<string, unknown>, text: string): void => {
          process.stderr.write(flags.json ? `${JSON.stringify({ time: new Date().toISOString(), ...obj })}\n` : `fan journal: ${text}\n`);
        };
        const rec = await Recorder.start(roots, {
          stateDir: flags.stateDir,
          ignore: flags.ignore,
          unlimitedQueue: !flags.boundedQueue,
          retention: { maxAgeMs: flags.maxAge, maxChanges: flags.maxChanges },
          onError: (err) => log({ type: 'error', message: err.message }, err.message),
          onReconcile: (root, info) =>
            log(
              { type: 'reconcile', root, ...info },
              `reconciled ${root} (${info.reason}): ${info.changes} changes in ${info.ms.toFixed(0)} ms`,
            ),
        });
        log({ type: 'ready', roots: rec.roots, db: rec.store.path }, `recording ${rec.roots.join(', ')} into ${rec.store.path}`);
        onShutdown(() => rec.close());
      }),
    );

  journal
    .command('since')
    .description('Print what changed under ROOT after CURSOR, coalesced per path, and a new cursor.')
    .argument('<root>', 'a recorded directory')
    .argument('<cursor>', 'a cursor from `fan journal cursor` or a previous `since`')
    .addOption(stateDirOption())
    .option('--json', 'one JSON object: {cursor, freshInstance, reason, changes: [{kind, path, oldPath, isDir}]}')
    .option('--empty-on-fresh', 'on a fresh instance, list nothing instead of every entry')
    .action(
      action(async (root: string, cursor: string, flags: CommonFlags & { emptyOnFresh?: boolean }) => {
        if (!parseCursor(cursor)) {
          process.stderr.write(`fan: "${cursor}" is not a journal cursor (they look like fj1:<instance>:<root>:<seq>); get one with \`fan journal cursor ${root}\`\n`);
          process.exit(2);
        }
        const path = realRoot(root);
        // A read: fail (naming the fix) where there is no journal, rather than make an empty one.
        JournalStore.open({ stateDir: flags.stateDir, readonly: true }).close();
        const j = await openJournal(path, { stateDir: flags.stateDir, record: false });
        try {
          const out = new LineWriter();
          formatSince(await j.since(cursor, { emptyOnFreshInstance: flags.emptyOnFresh }), flags.json ?? false, out);
          out.flush();
        } finally {
          await j.close();
        }
      }),
    );

  journal
    .command('cursor')
    .description('Print a cursor at the newest recorded change of ROOT.')
    .argument('<root>', 'a recorded directory')
    .addOption(stateDirOption())
    .action(
      action((root: string, flags: CommonFlags) => {
        const path = realRoot(root);
        const store = JournalStore.open({ stateDir: flags.stateDir, readonly: true });
        try {
          const row = store.root(path);
          if (!row) throw new FanotifyError(`journal: ${path} is not recorded (start \`fan journal run ${path}\`)`, 'ENOENT');
          process.stdout.write(`${formatCursor({ instance: store.instance, rootTag: rootTag(path), seq: row.highSeq })}\n`);
        } finally {
          store.close();
        }
      }),
    );

  journal
    .command('status')
    .description('Show the recorded roots: changes kept, oldest cursor, recorder, last reconciliation.')
    .addOption(stateDirOption())
    .option('--json', 'one JSON object')
    .action(
      action((flags: CommonFlags) => {
        const store = JournalStore.open({ stateDir: flags.stateDir, readonly: true });
        try {
          const roots = store.roots().map((r) => ({
            root: r.path,
            changes: store.changeCount(r.id),
            newestSeq: r.highSeq,
            oldestCursor: formatCursor({ instance: store.instance, rootTag: rootTag(r.path), seq: Math.max(0, r.lowSeq - 1) }),
            recorderPid: pidAlive(r.recorderPid) ? r.recorderPid : null,
            lastStopClean: r.clean === 1,
            lastReconcile: r.lastReconcileAt === null ? null : { at: new Date(r.lastReconcileAt).toISOString(), ms: r.lastReconcileMs, changes: r.lastReconcileChanges },
          }));
          const status = { db: store.path, instance: store.instance, sizeBytes: store.sizeBytes, roots };
          if (flags.json) {
            process.stdout.write(`${JSON.stringify(status)}\n`);
            return;
          }
          const lines = [`journal ${store.path} (${(status.sizeBytes / 1024).toFixed(0)} KiB, instance ${store.instance})`];
          for (const r of roots) {
            lines.push(
              `${r.root}: ${r.changes} changes, newest seq ${r.newestSeq}, ` +
                `${r.recorderPid ? `recording (pid ${r.recorderPid})` : 'not recording'}, ` +
                `last reconcile ${r.lastReconcile ? `${r.lastReconcile.at} (${r.lastReconcile.changes} changes, ${Number(r.lastReconcile.ms).toFixed(0)} ms)` : 'never'}`,
              `  oldest cursor ${r.oldestCursor}`,
            );
          }
          process.stdout.write(`${lines.join('\n')}\n`);
        } finally {
          store.close();
        }
      }),
    );

  journal
    .command('rebuild')
    .description('Recover from a corrupt journal: keep the damaged file aside and start a new journal (every old cursor becomes a fresh instance).')
    .addOption(stateDirOption())
    .action(
      action((flags: CommonFlags) => {
        const store = JournalStore.open({ stateDir: flags.stateDir, rebuildIfCorrupt: true });
        process.stdout.write(`journal ${store.path} is usable (instance ${store.instance})\n`);
        store.close();
      }),
    );

  return journal;
}
