// gRPC plumbing: the only importer of @grpc/grpc-js and @grpc/proto-loader. Services are
// defined by the .proto files under proto/ and described here by a typed definition;
// servers register typed handlers, clients get typed promise methods, and errors cross the
// wire as gRPC status codes (GrpcStatusError on both sides). Every call is authenticated
// here before any handler runs: under TLS by a client certificate of the cluster CA (its
// identity per scripts/gen_certs.sh, see peer_identity.ts), without TLS by being a loopback
// caller (unless the server is told to serve any caller); handlers authorise by identity.
//
// Proto files are read at start-up from proto/ beside the code (resolved from this module's
// import.meta.url), not embedded as strings: proto/ stays the one source of truth, readable
// by grpcurl and other languages' tooling, with no generated copy to drift. What that costs:
// a process needs read access to proto/ (`--allow-read=<root>/proto`), and `deno compile`
// must embed it (`--include proto/kiseki/v1/`), where import.meta.url points into the
// binary's own file system. Embedding strings instead would need protobufjs's parser, a
// third npm dependency, or a generated descriptor checked in beside each proto.

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import {
  addressOfPeer,
  assert,
  formatHostPort,
  type HlcTimestamp,
  type HostPort,
  isLoopbackAddress,
} from "../base/mod.ts";
import { counter, log as rootLog, type Logger } from "../obs/mod.ts";
import { CodecError } from "../raft/codec.ts";
import { CompactedError, ProposalDroppedError, UnavailableError } from "../raft/mod.ts";
import type { TlsMaterial } from "./raft_transport.ts";
import {
  certificateIdentity,
  describeIdentity,
  type PeerCertificateNames,
  type PeerIdentity,
} from "./peer_identity.ts";

// ---- status codes and errors -----------------------------------------------------------

/** gRPC status codes, by their protocol names (grpc/grpc doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusName = keyof typeof GrpcStatus;
export type GrpcStatusCode = (typeof GrpcStatus)[GrpcStatusName];

const STATUS_NAMES: ReadonlyMap<number, GrpcStatusName> = new Map(
  (Object.entries(GrpcStatus) as [GrpcStatusName, GrpcStatusCode][]).map(([n, c]) => [c, n]),
);

/**
 * An error that is a gRPC status: thrown by handlers to answer with `code` and `message`,
 * and raised by clients for every non-OK answer. `metadata` travels as trailing metadata
 * (e.g. `kiseki-leader-id` on FAILED_PRECONDITION).
 */
export class GrpcStatusError extends Error {
  override name = "GrpcStatusError";
  readonly code: GrpcStatusCode;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(
    code: GrpcStatusCode,
    message: string,
    options: { metadata?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    assert(code !== GrpcStatus.OK, "GrpcStatusError with status OK");
    this.code = code;
    this.metadata = options.metadata ?? {};
  }

  /** The protocol name of the code, e.g. `NOT_FOUND`. */
  get codeName(): GrpcStatusName {
    return STATUS_NAMES.get(this.code) ?? "UNKNOWN";
  }
}

/** Turns a service's own error into a status, or returns null to pass it on. */
export type GrpcErrorMapper = (error: unknown) => GrpcStatusError | null;

/**
 * The statuses of errors every layer below may raise. Services add their own mappers in
 * front (server option `errorMappers`) or throw GrpcStatusError directly.
 */
export const GRPC_ERROR_MAPPERS_DEFAULT: readonly GrpcErrorMapper[] = [
  (e) =>
    e instanceof ProposalDroppedError
      ? new GrpcStatusError(GrpcStatus.UNAVAILABLE, `proposal not accepted: ${e.message}`, {
        cause: e,
      })
      : null,
  (e) =>
    e instanceof CompactedError
      ? new GrpcStatusError(GrpcStatus.OUT_OF_RANGE, `compacted: ${e.message}`, { cause: e })
      : null,
  (e) =>
    e instanceof UnavailableError
      ? new GrpcStatusError(GrpcStatus.OUT_OF_RANGE, `past the end of the log: ${e.message}`, {
        cause: e,
      })
      : null,
  (e) =>
    e instanceof CodecError
      ? new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, `malformed input: ${e.message}`, {
        cause: e,
      })
      : null,
];

/**
 * Maps any error to a status: GrpcStatusError as is, then `mappers`, then the defaults;
 * anything else is INTERNAL with a generic message (the detail stays in the server's log,
 * never on the wire).
 */
export function toGrpcStatusError(
  error: unknown,
  mappers: readonly GrpcErrorMapper[] = [],
): GrpcStatusError {
  if (error instanceof GrpcStatusError) return error;
  for (const mapper of [...mappers, ...GRPC_ERROR_MAPPERS_DEFAULT]) {
    const mapped = mapper(error);
    if (mapped !== null) return mapped;
  }
  return new GrpcStatusError(GrpcStatus.INTERNAL, "internal error", { cause: error });
}

// ---- service definitions ---------------------------------------------------------------

/** Each unary method of a service: its request and response shapes. */
export type GrpcMethods = Record<string, { request: unknown; response: unknown }>;

/** A service as the code sees it; the .proto file says what goes on the wire. */
export interface GrpcServiceDefinition<M extends GrpcMethods> {
  /** Fully qualified, e.g. `kiseki.v1.LogService`. */
  readonly name: string;
  /** Relative to the proto root, e.g. `kiseki/v1/log.proto`. */
  readonly protoFile: string;
  readonly methods: readonly (keyof M & string)[];
}

export function defineGrpcService<M extends GrpcMethods>(
  name: string,
  protoFile: string,
  methods: readonly (keyof M & string)[],
): GrpcServiceDefinition<M> {
  assert(!methods.includes("close"), "a gRPC method named close would shadow client.close()");
  return { name, protoFile, methods };
}

/** proto/ beside the code; see the top of this file. */
export const PROTO_ROOT_DEFAULT: string = decodeURIComponent(
  new URL("../../proto/", import.meta.url).pathname,
);

/**
 * How messages look in JavaScript: camelCase fields, uint64 as number (Kiseki's counters
 * stay below 2^53), enums as their names, bytes as Uint8Array (Buffer), defaults filled in.
 */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: true,
};

const loadedPackages = new Map<string, grpc.GrpcObject>();

/** Loads (once per proto root and file) and checks a service against its definition. */
function loadService<M extends GrpcMethods>(
  def: GrpcServiceDefinition<M>,
  protoRoot: string,
): grpc.ServiceClientConstructor {
  const key = `${protoRoot}\0${def.protoFile}`;
  let pkg = loadedPackages.get(key);
  if (pkg === undefined) {
    // An absolute path: a relative one is first probed against the working directory.
    const file = `${protoRoot.replace(/\/+$/, "")}/${def.protoFile}`;
    const definition = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
    pkg = grpc.loadPackageDefinition(definition);
    loadedPackages.set(key, pkg);
  }
  let node: unknown = pkg;
  for (const part of def.name.split(".")) node = (node as Record<string, unknown>)?.[part];
  assert(typeof node === "function", `${def.name} is not a service in ${def.protoFile}`);
  const ctor = node as grpc.ServiceClientConstructor;
  const inProto = Object.keys(ctor.service).sort();
  const declared = [...def.methods].sort();
  assert(
    JSON.stringify(inProto) === JSON.stringify(declared),
    `${def.name} methods in ${def.protoFile} are ${inProto.join(", ")}, declared ${
      declared.join(", ")
    }`,
  );
  for (const m of inProto) {
    const method = ctor.service[m]!;
    assert(!method.requestStream && !method.responseStream, `${def.name}.${m} is not unary`);
  }
  return ctor;
}

// ---- servers ---------------------------------------------------------------------------

/** What a handler knows about its call. */
export interface GrpcCallContext {
  /** `ip:port` of the caller. */
  peer: string;
  /** Request metadata (text values only). */
  metadata: Readonly<Record<string, string>>;
  /** The client's TLS certificate subject and SANs, under mTLS. */
  peerCertificate: PeerCertificateNames | null;
  /** Who the caller is (authenticated before the handler runs); handlers authorise by it. */
  caller: PeerIdentity;
  /** Aborted when the client cancels or its deadline passes. */
  signal: AbortSignal;
}

export type GrpcUnaryHandler<Req, Res> = (
  request: Req,
  context: GrpcCallContext,
) => Res | Promise<Res>;

export type GrpcHandlers<M extends GrpcMethods> = {
  [K in keyof M]: GrpcUnaryHandler<M[K]["request"], M[K]["response"]>;
};

/** A service definition paired with its handlers, ready for a server. */
export interface GrpcServiceBinding {
  readonly definition: GrpcServiceDefinition<GrpcMethods>;
  readonly handlers: GrpcHandlers<GrpcMethods>;
}

export function bindGrpcService<M extends GrpcMethods>(
  definition: GrpcServiceDefinition<M>,
  handlers: GrpcHandlers<M>,
): GrpcServiceBinding {
  return {
    definition: definition as unknown as GrpcServiceDefinition<GrpcMethods>,
    handlers: handlers as unknown as GrpcHandlers<GrpcMethods>,
  };
}

/** Largest request or response (inline small files ride in delta payloads). */
export const GRPC_MESSAGE_SIZE_BYTES_MAX: number = 16 * 1024 * 1024;
/** Most concurrent calls on one client connection. */
export const GRPC_CONCURRENT_STREAMS_MAX = 1024;
/** Time given to calls in flight when a server closes, before they are cut. */
export const GRPC_SHUTDOWN_GRACE_MS = 5000;
/** Deadline of a client call that names none. */
export const GRPC_DEADLINE_MS_DEFAULT = 10_000;

export interface GrpcServerOptions {
  addr: HostPort;
  services: readonly GrpcServiceBinding[];
  /**
   * Mutual TLS: the server presents `cert`, and every call must come with a client
   * certificate signed by `ca` that names a Kiseki identity (UNAUTHENTICATED otherwise).
   */
  tls?: TlsMaterial | null;
  /**
   * Without TLS, whom to serve: `loopback` (the default) answers any other caller
   * UNAUTHENTICATED; `any` serves every caller, unauthenticated (an explicit insecure
   * setting). Ignored under TLS.
   */
  plaintextCallers?: PlaintextCallers;
  /** Tried before the defaults (see toGrpcStatusError). */
  errorMappers?: readonly GrpcErrorMapper[];
  logger?: Logger;
  protoRoot?: string;
}

export interface GrpcServer {
  /** The bound address (the real port when 0 was asked for). */
  readonly addr: HostPort;
  /** Stops taking calls, lets calls in flight finish for up to `graceMs`, then cuts them. */
  close(graceMs?: number): Promise<void>;
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const logger = (options.logger ?? rootLog).child({ component: "grpc" });
  const protoRoot = options.protoRoot ?? PROTO_ROOT_DEFAULT;
  const mappers = options.errorMappers ?? [];
  const gate: CallerGate = {
    tls: Boolean(options.tls),
    plaintextCallers: options.plaintextCallers ?? "loopback",
  };
  const server = new grpc.Server({
    "grpc.max_receive_message_length": GRPC_MESSAGE_SIZE_BYTES_MAX,
    "grpc.max_send_message_length": GRPC_MESSAGE_SIZE_BYTES_MAX,
    "grpc.max_concurrent_streams": GRPC_CONCURRENT_STREAMS_MAX,
  });
  for (const binding of options.services) {
    const ctor = loadService(binding.definition, protoRoot);
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const method of binding.definition.methods) {
      const handler = binding.handlers[method];
      assert(typeof handler === "function", `${binding.definition.name}.${method} has no handler`);
      implementation[method] = unaryAdapter(
        `${binding.definition.name}/${method}`,
        handler,
        mappers,
        gate,
        logger,
      );
    }
    server.addService(ctor.service, implementation);
  }
  const credentials = options.tls
    ? mutualTlsCredentials(options.tls)
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatHostPort(options.addr), credentials, (error, bound) => {
      if (error) reject(error);
      else resolve(bound);
    });
  });
  const addr = { host: options.addr.host, port };
  logger.info("gRPC server listening", {
    addr: formatHostPort(addr),
    tls: Boolean(options.tls),
    callers: options.tls ? "client certificates" : gate.plaintextCallers,
    services: options.services.map((s) => s.definition.name).join(","),
  });
  if (!options.tls && gate.plaintextCallers === "any") {
    logger.warn("gRPC without TLS serves callers from any address, unauthenticated", {
      addr: formatHostPort(addr),
    });
  }
  let closing: Promise<void> | null = null;
  return {
    addr,
    close(graceMs = GRPC_SHUTDOWN_GRACE_MS): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      return closing;
    },
  };
}

/**
 * Server credentials for mutual TLS that ask every client for a certificate but let the
 * handshake finish without one (or with one TLS could not verify): grpc-js then hands such
 * a call no certificate, and the caller gate answers it UNAUTHENTICATED with a message,
 * where a refused handshake would leave the client with a bare UNAVAILABLE. TLS still
 * verifies every certificate it reports against `ca` (grpc-js reports a certificate only
 * for an authorised socket); grpc_test.ts proves a foreign CA's certificate is refused.
 */
function mutualTlsCredentials(tls: TlsMaterial): grpc.ServerCredentials {
  const credentials = grpc.ServerCredentials.createSsl(
    Buffer.from(tls.ca),
    [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }],
    true,
  );
  const options = credentials._getConstructorOptions();
  assert(options !== null && options.requestCert === true, "mTLS credentials do not ask for certs");
  options.rejectUnauthorized = false;
  return credentials;
}

export type PlaintextCallers = "loopback" | "any";

/** Calls refused for who made them, by method and status (created on first use). */
const refusedCalls = () =>
  counter<"method" | "code">({
    name: "kiseki_grpc_calls_refused_total",
    help: "gRPC calls refused UNAUTHENTICATED or PERMISSION_DENIED, by method and status",
    labelNames: ["method", "code"],
  });

/** What the caller gate of a server knows: its own transport and whom it serves. */
export interface CallerGate {
  tls: boolean;
  plaintextCallers: PlaintextCallers;
}

/**
 * The identity of a call's caller, or the status that refuses it: under TLS, the identity
 * of its verified client certificate (UNAUTHENTICATED without one, PERMISSION_DENIED for a
 * certificate that names no Kiseki identity); without TLS, a loopback caller, or any caller
 * when the server serves any. Runs before every handler.
 */
export function authenticateCaller(
  gate: CallerGate,
  call: { peer: string; certificate: PeerCertificateNames | null },
): PeerIdentity {
  if (gate.tls) {
    if (call.certificate === null) {
      throw new GrpcStatusError(
        GrpcStatus.UNAUTHENTICATED,
        "this port requires a client certificate signed by the cluster CA (mutual TLS); " +
          "none was presented, or it did not verify (scripts/gen_certs.sh issues them)",
      );
    }
    const identity = certificateIdentity(call.certificate);
    if (typeof identity === "string") {
      throw new GrpcStatusError(GrpcStatus.PERMISSION_DENIED, `${identity}; no call is allowed`);
    }
    return identity;
  }
  if (gate.plaintextCallers === "any") return { kind: "insecure" };
  const address = addressOfPeer(call.peer);
  if (isLoopbackAddress(address)) return { kind: "loopback" };
  throw new GrpcStatusError(
    GrpcStatus.UNAUTHENTICATED,
    `this node serves gRPC without TLS to loopback callers only, and ${address} is not ` +
      "loopback: give the node mTLS material (KISEKI_CA_PATH, KISEKI_CERT_PATH, " +
      "KISEKI_KEY_PATH) and call with a client certificate, or set KISEKI_ALLOW_INSECURE=true",
  );
}

/** A handler's refusal of an authenticated caller: PERMISSION_DENIED naming who and what. */
export function permissionDenied(caller: PeerIdentity, what: string): GrpcStatusError {
  return new GrpcStatusError(
    GrpcStatus.PERMISSION_DENIED,
    `${describeIdentity(caller)} may not ${what}`,
  );
}

function unaryAdapter(
  path: string,
  handler: GrpcUnaryHandler<unknown, unknown>,
  mappers: readonly GrpcErrorMapper[],
  gate: CallerGate,
  logger: Logger,
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const controller = new AbortController();
    call.on("cancelled", () => controller.abort());
    const auth = call.getAuthContext?.();
    const cert = auth?.sslPeerCertificate;
    const peer = call.getPeer();
    const peerCertificate: PeerCertificateNames | null = cert && cert.subject
      ? {
        subject: cert.subject as unknown as Record<string, string | string[]>,
        subjectAltName: cert.subjectaltname ?? "",
      }
      : null;
    const fail = (error: unknown): void => {
      const status = toGrpcStatusError(error, mappers);
      if (status.code === GrpcStatus.INTERNAL && !(error instanceof GrpcStatusError)) {
        logger.error("gRPC handler failed", { method: path, error });
      }
      if (
        status.code === GrpcStatus.UNAUTHENTICATED || status.code === GrpcStatus.PERMISSION_DENIED
      ) {
        refusedCalls().inc({ method: path, code: status.codeName });
      }
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(status.metadata)) metadata.set(k, v);
      callback({ code: status.code, details: status.message, metadata });
    };
    let result: unknown;
    try {
      const caller = authenticateCaller(gate, { peer, certificate: peerCertificate });
      const context: GrpcCallContext = {
        peer,
        metadata: textMetadata(call.metadata),
        peerCertificate,
        caller,
        signal: controller.signal,
      };
      result = handler(call.request, context);
    } catch (error) {
      fail(error);
      return;
    }
    Promise.resolve(result).then((response) => callback(null, response), fail);
  };
}

function textMetadata(metadata: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata.getMap())) {
    if (typeof v === "string") out[k] = v;
  }
  return out;
}

// ---- clients ---------------------------------------------------------------------------

export interface GrpcCallOptions {
  deadlineMs?: number;
  metadata?: Record<string, string>;
}

export type GrpcClient<M extends GrpcMethods> =
  & {
    [K in keyof M]: (
      request: M[K]["request"],
      options?: GrpcCallOptions,
    ) => Promise<M[K]["response"]>;
  }
  & {
    /** Closes the channel; calls in flight fail with CANCELLED or UNAVAILABLE. */
    close(): void;
  };

export interface GrpcClientOptions {
  /**
   * TLS towards the server, verified against `ca` and the dialled address (an IP SAN, or
   * `serverName` when given); `cert`/`key` present a client certificate (mTLS).
   */
  tls?: { ca: string; cert?: string; key?: string; serverName?: string } | null;
  deadlineMs?: number;
  protoRoot?: string;
}

/** TLS server name sent when dialling an IP address (the certificate is checked against the IP). */
const TLS_SNI_PLACEHOLDER = "kiseki.invalid";

/** A client for one service at one address (tests, the admin CLI, forwarding to a leader). */
export function createGrpcClient<M extends GrpcMethods>(
  definition: GrpcServiceDefinition<M>,
  target: HostPort,
  options: GrpcClientOptions = {},
): GrpcClient<M> {
  const ctor = loadService(definition, options.protoRoot ?? PROTO_ROOT_DEFAULT);
  const tlsOptions = options.tls ?? null;
  const channelOptions: grpc.ChannelOptions = {
    "grpc.max_receive_message_length": GRPC_MESSAGE_SIZE_BYTES_MAX,
    "grpc.max_send_message_length": GRPC_MESSAGE_SIZE_BYTES_MAX,
    // Cluster traffic never goes through an HTTP proxy (and the sandbox does not let
    // grpc-js read the proxy variables).
    "grpc.enable_http_proxy": 0,
  };
  let verify: grpc.VerifyOptions = {};
  if (tlsOptions?.serverName !== undefined) {
    channelOptions["grpc.ssl_target_name_override"] = tlsOptions.serverName;
  } else if (tlsOptions !== null && isIP(target.host) !== 0) {
    // grpc-js sends the dialled host as TLS SNI, which may not be an IP address (RFC 6066;
    // Deno's node:tls refuses it). Send a placeholder name instead, and still check the
    // certificate against the address actually dialled.
    channelOptions["grpc.ssl_target_name_override"] = TLS_SNI_PLACEHOLDER;
    verify = { checkServerIdentity: (_name, cert) => checkServerIdentity(target.host, cert) };
  }
  const credentials = tlsOptions
    ? grpc.credentials.createSsl(
      Buffer.from(tlsOptions.ca),
      tlsOptions.key === undefined ? null : Buffer.from(tlsOptions.key),
      tlsOptions.cert === undefined ? null : Buffer.from(tlsOptions.cert),
      verify,
    )
    : grpc.credentials.createInsecure();
  const client = new ctor(formatHostPort(target), credentials, channelOptions);
  const deadlineDefaultMs = options.deadlineMs ?? GRPC_DEADLINE_MS_DEFAULT;
  const out: Record<string, unknown> = { close: () => client.close() };
  for (const method of definition.methods) {
    const fn = (client as unknown as Record<string, (...args: unknown[]) => unknown>)[method]!;
    out[method] = (request: unknown, callOptions: GrpcCallOptions = {}): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const metadata = new grpc.Metadata();
        for (const [k, v] of Object.entries(callOptions.metadata ?? {})) metadata.set(k, v);
        const deadline = Date.now() + (callOptions.deadlineMs ?? deadlineDefaultMs);
        fn.call(
          client,
          request,
          metadata,
          { deadline },
          (error: grpc.ServiceError | null, response: unknown) => {
            if (error) reject(fromServiceError(error));
            else resolve(response);
          },
        );
      });
  }
  return out as GrpcClient<M>;
}

function fromServiceError(error: grpc.ServiceError): GrpcStatusError {
  const code = STATUS_NAMES.has(error.code) ? error.code as GrpcStatusCode : GrpcStatus.UNKNOWN;
  return new GrpcStatusError(
    code === GrpcStatus.OK ? GrpcStatus.UNKNOWN : code,
    error.details,
    { metadata: error.metadata ? textMetadata(error.metadata) : {}, cause: error },
  );
}

// ---- kiseki.v1.LogService (proto/kiseki/v1/log.proto) ----------------------------------
// The JavaScript shapes of the log service's messages, for its server (the log context)
// and its clients (admin, forwarding). Field names are the proto's, camelCased.

export type DeltaOperation =
  | "DELTA_OPERATION_UNSPECIFIED"
  | "DELTA_OPERATION_CREATE"
  | "DELTA_OPERATION_UPDATE"
  | "DELTA_OPERATION_DELETE"
  | "DELTA_OPERATION_RENAME"
  | "DELTA_OPERATION_SET_ATTRIBUTES";

export type MemberRole =
  | "MEMBER_ROLE_UNSPECIFIED"
  | "MEMBER_ROLE_LEADER"
  | "MEMBER_ROLE_FOLLOWER"
  | "MEMBER_ROLE_LEARNER"
  | "MEMBER_ROLE_CANDIDATE";

export type ShardState =
  | "SHARD_STATE_UNSPECIFIED"
  | "SHARD_STATE_HEALTHY"
  | "SHARD_STATE_DEGRADED"
  | "SHARD_STATE_NO_QUORUM";

/** proto HlcTimestamp: a clock reading and the node whose clock took it (0: not known). */
export interface StampedHlcTimestamp extends HlcTimestamp {
  nodeId: number;
}

export interface AppendDeltaRequest {
  shardId: number;
  tenantId: string;
  operation: DeltaOperation;
  hashedKey: Uint8Array;
  chunkRefs: Uint8Array[];
  payload: Uint8Array;
}

export interface AppendDeltaResponse {
  sequence: number;
  term: number;
  timestamp: StampedHlcTimestamp | null;
}

export interface ReadDeltasRequest {
  shardId: number;
  fromSequence: number;
  maxCount: number;
}

export interface Delta {
  sequence: number;
  term: number;
  timestamp: StampedHlcTimestamp | null;
  tenantId: string;
  operation: DeltaOperation;
  hashedKey: Uint8Array;
  chunkRefs: Uint8Array[];
  payload: Uint8Array;
}

export interface ReadDeltasResponse {
  deltas: Delta[];
  nextSequence: number;
  tip: number;
}

export interface ShardHealthRequest {
  shardId: number;
}

export interface ShardMember {
  nodeId: number;
  address: string;
  role: MemberRole;
  matchSequence: number;
}

export interface ShardHealthResponse {
  shardId: number;
  reportingNodeId: number;
  members: ShardMember[];
  leaderId: number;
  term: number;
  commitSequence: number;
  appliedSequence: number;
  state: ShardState;
  maintenance: boolean;
}

export interface SetMaintenanceRequest {
  shardId: number;
  enabled: boolean;
}

export interface SetMaintenanceResponse {
  shardId: number;
  maintenance: boolean;
  sequence: number;
}

export type LogServiceMethods = {
  AppendDelta: { request: AppendDeltaRequest; response: AppendDeltaResponse };
  ReadDeltas: { request: ReadDeltasRequest; response: ReadDeltasResponse };
  ShardHealth: { request: ShardHealthRequest; response: ShardHealthResponse };
  SetMaintenance: { request: SetMaintenanceRequest; response: SetMaintenanceResponse };
};

/** Trailing metadata naming the shard's leader on a FAILED_PRECONDITION "not the leader". */
export const LEADER_ID_METADATA_KEY = "kiseki-leader-id";

export const LOG_SERVICE: GrpcServiceDefinition<LogServiceMethods> = defineGrpcService<
  LogServiceMethods
>("kiseki.v1.LogService", "kiseki/v1/log.proto", [
  "AppendDelta",
  "ReadDeltas",
  "ShardHealth",
  "SetMaintenance",
]);
