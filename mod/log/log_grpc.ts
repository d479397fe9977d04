// kiseki.v1.LogService on the data-path port: the wire face of DeltaLog. Requests are
// checked here (ids, sizes, enums) and every failure leaves as a gRPC status with a
// message that says what was wrong.

import {
  bindGrpcService,
  type GrpcErrorMapper,
  type GrpcServiceBinding,
  GrpcStatus,
  GrpcStatusError,
  LOG_SERVICE,
  type LogServiceMethods,
} from "../transport/mod.ts";
import type { DeltaOperation } from "../transport/mod.ts";
import { HASHED_KEY_BYTES, isShardId } from "./shard.ts";
import { DELTA_CHUNK_REF_BYTES, DELTA_OPS, DELTA_TENANT_ID_BYTES, type DeltaOp } from "./delta.ts";
import { type DeltaLog, LogError } from "./delta_log.ts";

const STATUS_BY_CODE = {
  not_found: GrpcStatus.NOT_FOUND,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  unavailable: GrpcStatus.UNAVAILABLE,
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  out_of_range: GrpcStatus.OUT_OF_RANGE,
} as const;

/** LogError -> its status; put in front of the server's default mappers. */
export const logErrorMapper: GrpcErrorMapper = (e: unknown): GrpcStatusError | null =>
  e instanceof LogError
    ? new GrpcStatusError(STATUS_BY_CODE[e.code], e.message, { cause: e })
    : null;

function invalid(message: string): never {
  throw new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, message);
}

function shardOf(shardId: number): number {
  if (!isShardId(shardId)) invalid(`shard_id ${shardId} is not a shard id`);
  return shardId;
}

/** Tenant ids are UUIDs (16 bytes), written with or without hyphens. */
export function parseTenantId(text: string): Uint8Array {
  const hex = text.replaceAll("-", "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) invalid(`tenant_id '${text}' is not a UUID`);
  const out = new Uint8Array(DELTA_TENANT_ID_BYTES);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function formatTenantId(bytes: Uint8Array): string {
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

function opOf(operation: DeltaOperation): DeltaOp {
  const name = operation.replace(/^DELTA_OPERATION_/, "").toLowerCase();
  if (!Object.hasOwn(DELTA_OPS, name)) invalid(`operation ${operation} is not a delta operation`);
  return name as DeltaOp;
}

function operationOf(op: DeltaOp): DeltaOperation {
  return `DELTA_OPERATION_${op.toUpperCase()}` as DeltaOperation;
}

export function logServiceBinding(deltaLog: DeltaLog, nodeId: number): GrpcServiceBinding {
  return bindGrpcService<LogServiceMethods>(LOG_SERVICE, {
    async AppendDelta(req) {
      const hashedKey = new Uint8Array(req.hashedKey);
      if (hashedKey.length !== HASHED_KEY_BYTES) {
        invalid(`hashed_key has ${hashedKey.length} bytes; ${HASHED_KEY_BYTES} expected`);
      }
      for (const [i, ref] of req.chunkRefs.entries()) {
        if (ref.length !== DELTA_CHUNK_REF_BYTES) {
          invalid(`chunk_refs[${i}] has ${ref.length} bytes; ${DELTA_CHUNK_REF_BYTES} expected`);
        }
      }
      const result = await deltaLog.append({
        shardId: shardOf(req.shardId),
        tenantId: parseTenantId(req.tenantId),
        op: opOf(req.operation),
        hashedKey,
        chunkRefs: req.chunkRefs.map((r) => new Uint8Array(r)),
        payload: new Uint8Array(req.payload),
      });
      return {
        sequence: result.sequence,
        term: result.term,
        timestamp: {
          physicalMs: result.timestamp.physicalMs,
          logical: result.timestamp.logical,
          nodeId,
        },
      };
    },
    async ReadDeltas(req) {
      const page = await deltaLog.read(shardOf(req.shardId), req.fromSequence, req.maxCount);
      return {
        deltas: page.deltas.map((d) => ({
          sequence: d.sequence,
          term: 0,
          timestamp: {
            physicalMs: d.timestamp.physicalMs,
            logical: d.timestamp.logical,
            nodeId: 0,
          },
          tenantId: formatTenantId(d.tenantId),
          operation: operationOf(d.op),
          hashedKey: d.hashedKey,
          chunkRefs: d.chunkRefs,
          payload: d.payload,
        })),
        nextSequence: page.nextSequence,
        tip: page.tip,
      };
    },
    ShardHealth(req) {
      const h = deltaLog.health(shardOf(req.shardId));
      return {
        shardId: h.shardId,
        reportingNodeId: nodeId,
        members: h.members.map((m) => ({
          nodeId: m.id,
          address: m.address,
          role: m.role === "leader"
            ? "MEMBER_ROLE_LEADER"
            : m.role === "learner"
            ? "MEMBER_ROLE_LEARNER"
            : "MEMBER_ROLE_FOLLOWER",
          matchSequence: m.match,
        })),
        leaderId: h.leader,
        term: h.term,
        commitSequence: h.commit,
        appliedSequence: h.applied,
        state: h.state === "healthy"
          ? "SHARD_STATE_HEALTHY"
          : h.state === "degraded"
          ? "SHARD_STATE_DEGRADED"
          : "SHARD_STATE_NO_QUORUM",
        maintenance: h.maintenance,
      };
    },
    async SetMaintenance(req) {
      const shardId = shardOf(req.shardId);
      const result = await deltaLog.setMaintenance(shardId, req.enabled);
      return { shardId, maintenance: req.enabled, sequence: result.sequence };
    },
  });
}
