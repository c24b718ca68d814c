// Loads proto/tidemark.proto (the source of truth) and gives the messages TypeScript shapes.
// test/unit/proto/messages.test.ts round-trips every message, so these shapes cannot drift from the schema.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { existsSync } from 'node:fs';
import protobuf from 'protobufjs';
import { decodeExtentFrame, encodeExtentFrame } from './extent-frame.js';

export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;
/** backpressure: the receiver may send Backpressure (and the sender honours it); see docs/PROTOCOL.md. */
/** resync-needed: the receiver may send ResyncNeeded (and the sender acts on it). */
/** query-anywhere: the receiver takes a HashQuery between the extents of a differential too (and the sender may send it there). */
export const CAPABILITIES = ['lz4', 'cumulative-ack', 'resync', 'backpressure', 'resync-needed', 'query-anywhere'] as const;

export type Consistency = 'FUZZY' | 'CRASH' | 'APP';
export type CompressionName = 'NONE' | 'LZ4';

export interface Hello { protocolVersion: number; minProtocolVersion: number; capabilities: string[]; nodeName: string; role: string; software: string }
export interface Welcome { protocolVersion: number; capabilities: string[]; nodeName: string }
export interface OpenVolume { volumeId: string; sizeBytes: number; blockSize: number; replicationId: string; generation?: string; parentGeneration?: string; baseSeq?: number; lastSeq?: number }
export interface ResyncNeeded { volumeId: string; reason: string; regression: boolean; durableSeq: number }
export interface VolumeState { volumeId: string; durableSeq: number }
export interface DiffBegin { volumeId: string; seq: number; startTimeMs: number; endTimeMs: number; consistency: Consistency; tags: string[]; extentCount: number; flags: number }
export interface ExtentMsg { offset: number; length: number; crc32c: number; compression: CompressionName; storedLength: number }
export interface DiffEnd { volumeId: string; seq: number; extentCount: number; extentDigest: number }
export interface Ack { volumeId: string; durableSeq: number }
/** Its frame's payload holds the ranges' hashes (8 bytes each, u64 LE). */
export interface HashQuery { volumeId: string; requestId: number; rangeBlocks: number; ranges: number[]; afterSeq: number; reread: boolean }
export interface HashAnswer { volumeId: string; requestId: number; differing: number[]; errorCode?: string; errorMessage?: string }
/** Empty volumeId: every volume on the connection. */
export interface Backpressure { volumeId: string; paused: boolean; reason: string }
export interface ErrorReport { code: string; message: string; volumeId: string; seq: number; retryable: boolean }

export type Message =
  | { hello: Hello }
  | { welcome: Welcome }
  | { openVolume: OpenVolume }
  | { volumeState: VolumeState }
  | { diffBegin: DiffBegin }
  | { extent: ExtentMsg }
  | { diffEnd: DiffEnd }
  | { ack: Ack }
  | { error: ErrorReport }
  | { hashQuery: HashQuery }
  | { hashAnswer: HashAnswer }
  | { backpressure: Backpressure }
  | { resyncNeeded: ResyncNeeded };

export type MessageKind = 'hello' | 'welcome' | 'openVolume' | 'volumeState' | 'diffBegin' | 'extent' | 'diffEnd' | 'ack' | 'error' | 'hashQuery' | 'hashAnswer' | 'backpressure' | 'resyncNeeded';

// Found beside this file when run from source, or in <root>/proto when run from dist/proto.
const here = path.dirname(fileURLToPath(import.meta.url));
const candidates = [path.join(here, 'tidemark.proto'), path.join(here, '..', '..', 'proto', 'tidemark.proto')];
const root = protobuf.loadSync(candidates.find((p) => existsSync(p)) ?? candidates[0]!);
const FrameType = root.lookupType('tidemark.v1.Frame');
const toObjectOptions = { longs: Number, enums: String, defaults: true, oneofs: true } as const;

export function encodeMessage(msg: Message): Uint8Array {
  // One Extent frame per extent: by hand (extent-frame.ts), the same bytes.
  return ('extent' in msg && msg.extent != null && encodeExtentFrame(msg.extent)) || FrameType.encode(FrameType.fromObject(msg)).finish();
}

/** Decode a frame header; throws protobufjs errors on malformed input (callers map them to TM_ERR_PROTOCOL). */
export function decodeMessage(bytes: Uint8Array): Message & { body: MessageKind } {
  const extent = decodeExtentFrame(bytes);
  if (extent) return extent;
  const obj = FrameType.toObject(FrameType.decode(bytes), toObjectOptions) as Record<string, unknown>;
  if (typeof obj.body !== 'string') throw new Error('frame has no body');
  const body = obj.body as MessageKind;
  return { [body]: obj[body], body } as unknown as Message & { body: MessageKind };
}
