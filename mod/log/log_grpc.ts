// kiseki.v1.LogService on the data-path port: the wire face of DeltaLog. Callers are
// authorised here by the identity the transport authenticated (the table in log.proto:
// nodes for node work, a tenant's client for its own tenant's deltas only, operators for
// maintenance), requests are checked (ids, sizes, enums), and every failure leaves as a
// gRPC status with a message that says what was wrong.

import {
  type AppendDeltaRequest,
  bindGrpcService,
  type GrpcCallContext,
  type GrpcErrorMapper,
  type GrpcServiceBinding,
  GrpcStatus,
  GrpcStatusError,
  LOG_SERVICE,
  type LogServiceMethods,
  type PeerIdentity,
  permissionDenied,
} from "../transport/mod.ts";
import type { DeltaOperation } from "../transport/mod.ts";
import { bytesEqual, toHex } from "../base/mod.ts";
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
  const bytes = tenantIdBytes(text);
  if (bytes === null) invalid(`tenant_id '${text}' is not a UUID`);
  return bytes;
}

function tenantIdBytes(text: string): Uint8Array | null {
  const hex = text.replaceAll("-", "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return null;
  const out = new Uint8Array(DELTA_TENANT_ID_BYTES);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function formatTenantId(bytes: Uint8Array): string {
  const hex = toHex(bytes);
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

// ---- authorisation ---------------------------------------------------------------------

/** Callers trusted with every call: nodes' work, and the host itself in development. */
function isNodeOrLocal(caller: PeerIdentity): boolean {
  return caller.kind === "node" || caller.kind === "loopback" || caller.kind === "insecure";
}

/**
 * The tenant a tenant client's certificate names, as tenant id bytes. A tenant certificate
 * whose id is not a UUID can match no delta, and says so rather than seeing nothing.
 */
function certificateTenant(caller: PeerIdentity & { kind: "tenant" }): Uint8Array {
  const bytes = tenantIdBytes(caller.tenant);
  if (bytes === null) {
    throw permissionDenied(
      caller,
      `reach the log: its id '${caller.tenant}' is not a tenant id (a UUID); issue the ` +
        "tenant's certificate with scripts/gen_certs.sh --tenant <the tenant's id in hex>",
    );
  }
  return bytes;
}

/**
 * Who may append a delta of `tenantId`: nodes (and the host in development) for any tenant;
 * a tenant's client for its own tenant only, and without chunk references, which the node
 * that stores chunks takes (a tenant-supplied reference would hold nothing against GC).
 */
function authoriseAppend(caller: PeerIdentity, req: AppendDeltaRequest): Uint8Array {
  if (isNodeOrLocal(caller)) return parseTenantId(req.tenantId);
  if (caller.kind !== "tenant") throw permissionDenied(caller, "append deltas");
  const own = certificateTenant(caller);
  const tenantId = parseTenantId(req.tenantId);
  if (!bytesEqual(own, tenantId)) {
    throw permissionDenied(caller, `append deltas of tenant ${req.tenantId}`);
  }
  if (req.chunkRefs.length > 0) {
    throw permissionDenied(
      caller,
      "append chunk_refs: chunk references are taken by the node that stores the chunks",
    );
  }
  return tenantId;
}

/** Whose deltas a caller may read: every tenant's (null), or one tenant's. */
function authoriseRead(caller: PeerIdentity): Uint8Array | null {
  if (isNodeOrLocal(caller)) return null;
  if (caller.kind === "tenant") return certificateTenant(caller);
  throw permissionDenied(caller, "read deltas");
}

function authoriseMaintenance(caller: PeerIdentity): void {
  if (caller.kind === "admin" || caller.kind === "loopback" || caller.kind === "insecure") return;
  throw permissionDenied(caller, "set maintenance mode (an operator certificate may)");
}

export function logServiceBinding(deltaLog: DeltaLog, nodeId: number): GrpcServiceBinding {
  return bindGrpcService<LogServiceMethods>(LOG_SERVICE, {
    async AppendDelta(req, context: GrpcCallContext) {
      const tenantId = authoriseAppend(context.caller, req);
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
        tenantId,
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
    async ReadDeltas(req, context: GrpcCallContext) {
      const onlyTenant = authoriseRead(context.caller);
      const page = await deltaLog.read(shardOf(req.shardId), req.fromSequence, req.maxCount);
      // A tenant's client sees its own deltas; the others are skipped like the log's own
      // entries, and next_sequence still moves past them.
      const visible = onlyTenant === null
        ? page.deltas
        : page.deltas.filter((d) => bytesEqual(d.tenantId, onlyTenant));
      return {
        deltas: visible.map((d) => ({
          sequence: d.sequence,
          term: d.term,
          timestamp: {
            physicalMs: d.timestamp.physicalMs,
            logical: d.timestamp.logical,
            nodeId: d.nodeId,
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
    // Any authenticated caller: health names members and tips, nothing of a tenant.
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
    async SetMaintenance(req, context: GrpcCallContext) {
      authoriseMaintenance(context.caller);
      const shardId = shardOf(req.shardId);
      const result = await deltaLog.setMaintenance(shardId, req.enabled);
      return { shardId, maintenance: req.enabled, sequence: result.sequence };
    },
  });
}
