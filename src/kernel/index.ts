/**
 * The pure kernel layer: uapi constants, decoding of read() batches and encoding of
 * responses. No I/O happens here.
 * @packageDocumentation
 */
export * from './constants.js';
export * from './names.js';
export * from './events.js';
export { FileId } from './fileid.js';
export { decodeBatch, decodeEventAt } from './decode.js';
export {
  encodeResponse,
  responseWord,
  encodeEvent,
  encodeBatch,
  type Verdict,
  type AuditRuleInfo,
  type EventSpec,
  type RecordSpec,
  type FileIdSpec,
} from './encode.js';
