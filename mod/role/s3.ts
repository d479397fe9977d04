// The server's S3 endpoint (KISEKI_S3_ADDR): the gateway over the object engine, with the
// cluster's access keys (any node accepts every tenant's keys). On the cluster's first start
// the bootstrap node issues the default tenant's first access key and writes it, in the
// aws-cli credentials format, where the operator looks.

import { type Config, formatHostPort } from "../base/mod.ts";
import type { Hashing } from "../crypto/mod.ts";
import type { Logger } from "../obs/mod.ts";
import { adminJson as json, type AdminRoute } from "../admin/mod.ts";
import { CompositionError } from "../composition/mod.ts";
import { type ClusterCredentials, ClusterStateUnavailableError } from "../control/mod.ts";
import { type CredentialStore, listenS3, type S3Backend, S3Gateway } from "../s3/mod.ts";

export interface S3Endpoint {
  /** The operator API for access keys, to mount at /api/v1/s3-credentials. */
  api: AdminRoute;
  /** Revokes every access key of `tenant` (a shred starts here); returns their ids. */
  revokeTenant(tenant: string): Promise<string[]>;
  close(): Promise<void>;
}

export interface StartS3Options {
  config: Config;
  /** The engine, behind a read barrier when other nodes write too. */
  backend: S3Backend;
  credentials: ClusterCredentials;
  /** The default tenant's id, or null while the cluster state is not ready. */
  defaultTenant: () => string | null;
  log: Logger;
  signal: AbortSignal;
  /** Hashing off the event loop for streamed bodies' payload SHA-256 (the OpenSSL shim). */
  hashing?: Hashing;
}

/** The gateway's view of the cluster's keys: a cluster state that cannot answer is a 503. */
function gatewayCredentials(credentials: ClusterCredentials): CredentialStore {
  return {
    async lookup(accessKeyId) {
      try {
        return await credentials.lookup(accessKeyId);
      } catch (e) {
        if (e instanceof ClusterStateUnavailableError) {
          throw new CompositionError("unavailable", e.message);
        }
        throw e;
      }
    },
  };
}

export function startS3Gateway(options: StartS3Options): S3Endpoint {
  const { config, log, credentials } = options;
  const defaultTenant = options.defaultTenant;
  const gateway = new S3Gateway({
    backend: options.backend,
    credentials: gatewayCredentials(credentials),
    hostId: `kiseki-node-${config.nodeId}`,
    logger: log,
    hashing: options.hashing,
  });
  const server = listenS3({
    hostname: config.s3Addr.host,
    port: config.s3Addr.port,
    signal: options.signal,
    handler: (request) => gateway.handle(request),
    connectionsMax: config.s3ConnectionsMax,
    hostId: `kiseki-node-${config.nodeId}`,
    logger: log,
  });
  log.info("S3 gateway listening", {
    addr: formatHostPort(config.s3Addr),
    connectionsMax: server.limits.connectionsMax,
    bodiesInFlightMax: server.limits.bodiesInFlightMax,
  });
  return {
    api: (req, url) => credentialsApi(req, url, credentials, defaultTenant, log),
    async revokeTenant(tenant) {
      const ids = (await credentials.list(tenant)).map((k) => k.accessKeyId);
      for (const id of ids) await credentials.revoke(id);
      return ids;
    },
    async close() {
      await server.shutdown().catch(() => {});
    },
  };
}

/**
 * The default tenant (created with the cluster) is named in config/default-tenant on every
 * node; the bootstrap node issues its first access key, written 0600 to
 * KISEKI_S3_CREDENTIALS_FILE (outside the data directory), when the tenant has none and
 * that file is configured.
 */
export async function announceDefaultTenant(
  config: Config,
  credentials: ClusterCredentials,
  tenantId: string,
  issueFirstKey: boolean,
  log: Logger,
): Promise<string | null> {
  const tenantFile = `${config.dataDir}/config/default-tenant`;
  const credentialsFile = config.s3CredentialsFile;
  let named = "";
  try {
    named = (await Deno.readTextFile(tenantFile)).trim();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (named !== tenantId) await Deno.writeTextFile(tenantFile, tenantId + "\n", { mode: 0o640 });
  await retireLegacyCredentialsFile(config, log);
  if (!issueFirstKey || (await credentials.list(tenantId)).length > 0) return null;
  if (credentialsFile === null) {
    log.info(
      "the default tenant has no S3 key yet: create one with `kiseki admin s3-credentials " +
        "create`, or set KISEKI_S3_CREDENTIALS_FILE to have the first one written there",
      { tenant: tenantId },
    );
    return null;
  }
  return await issue(tenantId, credentialsFile);

  async function issue(tenant: string, credentialsFile: string): Promise<string> {
    const key = await credentials.create(tenant);
    const text = `# Kiseki S3 credentials of the default tenant ${tenant}\n` +
      `# aws --endpoint-url http://${formatHostPort(config.s3Addr)} s3 ls\n` +
      `[default]\naws_access_key_id = ${key.accessKeyId}\n` +
      `aws_secret_access_key = ${key.secretAccessKey}\n`;
    await Deno.writeTextFile(credentialsFile, text, { mode: 0o600 });
    log.info("default tenant created; its S3 access key is in the credentials file", {
      tenant,
      accessKeyId: key.accessKeyId,
      file: credentialsFile,
    });
    return credentialsFile;
  }
}

/**
 * Earlier versions wrote the first key to `<data dir>/config/s3-credentials`: a secret in
 * clear under the data directory. It moves to KISEKI_S3_CREDENTIALS_FILE when that is set
 * (and holds nothing yet); otherwise it is overwritten and removed, and the log says how to
 * get a key (the key itself stays valid: `kiseki admin s3-credentials list`).
 */
async function retireLegacyCredentialsFile(config: Config, log: Logger): Promise<void> {
  const legacy = `${config.dataDir}/config/s3-credentials`;
  let text: string;
  try {
    text = await Deno.readTextFile(legacy);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  const target = config.s3CredentialsFile;
  let moved = false;
  if (target !== null) {
    try {
      await Deno.writeTextFile(target, text, { mode: 0o600, createNew: true });
      moved = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
  await Deno.writeTextFile(legacy, " ".repeat(text.length));
  await Deno.remove(legacy);
  log.warn(
    moved
      ? "moved the S3 credentials file out of the data directory"
      : "removed the S3 credentials file from the data directory (no secret is kept there in " +
        "clear); its key still works: see `kiseki admin s3-credentials list`",
    { from: legacy, ...(moved ? { to: target } : {}) },
  );
}

/**
 * GET  /api/v1/s3-credentials?tenant=T      keys of a tenant (no secrets)
 * POST /api/v1/s3-credentials?tenant=T      a new key (the only time its secret is shown)
 * DELETE /api/v1/s3-credentials/<key id>    revoke
 * `tenant` is a 32-hex-digit tenant id or `default`.
 */
async function credentialsApi(
  req: Request,
  url: URL,
  credentials: ClusterCredentials,
  defaultTenant: () => string | null,
  log: Logger,
): Promise<Response> {
  const base = "/api/v1/s3-credentials";
  const tenantParam = url.searchParams.get("tenant") ?? "";
  const named = tenantParam === "default" ? defaultTenant() : tenantParam.toLowerCase();
  if (named === null) {
    return json(503, { error: "unavailable", message: "the cluster state is not ready yet" });
  }
  const tenant = named;
  try {
    if (url.pathname === base && (req.method === "GET" || req.method === "POST")) {
      if (!/^[0-9a-f]{32}$/.test(tenant)) {
        return json(400, {
          error: "invalid_argument",
          message: `tenant '${tenantParam}' is not 32 hex digits or 'default'`,
        });
      }
      return req.method === "GET"
        ? json(200, { tenant, keys: await credentials.list(tenant) })
        : json(201, await credentials.create(tenant));
    }
    const id = url.pathname.slice(base.length + 1);
    if (req.method === "DELETE" && id.length > 0 && !id.includes("/")) {
      const revoked = await credentials.revoke(id);
      return revoked
        ? json(200, { accessKeyId: id, revoked })
        : json(404, { error: "not_found", message: `no access key ${id}` });
    }
    return json(405, { error: "method_not_allowed", message: `${req.method} ${url.pathname}` });
  } catch (e) {
    // The request was checked above: what fails here is the store, except a tenant at its
    // key limit, which is the caller's to resolve.
    const message = (e as Error).message;
    if (message.includes("ACCESS_KEYS_PER_TENANT_MAX")) {
      return json(409, { error: "limit_reached", message });
    }
    if (e instanceof ClusterStateUnavailableError) {
      return json(503, { error: "unavailable", message });
    }
    log.error("s3 credentials API failed", {
      method: req.method,
      path: url.pathname,
      error: message,
    });
    return json(500, {
      error: "internal",
      message: "the access-key store failed; see the node log",
    });
  }
}
