// Tests of the gRPC plumbing: a fake log service (it lives only here) registered through the
// helpers, every RPC called through the client factory, status codes mapped both ways, and
// mutual TLS with certificates from scripts/gen_certs.sh.

import assert from "node:assert/strict";
import { AssertionError, missingPart } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { CodecError } from "../raft/codec.ts";
import { ProposalDroppedError } from "../raft/mod.ts";
import {
  type AppendDeltaRequest,
  authenticateCaller,
  bindGrpcService,
  createGrpcClient,
  defineGrpcService,
  type Delta,
  type GrpcCallContext,
  type GrpcHandlers,
  GrpcStatus,
  GrpcStatusError,
  LEADER_ID_METADATA_KEY,
  LOG_SERVICE,
  type LogServiceMethods,
  startGrpcServer,
  toGrpcStatusError,
} from "./grpc.ts";
import { genCerts, OPENSSL, tlsMaterial } from "./_testing.ts";

const HOST = "127.0.0.1";

/** An error type of the fake service, mapped by a service-specific mapper. */
class FakeValidationError extends Error {}

/** Shard ids the fake answers with an error instead of a result. */
const SHARD_NOT_HERE = 404;
const SHARD_NOT_LEADER = 409;
const SHARD_NO_QUORUM = 503;
const SHARD_BAD_REQUEST = 400;
const SHARD_BUG = 500;

function fakeLogService(calls: { context: GrpcCallContext }[]): GrpcHandlers<LogServiceMethods> {
  const log: Delta[] = [];
  let maintenance = false;
  const check = (shardId: number): void => {
    switch (shardId) {
      case SHARD_NOT_HERE:
        throw new GrpcStatusError(GrpcStatus.NOT_FOUND, `shard ${shardId} is not on this node`);
      case SHARD_NOT_LEADER:
        throw new GrpcStatusError(GrpcStatus.FAILED_PRECONDITION, "not the leader of shard 409", {
          metadata: { [LEADER_ID_METADATA_KEY]: "3" },
        });
      case SHARD_NO_QUORUM:
        throw new ProposalDroppedError("no leader");
      case SHARD_BAD_REQUEST:
        throw new FakeValidationError("hashed_key must be 32 bytes, got 3");
      case SHARD_BUG:
        throw new Error("secret internal detail");
    }
  };
  return {
    AppendDelta(request: AppendDeltaRequest, context) {
      calls.push({ context });
      check(request.shardId);
      const sequence = log.length + 1;
      const timestamp = { physicalMs: 1_700_000_000_000 + sequence, logical: 2, nodeId: 1 };
      log.push({ ...request, sequence, term: 7, timestamp });
      return { sequence, term: 7, timestamp };
    },
    async ReadDeltas(request, context) {
      calls.push({ context });
      await Promise.resolve(); // async handlers work too
      check(request.shardId);
      const from = Math.max(1, request.fromSequence);
      const page = log.slice(from - 1, from - 1 + Math.min(request.maxCount || 100, 100));
      return { deltas: page, nextSequence: from + page.length, tip: log.length };
    },
    ShardHealth(request, context) {
      calls.push({ context });
      check(request.shardId);
      return {
        shardId: request.shardId,
        reportingNodeId: 1,
        members: [
          { nodeId: 1, address: "127.0.0.1:9300", role: "MEMBER_ROLE_LEADER", matchSequence: 2 },
          { nodeId: 2, address: "127.0.0.2:9300", role: "MEMBER_ROLE_FOLLOWER", matchSequence: 1 },
        ],
        leaderId: 1,
        term: 7,
        commitSequence: log.length,
        appliedSequence: log.length,
        state: "SHARD_STATE_DEGRADED",
        maintenance,
      };
    },
    SetMaintenance(request, context) {
      calls.push({ context });
      check(request.shardId);
      const changed = maintenance !== request.enabled;
      maintenance = request.enabled;
      return { shardId: request.shardId, maintenance, sequence: changed ? log.length + 1 : 0 };
    },
  };
}

const fakeErrorMapper = (e: unknown): GrpcStatusError | null =>
  e instanceof FakeValidationError
    ? new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, e.message)
    : null;

function quietLogger(lines: string[] = []) {
  return createLogger({ level: "info", format: "text", sink: { write: (l) => lines.push(l) } });
}

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("startGrpcServer() serves every LogService RPC to createGrpcClient()", async () => {
  const calls: { context: GrpcCallContext }[] = [];
  const server = await startGrpcServer({
    addr: { host: HOST, port: 0 },
    services: [bindGrpcService(LOG_SERVICE, fakeLogService(calls))],
    logger: quietLogger(),
  });
  const client = createGrpcClient(LOG_SERVICE, server.addr);
  try {
    const key = new Uint8Array(32).fill(7);
    const first = await client.AppendDelta({
      shardId: 1,
      tenantId: "acme",
      operation: "DELTA_OPERATION_CREATE",
      hashedKey: key,
      chunkRefs: [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)],
      payload: bytes(1, 2, 3),
    }, { metadata: { "x-request-id": "r1" } });
    assert.deepEqual(first, {
      sequence: 1,
      term: 7,
      timestamp: { physicalMs: 1_700_000_000_001, logical: 2, nodeId: 1 },
    });
    assert.equal(calls[0]!.context.metadata["x-request-id"], "r1");
    assert.match(calls[0]!.context.peer, /127\.0\.0\.1:\d+/);
    assert.equal(calls[0]!.context.peerCertificate, null);
    assert.deepEqual(calls[0]!.context.caller, { kind: "loopback" });
    const second = await client.AppendDelta({
      shardId: 1,
      tenantId: "acme",
      operation: "DELTA_OPERATION_DELETE",
      hashedKey: key,
      chunkRefs: [],
      payload: new Uint8Array(0),
    });
    assert.equal(second.sequence, 2);

    const page = await client.ReadDeltas({ shardId: 1, fromSequence: 0, maxCount: 0 });
    assert.equal(page.nextSequence, 3);
    assert.equal(page.tip, 2);
    assert.equal(page.deltas.length, 2);
    const [d1, d2] = page.deltas as [Delta, Delta];
    assert.equal(d1.operation, "DELTA_OPERATION_CREATE");
    assert.equal(d1.tenantId, "acme");
    assert.deepEqual([...d1.hashedKey], [...key]);
    assert.deepEqual(d1.chunkRefs.map((c) => c[0]), [1, 2]);
    assert.deepEqual([...d1.payload], [1, 2, 3]);
    assert.equal(d2.operation, "DELTA_OPERATION_DELETE");
    assert.deepEqual(d2.chunkRefs, [], "empty repeated fields come back as []");
    assert.equal(d2.payload.length, 0);

    const health = await client.ShardHealth({ shardId: 1 });
    assert.equal(health.state, "SHARD_STATE_DEGRADED");
    assert.equal(health.leaderId, 1);
    assert.deepEqual(health.members.map((m) => [m.nodeId, m.role, m.matchSequence]), [
      [1, "MEMBER_ROLE_LEADER", 2],
      [2, "MEMBER_ROLE_FOLLOWER", 1],
    ]);
    assert.equal(health.maintenance, false);

    const on = await client.SetMaintenance({ shardId: 1, enabled: true });
    assert.deepEqual(on, { shardId: 1, maintenance: true, sequence: 3 });
    const again = await client.SetMaintenance({ shardId: 1, enabled: true });
    assert.equal(again.sequence, 0, "setting the current value changes nothing");
    assert.equal((await client.ShardHealth({ shardId: 1 })).maintenance, true);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("startGrpcServer() maps handler errors to status codes the client sees with their messages", async () => {
  const lines: string[] = [];
  const server = await startGrpcServer({
    addr: { host: HOST, port: 0 },
    services: [bindGrpcService(LOG_SERVICE, fakeLogService([]))],
    errorMappers: [fakeErrorMapper],
    logger: quietLogger(lines),
  });
  const client = createGrpcClient(LOG_SERVICE, server.addr);
  const failure = async (shardId: number): Promise<GrpcStatusError> => {
    try {
      await client.ShardHealth({ shardId });
    } catch (e) {
      assert.ok(e instanceof GrpcStatusError, `a GrpcStatusError, not ${e}`);
      return e;
    }
    throw new Error(`shard ${shardId} did not fail`);
  };
  try {
    const notFound = await failure(SHARD_NOT_HERE);
    assert.equal(notFound.code, GrpcStatus.NOT_FOUND);
    assert.equal(notFound.codeName, "NOT_FOUND");
    assert.equal(notFound.message, "shard 404 is not on this node");

    const notLeader = await failure(SHARD_NOT_LEADER);
    assert.equal(notLeader.code, GrpcStatus.FAILED_PRECONDITION);
    assert.equal(notLeader.message, "not the leader of shard 409");
    assert.equal(notLeader.metadata[LEADER_ID_METADATA_KEY], "3", "trailing metadata arrives");

    const noQuorum = await failure(SHARD_NO_QUORUM);
    assert.equal(noQuorum.code, GrpcStatus.UNAVAILABLE, "raft's ProposalDroppedError");
    assert.equal(noQuorum.message, "proposal not accepted: no leader");

    const invalid = await failure(SHARD_BAD_REQUEST);
    assert.equal(invalid.code, GrpcStatus.INVALID_ARGUMENT, "the service's own mapper");
    assert.equal(invalid.message, "hashed_key must be 32 bytes, got 3");

    const bug = await failure(SHARD_BUG);
    assert.equal(bug.code, GrpcStatus.INTERNAL);
    assert.equal(bug.message, "internal error", "internal details stay on the server");
    assert.ok(lines.some((l) => l.includes("secret internal detail")), "...in its log");

    // Async handlers' rejections take the same path.
    const read = await client.ReadDeltas({ shardId: SHARD_NOT_HERE, fromSequence: 1, maxCount: 1 })
      .then(() => null, (e) => e as GrpcStatusError);
    assert.equal(read?.code, GrpcStatus.NOT_FOUND);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("createGrpcClient() reports an unreachable server as UNAVAILABLE and honours deadlines", async () => {
  const client = createGrpcClient(LOG_SERVICE, { host: HOST, port: 9 }, { deadlineMs: 2000 });
  try {
    const e = await client.ShardHealth({ shardId: 1 }).then(() => null, (e) => e);
    assert.ok(e instanceof GrpcStatusError);
    assert.ok(
      e.code === GrpcStatus.UNAVAILABLE || e.code === GrpcStatus.DEADLINE_EXCEEDED,
      e.codeName,
    );
  } finally {
    client.close();
  }

  const server = await startGrpcServer({
    addr: { host: HOST, port: 0 },
    services: [bindGrpcService(LOG_SERVICE, {
      ...fakeLogService([]),
      ShardHealth: (_request, context) =>
        new Promise((_resolve, reject) => {
          context.signal.addEventListener("abort", () => reject(new Error("cancelled")));
        }),
    })],
    logger: quietLogger(),
  });
  const slow = createGrpcClient(LOG_SERVICE, server.addr);
  try {
    const e = await slow.ShardHealth({ shardId: 1 }, { deadlineMs: 100 }).then(
      () => null,
      (e) => e,
    );
    assert.equal((e as GrpcStatusError).code, GrpcStatus.DEADLINE_EXCEEDED);
  } finally {
    slow.close();
    await server.close(100);
  }
});

Deno.test("toGrpcStatusError() keeps status errors, tries mappers in order, and hides the rest", () => {
  const own = new GrpcStatusError(GrpcStatus.ALREADY_EXISTS, "exists");
  assert.equal(toGrpcStatusError(own), own);
  assert.equal(toGrpcStatusError(new FakeValidationError("x"), [fakeErrorMapper]).code, 3);
  assert.equal(toGrpcStatusError(new CodecError("truncated", "short")).code, 3);
  const hidden = toGrpcStatusError(new TypeError("undefined is not a function"));
  assert.equal(hidden.code, GrpcStatus.INTERNAL);
  assert.equal(hidden.message, "internal error");
  assert.ok(hidden.cause instanceof TypeError);
  assert.throws(() => new GrpcStatusError(GrpcStatus.OK as never, "ok"), AssertionError);
});

Deno.test("startGrpcServer() refuses a definition that disagrees with its proto file", async () => {
  const wrong = defineGrpcService<Pick<LogServiceMethods, "AppendDelta">>(
    "kiseki.v1.LogService",
    "kiseki/v1/log.proto",
    ["AppendDelta"],
  );
  await assert.rejects(
    startGrpcServer({
      addr: { host: HOST, port: 0 },
      services: [
        bindGrpcService(wrong, { AppendDelta: () => ({ sequence: 1, term: 1, timestamp: null }) }),
      ],
      logger: quietLogger(),
    }),
    /methods in kiseki\/v1\/log\.proto are AppendDelta, ReadDeltas, SetMaintenance, ShardHealth/,
  );
  const missing = defineGrpcService("kiseki.v1.NoSuchService", "kiseki/v1/log.proto", []);
  assert.throws(
    () => createGrpcClient(missing, { host: HOST, port: 1 }),
    /kiseki\.v1\.NoSuchService is not a service/,
  );
});

// ---- mutual TLS ------------------------------------------------------------------------

Deno.test({
  name:
    "startGrpcServer() with mTLS admits a client certificate of the cluster CA and answers none or another CA's UNAUTHENTICATED" +
    (OPENSSL ? "" : " (IGNORED: openssl missing, Debian package openssl)"),
  ignore: missingPart("openssl (Debian openssl)", !OPENSSL && "no openssl command on PATH"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-grpc-tls-" });
    const calls: { context: GrpcCallContext }[] = [];
    let server: Awaited<ReturnType<typeof startGrpcServer>> | null = null;
    try {
      await genCerts(`${dir}/ours`, ["--node", "node1:127.0.0.1", "--tenant", "acme"]);
      await genCerts(`${dir}/theirs`, ["--tenant", "mallory"]);
      server = await startGrpcServer({
        addr: { host: HOST, port: 0 },
        services: [bindGrpcService(LOG_SERVICE, fakeLogService(calls))],
        tls: await tlsMaterial(`${dir}/ours`, "node1", "server"),
        logger: quietLogger(),
      });
      const tenant = await tlsMaterial(`${dir}/ours`, "tenant-acme", "client");
      const admitted = createGrpcClient(LOG_SERVICE, server.addr, { tls: tenant });
      try {
        const health = await admitted.ShardHealth({ shardId: 1 });
        assert.equal(health.leaderId, 1);
        const cert = calls[0]!.context.peerCertificate;
        assert.ok(cert !== null, "the handler sees the client certificate");
        assert.equal(cert.subject["CN"], "acme");
        assert.match(cert.subjectAltName, /URI:kiseki:\/\/tenant\/acme/);
        assert.deepEqual(calls[0]!.context.caller, { kind: "tenant", tenant: "acme" });
      } finally {
        admitted.close();
      }

      const refusedWith = async (tls: { ca: string; cert?: string; key?: string }) => {
        const client = createGrpcClient(LOG_SERVICE, server!.addr, { tls, deadlineMs: 3000 });
        try {
          return await client.ShardHealth({ shardId: 1 }).then(() => null, (e) => e);
        } finally {
          client.close();
        }
      };
      // Both reach the server (TLS asks for a certificate without requiring one) and are
      // answered with a status that says why, before any handler runs.
      const anonymous = await refusedWith({ ca: tenant.ca });
      assert.ok(anonymous instanceof GrpcStatusError, "a client without a certificate is refused");
      assert.equal(anonymous.codeName, "UNAUTHENTICATED", anonymous.message);
      assert.match(anonymous.message, /requires a client certificate signed by the cluster CA/);
      const mallory = await tlsMaterial(`${dir}/theirs`, "tenant-mallory", "client");
      const stranger = await refusedWith({ ca: tenant.ca, cert: mallory.cert, key: mallory.key });
      assert.ok(stranger instanceof GrpcStatusError, "another CA's certificate is refused");
      assert.equal(stranger.codeName, "UNAUTHENTICATED", stranger.message);
      assert.equal(calls.length, 1, "no refused call reached a handler");

      // The client checks the server's certificate against the address it dials: node1's
      // certificate names 127.0.0.1, so a server presenting it at 127.0.0.2 is an impostor.
      const impostor = await startGrpcServer({
        addr: { host: "127.0.0.2", port: 0 },
        services: [bindGrpcService(LOG_SERVICE, fakeLogService(calls))],
        tls: await tlsMaterial(`${dir}/ours`, "node1", "server"),
        logger: quietLogger(),
      });
      const fooled = createGrpcClient(LOG_SERVICE, impostor.addr, {
        tls: tenant,
        deadlineMs: 3000,
      });
      try {
        const e = await fooled.ShardHealth({ shardId: 1 }).then(() => null, (e) => e);
        assert.ok(e instanceof GrpcStatusError, "the impostor is refused");
        assert.equal(e.code, GrpcStatus.UNAVAILABLE);
        assert.match(e.message, /127\.0\.0\.2 is not in the cert's list/);
      } finally {
        fooled.close();
        await impostor.close(100);
      }
      assert.equal(calls.length, 1);
    } finally {
      await server?.close(100);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("authenticateCaller() without TLS serves loopback callers only, unless told to serve any", () => {
  const loopbackOnly = { tls: false, plaintextCallers: "loopback" } as const;
  for (const peer of ["127.0.0.1:5000", "127.9.8.7:1", "::1:5000", "::ffff:127.0.0.1:5000"]) {
    assert.deepEqual(authenticateCaller(loopbackOnly, { peer, certificate: null }), {
      kind: "loopback",
    });
  }
  for (const peer of ["10.0.0.2:5000", "192.168.1.5:443", "fe80::1:5000", "unknown"]) {
    assert.throws(
      () => authenticateCaller(loopbackOnly, { peer, certificate: null }),
      (e: unknown) =>
        e instanceof GrpcStatusError && e.codeName === "UNAUTHENTICATED" &&
        /loopback callers only/.test(e.message) && /KISEKI_ALLOW_INSECURE=true/.test(e.message),
      peer,
    );
  }
  assert.deepEqual(
    authenticateCaller({ tls: false, plaintextCallers: "any" }, {
      peer: "10.0.0.2:5000",
      certificate: null,
    }),
    { kind: "insecure" },
  );
});

Deno.test("authenticateCaller() under TLS wants a certificate naming a Kiseki identity, wherever the caller is", () => {
  const gate = { tls: true, plaintextCallers: "any" } as const;
  assert.throws(
    () => authenticateCaller(gate, { peer: "127.0.0.1:5000", certificate: null }),
    (e: unknown) => e instanceof GrpcStatusError && e.codeName === "UNAUTHENTICATED",
    "loopback is no identity under TLS, and plaintextCallers does not apply",
  );
  assert.deepEqual(
    authenticateCaller(gate, {
      peer: "10.0.0.2:5000",
      certificate: { subject: { O: "Kiseki", OU: "node", CN: "node2" }, subjectAltName: "" },
    }),
    { kind: "node", name: "node2" },
  );
  assert.throws(
    () =>
      authenticateCaller(gate, {
        peer: "10.0.0.2:5000",
        certificate: { subject: { OU: "cluster CA", CN: "x" }, subjectAltName: "" },
      }),
    (e: unknown) =>
      e instanceof GrpcStatusError && e.codeName === "PERMISSION_DENIED" &&
      /OU=cluster CA is not one scripts\/gen_certs\.sh issues/.test(e.message),
  );
});
