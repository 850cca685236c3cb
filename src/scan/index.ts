/**
 * scan: the generic scanner interface, the clamd client, a command-line scanner, and quarantine.
 * @module
 */
export {
  functionScanner,
  errorResult,
  isScanResult,
  CLEAN,
  type Scanner,
  type ScanTarget,
  type ScanResult,
} from './scanner.js';
export {
  ClamdScanner,
  ClamdError,
  parseClamdReply,
  splitClamdReply,
  DEFAULT_MAX_STREAM_BYTES,
  type ClamdOptions,
  type ClamdErrorCode,
  type ClamdReply,
  type ClamdScanReply,
} from './clamd.js';
export { commandScanner, signatureFromOutput, type CommandScannerOptions } from './command.js';
export { quarantine, type QuarantineResult, type QuarantineRecord } from './quarantine.js';
