// The node's side of the native client (mod/client/): ClientService on the data-path gRPC
// port for discovery and metadata, and the framed client transport for sealed chunk bytes.
// Both act for one tenant per caller: a tenant's client certificate (mTLS) names it; without
// TLS, a loopback caller acts for the cluster's default tenant. A session (opened by Hello,
// bound to that caller) remembers which chunks the client may read (those of its own
// tenant's objects it asked for) or write (those it prepared), and the references its
// uploads took until a commit uses them; an idle session gives them back.

import { type Config, formatHostPort, type HostPort, parseHostPort, toHex } from "../base/mod.ts";
import type { DedupMode } from "../chunk/mod.ts";
import {
  type ChunkRef,
  CompositionError,
  fromHex,
  type Metadata,
  type NamespaceRef,
  type ObjectEngine,
  PUT_CHUNK_REFS_MAX,
  SEALED_KEYS_PER_REQUEST_MAX,
  SealedObjects,
  SealedStoredError,
  TENANT_ID_BYTES,
} from "../composition/mod.ts";
import type { NfsObjectBackend } from "../nfs/mod.ts";
import type { NodeDirectory } from "../control/mod.ts";
import { type Aead, parseEnvelopeHeader } from "../crypto/mod.ts";
import type { SystemKeyProvider } from "../keys/mod.ts";
import type { Logger } from "../obs/mod.ts";
import {
  bindGrpcService,
  CLIENT_FRAME_BODY_BYTES_MAX,
  CLIENT_SERVICE,
  CLIENT_STATUS_FORBIDDEN,
  CLIENT_STATUS_INVALID,
  CLIENT_STATUS_NOT_FOUND,
  CLIENT_STATUS_UNAVAILABLE,
  CLIENT_TRANSPORT_PORT_OFFSET,
  type ClientChunkRef,
  type ClientClusterNode,
  type ClientObjectInfo,
  type ClientServiceMethods,
  ClientTransportRefusal,
  ClientTransportServer,
  type ClientTransportSession,
  type GrpcErrorMapper,
  type GrpcServiceBinding,
  GrpcStatus,
  type GrpcStatusCode,
  GrpcStatusError,
  type PeerIdentity,
  permissionDenied,
  type PlaintextCallers,
  type TlsMaterial,
} from "../transport/mod.ts";

/** Sessions a node keeps; past it the longest idle one is closed. */
export const CLIENT_SESSIONS_MAX = 4096;
/** A session unused this long is closed and its uncommitted references given back. */
export const CLIENT_SESSION_IDLE_MS = 15 * 60_000;
/** How often idle sessions are looked for. */
export const CLIENT_SESSION_SWEEP_MS = 60_000;
/** Chunk ids one session may read or write at once (oldest grants forgotten first). */
export const CLIENT_SESSION_GRANTS_MAX = 65_536;
/** Uploaded, not yet committed references one session may hold. */
export const CLIENT_SESSION_HELD_REFS_MAX = 65_536;

const GRANT_READ = 1;
const GRANT_WRITE = 2;

interface Session {
  token: string;
  tenantId: Uint8Array;
  caller: PeerIdentity;
  /** Chunk ids (hex) this session may GET (GRANT_READ) or PUT (GRANT_WRITE), oldest first. */
  grants: Map<string, number>;
  /** References the session's PUTs took and no commit used yet, by chunk id (hex). */
  held: Map<string, number>;
  heldCount: number;
  /** Challenges of stored chunks the session may prove it holds, by chunk id (hex). */
  challenges: Map<string, Uint8Array>;
  usedMs: number;
}

export interface ClientServiceOptions {
  config: Config;
  engine: ObjectEngine;
  /** What S3 uses (the engine behind the cluster's read barrier). */
  backend: NfsObjectBackend;
  systemKeys: SystemKeyProvider;
  /** Opens stored chunks in memory to check proofs of possession. */
  aead: Aead;
  dedup: { modeFor(tenantId: Uint8Array): DedupMode; keyFor(t: Uint8Array): Promise<Uint8Array> };
  /** The cluster's default tenant (32 hex digits), null until the cluster state is reached. */
  defaultTenant: () => string | null;
  tls: TlsMaterial | null;
  logger: Logger;
  /** Where the transport listens (default: the data-path host, its port + 2). */
  transportAddr?: HostPort;
  /**
   * The cluster state's node records, null until it is reached: nodes joined since start-up
   * are handed to clients, removed ones are not (default: KISEKI_RAFT_PEERS alone).
   */
  directory?: () => NodeDirectory | null;
}

export interface ClientService {
  binding: GrpcServiceBinding;
  transport: ClientTransportServer;
  errorMapper: GrpcErrorMapper;
  close(): Promise<void>;
}

const STATUS_BY_CODE: Record<string, GrpcStatusCode> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  namespace_not_found: GrpcStatus.NOT_FOUND,
  namespace_exists: GrpcStatus.ALREADY_EXISTS,
  namespace_not_empty: GrpcStatus.FAILED_PRECONDITION,
  wrong_kind: GrpcStatus.FAILED_PRECONDITION,
  not_found: GrpcStatus.NOT_FOUND,
  exists: GrpcStatus.ALREADY_EXISTS,
  precondition_failed: GrpcStatus.FAILED_PRECONDITION,
  too_large: GrpcStatus.INVALID_ARGUMENT,
  read_only: GrpcStatus.FAILED_PRECONDITION,
  no_space: GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
};

/** CompositionError -> its status; the code travels as trailing metadata kiseki-code. */
export const compositionErrorMapper: GrpcErrorMapper = (e: unknown): GrpcStatusError | null =>
  e instanceof CompositionError
    ? new GrpcStatusError(STATUS_BY_CODE[e.code] ?? GrpcStatus.FAILED_PRECONDITION, e.message, {
      cause: e,
      metadata: { "kiseki-code": e.code },
    })
    : null;

function invalid(message: string): never {
  throw new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, message);
}

function sameCaller(a: PeerIdentity, b: PeerIdentity): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "tenant" && b.kind === "tenant") return a.tenant === b.tenant;
  return true;
}

export async function startClientService(options: ClientServiceOptions): Promise<ClientService> {
  const { config, engine, backend, logger } = options;
  const sealed = new SealedObjects({
    service: engine.service,
    chunkStore: engine.chunkStore,
    systemKeys: options.systemKeys,
    aead: options.aead,
    logger,
  });
  const sessions = new Map<string, Session>();
  const plaintextCallers: PlaintextCallers = config.allowInsecure ? "any" : "loopback";
  const dataAddr = config.dataAddrs[0]!;

  const closeSession = (s: Session) => {
    sessions.delete(s.token);
    const ids: Uint8Array[] = [];
    for (const [id, n] of s.held) for (let i = 0; i < n; i++) ids.push(fromHex(id, 32)!);
    s.held.clear();
    s.heldCount = 0;
    if (ids.length > 0) {
      sealed.releaseHeld(ids).catch((e) =>
        logger.warn("giving back a closed session's references failed", { error: e })
      );
    }
  };
  const sweep = (now: number, makeRoom: boolean) => {
    for (const s of sessions.values()) {
      if (now - s.usedMs > CLIENT_SESSION_IDLE_MS) closeSession(s);
    }
    while (makeRoom && sessions.size >= CLIENT_SESSIONS_MAX) {
      let oldest: Session | null = null;
      for (const s of sessions.values()) {
        if (oldest === null || s.usedMs < oldest.usedMs) oldest = s;
      }
      closeSession(oldest!);
    }
  };
  const grant = (s: Session, id: Uint8Array, how: number) => {
    const key = toHex(id);
    const had = s.grants.get(key) ?? 0;
    s.grants.delete(key);
    s.grants.set(key, had | how);
    while (s.grants.size > CLIENT_SESSION_GRANTS_MAX) {
      s.grants.delete(s.grants.keys().next().value!);
    }
  };

  /** The tenant a caller acts for. */
  const tenantOf = (caller: PeerIdentity): Uint8Array => {
    if (caller.kind === "tenant") {
      const hex = caller.tenant.replaceAll("-", "").toLowerCase();
      const id = /^[0-9a-f]{32}$/.test(hex) ? fromHex(hex, TENANT_ID_BYTES) : null;
      if (id === null) {
        throw permissionDenied(
          caller,
          `act as a client: its id '${caller.tenant}' is not a tenant id (32 hex digits)`,
        );
      }
      return id;
    }
    if (caller.kind === "loopback" || caller.kind === "insecure") {
      const tenant = options.defaultTenant();
      if (tenant === null) {
        throw new GrpcStatusError(
          GrpcStatus.UNAVAILABLE,
          "the cluster state (and its default tenant) is not reached yet; retry",
        );
      }
      return fromHex(tenant, TENANT_ID_BYTES)!;
    }
    throw permissionDenied(caller, "act as a tenant's client (a tenant certificate may)");
  };
  const sessionOf = (token: Uint8Array | undefined, caller: PeerIdentity): Session => {
    const s = token === undefined || token.length !== 32 ? undefined : sessions.get(toHex(token));
    if (s === undefined || !sameCaller(s.caller, caller)) {
      throw new GrpcStatusError(
        GrpcStatus.FAILED_PRECONDITION,
        "no such client session on this node (it expired, or the node restarted): Hello again",
        { metadata: { "kiseki-code": "no_session" } },
      );
    }
    s.usedMs = Date.now();
    return s;
  };
  const ns = (caller: PeerIdentity, name: string): NamespaceRef =>
    backend.namespace(tenantOf(caller), name);

  /** A transport request of a session that was closed meanwhile: Hello again (anywhere). */
  const alive = (s: Session) => {
    if (!sessions.has(s.token)) {
      throw new ClientTransportRefusal(
        CLIENT_STATUS_UNAVAILABLE,
        "the client session expired on this node: Hello again",
      );
    }
    s.usedMs = Date.now();
  };
  // Idle sessions give their uncommitted references back without waiting for a new Hello.
  const sweeper = setInterval(() => sweep(Date.now(), false), CLIENT_SESSION_SWEEP_MS);
  Deno.unrefTimer(sweeper);

  const transport = await ClientTransportServer.start({
    addr: options.transportAddr ?? {
      host: dataAddr.host,
      port: dataAddr.port === 0 ? 0 : dataAddr.port + CLIENT_TRANSPORT_PORT_OFFSET,
    },
    tls: options.tls,
    plaintextCallers,
    logger,
    handler: {
      session(token, caller): ClientTransportSession | string {
        const s = sessions.get(toHex(token));
        if (s === undefined) return "no such client session on this node: Hello again";
        if (!sameCaller(s.caller, caller)) return "the session belongs to another caller";
        const tenant = toHex(s.tenantId);
        return {
          async put(id, envelope) {
            alive(s);
            if (((s.grants.get(toHex(id)) ?? 0) & GRANT_WRITE) === 0) {
              throw new ClientTransportRefusal(
                CLIENT_STATUS_FORBIDDEN,
                `chunk ${toHex(id)} was not prepared for writing in this session`,
              );
            }
            try {
              parseEnvelopeHeader(envelope);
            } catch (e) {
              throw new ClientTransportRefusal(
                CLIENT_STATUS_INVALID,
                `not a chunk envelope: ${(e as Error).message}`,
              );
            }
            if (s.heldCount >= CLIENT_SESSION_HELD_REFS_MAX) {
              throw new ClientTransportRefusal(
                CLIENT_STATUS_FORBIDDEN,
                `the session holds ${CLIENT_SESSION_HELD_REFS_MAX} uncommitted chunks: commit first`,
              );
            }
            let created: boolean;
            try {
              ({ created } = await sealed.storeUploaded(id, envelope, tenant));
            } catch (e) {
              if (e instanceof SealedStoredError) {
                throw new ClientTransportRefusal(CLIENT_STATUS_FORBIDDEN, e.message);
              }
              throw e;
            }
            const key = toHex(id);
            s.held.set(key, (s.held.get(key) ?? 0) + 1);
            s.heldCount++;
            if (!sessions.has(s.token)) closeSession(s); // closed meanwhile: give it back
            return { created };
          },
          async get(id) {
            alive(s);
            if (((s.grants.get(toHex(id)) ?? 0) & GRANT_READ) === 0) {
              throw new ClientTransportRefusal(
                CLIENT_STATUS_FORBIDDEN,
                `chunk ${toHex(id)} is not in an object this session asked for`,
              );
            }
            try {
              return await engine.chunkStore.get(id);
            } catch (e) {
              if ((e as { code?: string }).code === "not_found") {
                throw new ClientTransportRefusal(CLIENT_STATUS_NOT_FOUND, (e as Error).message);
              }
              throw e;
            }
          },
        };
      },
    },
  });

  const nodes = (): ClientClusterNode[] => {
    // Nodes share one layout: each serves the data path on its Raft host, at this port.
    const hosts = new Map<number, string>();
    for (const p of config.raftPeers) hosts.set(p.id, p.addr.host);
    // The cluster state's records, where they exist, say who joined since and who left.
    for (const n of options.directory?.()?.nodes() ?? []) {
      if (n.state === "removed") {
        hosts.delete(n.id);
        continue;
      }
      try {
        hosts.set(n.id, parseHostPort(n.addr).host);
      } catch {
        // A record without a usable address: the configured one (if any) stands.
      }
    }
    hosts.delete(config.nodeId);
    const self = { nodeId: config.nodeId, dataAddr: formatHostPort(dataAddr) };
    const others = [...hosts].map(([nodeId, host]) => ({
      nodeId,
      dataAddr: formatHostPort({ host, port: dataAddr.port }),
    }));
    return [self, ...others].sort((a, b) => a.nodeId - b.nodeId);
  };

  const binding = bindGrpcService<ClientServiceMethods>(CLIENT_SERVICE, {
    async Hello(_req, { caller }) {
      const tenantId = tenantOf(caller);
      const now = Date.now();
      sweep(now, true);
      const token = crypto.getRandomValues(new Uint8Array(32));
      const s: Session = {
        token: toHex(token),
        tenantId,
        caller,
        grants: new Map(),
        held: new Map(),
        heldCount: 0,
        challenges: new Map(),
        usedMs: now,
      };
      sessions.set(s.token, s);
      const mode = options.dedup.modeFor(tenantId);
      const cdc = engine.cdc;
      return {
        tenantId: toHex(tenantId),
        session: token,
        nodes: nodes(),
        transportAddr: formatHostPort(transport.addr),
        dedupMode: mode,
        dedupKey: mode === "tenant" ? await options.dedup.keyFor(tenantId) : new Uint8Array(0),
        cdcMinBytes: cdc.minBytes,
        cdcAvgBytes: cdc.avgBytes,
        cdcMaxBytes: cdc.maxBytes,
        cdcNormalizationLevel: cdc.normalizationLevel,
        commitChunkRefsMax: PUT_CHUNK_REFS_MAX,
        transportTls: transport.tls,
      };
    },
    async ListNamespaces(_req, { caller }) {
      const list = await backend.listNamespaces(tenantOf(caller));
      return { namespaces: list.map(namespaceInfo) };
    },
    async CreateNamespace(req, { caller }) {
      const kind = req.kind === "" || req.kind === undefined ? "bucket" : req.kind;
      if (kind !== "bucket" && kind !== "posix") invalid(`kind '${kind}' is not bucket or posix`);
      return namespaceInfo(await backend.createNamespace(tenantOf(caller), req.name, kind));
    },
    async GetNamespace(req, { caller }) {
      return namespaceInfo(await backend.getNamespace(ns(caller, req.name)));
    },
    async DeleteNamespace(req, { caller }) {
      await backend.deleteNamespace(ns(caller, req.name));
      return {};
    },
    async HeadObject(req, { caller }) {
      return objectInfo(await backend.headObject(ns(caller, req.namespace), req.key));
    },
    async ListObjects(req, { caller }) {
      const r = await backend.listObjects(ns(caller, req.namespace), {
        prefix: req.prefix || undefined,
        delimiter: req.delimiter || undefined,
        startAfter: req.startAfter || undefined,
        continuationToken: req.continuationToken || undefined,
        maxKeys: req.maxKeys || undefined,
      });
      return {
        objects: r.objects.map((o) => ({ ...o })),
        commonPrefixes: r.commonPrefixes,
        keyCount: r.keyCount,
        isTruncated: r.isTruncated,
        nextContinuationToken: r.nextContinuationToken ?? "",
        nextMarker: r.nextMarker ?? "",
      };
    },
    async DeleteObject(req, { caller }) {
      return await backend.deleteObject(ns(caller, req.namespace), req.key);
    },
    async CopyObject(req, { caller }) {
      const r = await backend.copyObject(
        ns(caller, req.sourceNamespace),
        req.sourceKey,
        ns(caller, req.targetNamespace),
        req.targetKey,
        req.replaceMetadata
          ? { metadata: { ...req.metadata }, contentType: req.contentType || undefined }
          : {},
      );
      return { etag: r.etag, version: r.version, size: r.size };
    },
    async ObjectManifest(req, { caller }) {
      const s = sessionOf(req.session, caller);
      const ref = ns(caller, req.namespace);
      const info = await backend.headObject(ref, req.key); // tenant gate and read barrier
      const c = sealed.composition(ref, req.key);
      const base = {
        info: objectInfo({ ...info, size: c.size, etag: c.etag, version: c.version }),
      };
      if (c.content.kind === "inline") {
        return {
          ...base,
          inline: true,
          inlineBytes: c.content.bytes,
          chunks: [],
          epoch: 0,
          keys: [],
        };
      }
      const refs = c.content.chunkRefs;
      const epoch = await sealed.currentEpoch();
      const ids = refs.map((r) => r.chunkId);
      // Keys for the first chunks; a reader asks ChunkKeys for the rest as it gets there.
      const keys = await sealed.dataKeys(epoch, ids.slice(0, SEALED_KEYS_PER_REQUEST_MAX));
      for (const id of ids) grant(s, id, GRANT_READ);
      return {
        ...base,
        inline: false,
        inlineBytes: new Uint8Array(0),
        chunks: refs.map(wireRef),
        epoch,
        keys,
      };
    },
    async ChunkKeys(req, { caller }) {
      sessionOf(req.session, caller);
      const ref = ns(caller, req.namespace);
      await backend.headObject(ref, req.key);
      const c = sealed.composition(ref, req.key);
      const own = new Set(
        c.content.kind === "inline" ? [] : c.content.chunkRefs.map((r) => toHex(r.chunkId)),
      );
      for (const id of req.chunkIds) {
        if (!own.has(toHex(id))) {
          throw permissionDenied(caller, `have the key of chunk ${toHex(id)}: not in this object`);
        }
      }
      return { keys: await sealed.dataKeys(req.epoch, req.chunkIds) };
    },
    async PrepareChunks(req, { caller }) {
      const s = sessionOf(req.session, caller);
      const ids = req.chunkIds.map((id) => new Uint8Array(id));
      const [present, epoch] = await Promise.all([sealed.present(ids), sealed.currentEpoch()]);
      const fresh = ids.filter((_, i) => !present[i]);
      const freshKeys = await sealed.dataKeys(epoch, fresh);
      let k = 0;
      const keys: Uint8Array[] = [];
      const challenges: Uint8Array[] = [];
      ids.forEach((id, i) => {
        if (present[i]) {
          const challenge = crypto.getRandomValues(new Uint8Array(32));
          const key = toHex(id);
          s.challenges.delete(key);
          s.challenges.set(key, challenge);
          while (s.challenges.size > CLIENT_SESSION_GRANTS_MAX) {
            s.challenges.delete(s.challenges.keys().next().value!);
          }
          keys.push(new Uint8Array(0));
          challenges.push(challenge);
        } else {
          grant(s, id, GRANT_WRITE);
          keys.push(freshKeys[k++]!);
          challenges.push(new Uint8Array(0));
        }
      });
      return { epoch, present, keys, challenges };
    },
    async ProveChunks(req, { caller }) {
      const s = sessionOf(req.session, caller);
      if (req.proofs.length !== req.chunkIds.length) invalid("one proof per chunk id");
      if (req.chunkIds.length > SEALED_KEYS_PER_REQUEST_MAX) {
        invalid(`at most ${SEALED_KEYS_PER_REQUEST_MAX} proofs per call`);
      }
      const tenant = toHex(s.tenantId);
      for (const [i, raw] of req.chunkIds.entries()) {
        const id = new Uint8Array(raw);
        const key = toHex(id);
        const challenge = s.challenges.get(key);
        if (challenge === undefined) {
          throw permissionDenied(caller, `prove chunk ${key}: no challenge (PrepareChunks first)`);
        }
        if (s.heldCount >= CLIENT_SESSION_HELD_REFS_MAX) {
          invalid(`the session holds ${CLIENT_SESSION_HELD_REFS_MAX} uncommitted chunks`);
        }
        if (!(await sealed.prove(id, challenge, new Uint8Array(req.proofs[i]!), tenant))) {
          throw permissionDenied(caller, `have chunk ${key}: the proof of possession failed`);
        }
        s.held.set(key, (s.held.get(key) ?? 0) + 1);
        s.heldCount++;
      }
      if (!sessions.has(s.token)) closeSession(s);
      return {};
    },
    async CommitObject(req, { caller }) {
      const s = sessionOf(req.session, caller);
      const ref = ns(caller, req.namespace);
      await backend.getNamespace(ref); // tenant gate, and NOT_FOUND before any reference moves
      const refs: ChunkRef[] = req.chunks.map((r) => ({
        chunkId: new Uint8Array(r.chunkId),
        offsetBytes: r.offset,
        lengthBytes: r.length,
      }));
      const held = {
        take(id: Uint8Array): boolean {
          const key = toHex(id);
          const n = s.held.get(key) ?? 0;
          if (n === 0) return false;
          if (n === 1) s.held.delete(key);
          else s.held.set(key, n - 1);
          s.heldCount--;
          return true;
        },
        restore(id: Uint8Array): void {
          const key = toHex(id);
          s.held.set(key, (s.held.get(key) ?? 0) + 1);
          s.heldCount++;
        },
      };
      const { version } = await sealed.commit(ref, req.key, {
        refs,
        size: req.size,
        etag: req.etag,
        contentType: req.contentType || undefined,
        metadata: req.metadata as Metadata,
        ifAbsent: req.ifAbsent,
        ifVersion: req.hasIfVersion ? req.ifVersion : undefined,
      }, held);
      return { etag: req.etag, version, size: req.size };
    },
  });

  logger.info("client service ready", {
    transport: formatHostPort(transport.addr),
    frameBytesMax: CLIENT_FRAME_BODY_BYTES_MAX,
  });
  return {
    binding,
    transport,
    errorMapper: compositionErrorMapper,
    async close() {
      clearInterval(sweeper);
      await transport.close();
      for (const s of [...sessions.values()]) closeSession(s);
    },
  };
}

function wireRef(r: ChunkRef): ClientChunkRef {
  return { chunkId: r.chunkId, offset: r.offsetBytes, length: r.lengthBytes };
}

function namespaceInfo(n: {
  name: string;
  kind: string;
  createdMs: number;
  objects: number;
  bytes: number;
  uploads: number;
}) {
  return {
    name: n.name,
    kind: n.kind,
    createdMs: n.createdMs,
    objects: n.objects,
    bytes: n.bytes,
    uploads: n.uploads,
  };
}

function objectInfo(o: {
  key: string;
  size: number;
  etag: string;
  version: number;
  contentType: string;
  metadata: Metadata;
  createdMs: number;
  modifiedMs: number;
  partSizes: readonly number[] | null;
}): ClientObjectInfo {
  return {
    key: o.key,
    size: o.size,
    etag: o.etag,
    version: o.version,
    contentType: o.contentType,
    metadata: { ...o.metadata },
    createdMs: o.createdMs,
    modifiedMs: o.modifiedMs,
    partSizes: [...(o.partSizes ?? [])],
    hasPartSizes: o.partSizes !== null,
  };
}
