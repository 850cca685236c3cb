/**
 * HSM: a published tree appears as placeholders on ext4/xfs/btrfs and is hydrated on first
 * access through pre-content fanotify events. See docs/hsm.md.
 * @packageDocumentation
 */
export { publish, parseManifest, manifestHash, ManifestError, MANIFEST_NAME, DEFAULT_CHUNK_SIZE, type Manifest, type ManifestEntry, type FileEntry } from './manifest.js';
export { HttpSource, LocalSource, openSource, SourceError, type Source, type HttpSourceOptions } from './source.js';
export { mountTree, type MountOptions, type MountHandle } from './supervisor.js';
export { requestControl, type ControlRequest, type ControlReply } from './control.js';
export { mountOf, mounts, logPath, type MountEntry } from './registry.js';
export type { FileState } from './rangemap.js';
