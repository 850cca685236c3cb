/**
 * fanotify for Node.js: typed kernel events, groups, path resolution, and the services built
 * on them.
 * @packageDocumentation
 */
export * from './kernel/index.js';
export {
  FanotifyGroup,
  isPermissionEvent,
  type GroupOptions,
  type GroupClass,
  type ReportOption,
  type DefaultVerdict,
  type MarkKind,
  type MarkOptions,
  type EventControl,
  type PermissionControl,
  type PermissionEvent,
  type GroupEvent,
  type EventHandler,
  type ListenOptions,
} from './group.js';
export { FanotifyError, kernelVersion, fsTypeName } from './errors.js';
export * from './resolve/index.js';
export {
  trace,
  formatFatrace,
  formatJson,
  typeLetters,
  maskOfLetters,
  type TraceOptions,
  type TraceRecord,
  type TraceSession,
} from './trace/index.js';
export {
  watch,
  Subscription,
  IgnoreMatcher,
  type WatchEvent,
  type WatchEventType,
  type WatchOptions,
  type WatchBackend,
  type ReadyInfo,
  type RescanReason,
  type SubscriptionEvents,
} from './watch/index.js';
export {
  openJournal,
  Recorder,
  JournalStore,
  DEFAULT_RETENTION,
  defaultStateDir,
  parseCursor,
  formatCursor,
  type Journal,
  type JournalOptions,
  type JournalChange,
  type SinceResult,
  type SinceOptions,
  type FreshReason,
  type RecorderOptions,
  type Retention,
} from './journal/index.js';
export {
  Guard,
  loadPolicy,
  parsePolicy,
  policyFrom,
  PolicyError,
  WorkerPool,
  GuardMetrics,
  type GuardOptions,
  type DecisionRecord,
  type Policy,
  type PolicyInput,
  type Rule,
  type RuleVerdict,
  type AccessContext,
  type AccessKind,
  type HandlerDecision,
} from './guard/index.js';
export * from './scan/index.js';
export {
  serve,
  connect,
  RemoteSubscription,
  RemoteError,
  StatCache,
  publishToNats,
  consumeFromNats,
  type ServeOptions,
  type RemoteServer,
  type ConnectOptions,
  type RemoteUpdate,
  type EventRecord as RemoteEventRecord,
  type ObjectRef,
} from './remote/index.js';
