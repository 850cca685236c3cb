/**
 * Map events to paths and processes.
 * @packageDocumentation
 */
export { MountTable, parseMountInfo, PSEUDO_FILESYSTEMS, type MountInfo, type FilesystemEntry } from './mounts.js';
export { PathResolver, joinPath, isUnder, type ResolvedPaths, type HandleMiss, type PathResolverOptions } from './paths.js';
export { ProcessCache, parseStat, parseStatusIds, type ProcessInfo, type ProcessCacheOptions } from './process.js';
