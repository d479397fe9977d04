// Hands the cluster key to a joining node over the node transport (the Raft port, mutual
// TLS when configured), sealed to that node: the requester sends an ephemeral X25519 public
// key, the holder answers with its own and the cluster key sealed with AES-256-GCM under
// HKDF-SHA256 of the shared secret, bound to both node ids and both public keys. So the key
// never crosses the wire in clear, even inside TLS, and only the requester's ephemeral
// private key opens it. The holder gives it only to a member of the cluster whose TLS
// certificate (a cluster node's, checked by the port) names the address the member is
// configured at; without TLS, the port takes loopback callers only unless the operator ran
// the cluster insecure on purpose.
//
// Wire (big-endian), one request and one answer per connection:
//   request  "KKEY" u32 | version u8 (1) | requester node u32 | holder node u32 | pub [32]
//   answer   status u8 | holder node u32 | then for status 0: pub [32] | sealed len u16 |
//            sealed (nonce [12] | ciphertext+tag); otherwise: text len u16 | UTF-8 reason
//   status 0 ok, 1 refused, 2 the holder has no key yet, 3 unsupported version.

import type * as net from "node:net";
import type * as tls from "node:tls";
import { assert, formatHostPort, type HostPort } from "../base/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  checkPeerCertificate,
  dialNode,
  type TcpRaftTransport,
  type TlsMaterial,
} from "../transport/raft_transport.ts";
import { CLUSTER_KEY_BYTES, type ClusterKeySource } from "./cluster_key.ts";

export const KEY_EXCHANGE_MAGIC = 0x4b4b_4559; // "KKEY"
export const KEY_EXCHANGE_VERSION = 1;
const PUBLIC_KEY_BYTES = 32;
const REQUEST_BYTES = 4 + 1 + 4 + 4 + PUBLIC_KEY_BYTES;
const NONCE_BYTES = 12;
const SEALED_BYTES = NONCE_BYTES + CLUSTER_KEY_BYTES + 16;
/** Largest answer: header, public key and sealed key, or a reason. */
const ANSWER_BYTES_MAX = 1 + 4 + 2 + 1024 + PUBLIC_KEY_BYTES;
/** Time one exchange may take, either side. */
export const KEY_EXCHANGE_TIMEOUT_MS = 5_000;
/** Pause between rounds over the peers while none can give the key. */
export const KEY_EXCHANGE_RETRY_MS = 500;
/** Exchanges served at once (each costs an X25519 and an HKDF). */
export const KEY_EXCHANGES_IN_FLIGHT_MAX = 16;

export const KEY_EXCHANGE_OK = 0;
export const KEY_EXCHANGE_REFUSED = 1;
export const KEY_EXCHANGE_NO_KEY = 2;
export const KEY_EXCHANGE_UNSUPPORTED = 3;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HKDF_SALT = encoder.encode("kiseki cluster key exchange v1");

/** The exchange failed in a way worth a log line (the requester then tries another peer). */
export class KeyExchangeError extends Error {
  override name = "KeyExchangeError";
}

function transcript(requester: number, holder: number, reqPub: Uint8Array, holdPub: Uint8Array) {
  const out = new Uint8Array(8 + 2 * PUBLIC_KEY_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, requester);
  view.setUint32(4, holder);
  out.set(reqPub, 8);
  out.set(holdPub, 8 + PUBLIC_KEY_BYTES);
  return out;
}

async function wrappingKey(
  privateKey: CryptoKey,
  peerPublic: Uint8Array,
  info: Uint8Array,
): Promise<CryptoKey> {
  const pub = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(peerPublic),
    { name: "X25519" },
    false,
    [],
  );
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256);
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: HKDF_SALT, info: new Uint8Array(info) },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

async function ephemeral(): Promise<{ pair: CryptoKeyPair; pub: Uint8Array }> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, [
    "deriveBits",
  ]) as CryptoKeyPair;
  return { pair, pub: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)) };
}

/** Reads until `want` bytes (or the peer closes); bounded by `max` and by time. */
function readBytes(
  socket: net.Socket,
  head: Uint8Array,
  want: (have: Uint8Array) => number | null,
  max: number,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let have = head;
    const done = (error: Error | null, bytes?: Uint8Array) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onError);
      if (error === null) resolve(bytes!);
      else reject(error);
    };
    const check = () => {
      const need = want(have);
      if (need !== null && have.length >= need) done(null, have.subarray(0, need));
      else if (have.length > max) done(new KeyExchangeError(`message over ${max} bytes`));
    };
    const onData = (chunk: Uint8Array) => {
      const next = new Uint8Array(have.length + chunk.length);
      next.set(have);
      next.set(chunk, have.length);
      have = next;
      check();
    };
    const onClose = () => done(new KeyExchangeError("the peer closed the connection"));
    const onError = (e: Error) => done(new KeyExchangeError(e.message));
    const timer = setTimeout(
      () => done(new KeyExchangeError(`no answer within ${KEY_EXCHANGE_TIMEOUT_MS} ms`)),
      KEY_EXCHANGE_TIMEOUT_MS,
    );
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.on("error", onError);
    check();
  });
}

function refusal(status: number, holder: number, reason: string): Uint8Array {
  const text = encoder.encode(reason).subarray(0, 1024);
  const out = new Uint8Array(1 + 4 + 2 + text.length);
  const view = new DataView(out.buffer);
  out[0] = status;
  view.setUint32(1, holder);
  view.setUint16(5, text.length);
  out.set(text, 7);
  return out;
}

export interface ClusterKeyServerOptions {
  transport: TcpRaftTransport;
  nodeId: number;
  /** The cluster key, or null while this node has none. */
  key: () => Uint8Array | null;
  /** The configured address of member `id` (KISEKI_RAFT_PEERS), or undefined for a stranger. */
  memberAddr: (id: number) => HostPort | undefined;
  /** Whether the port runs TLS (then the member's certificate must name its address). */
  tls: boolean;
  logger?: Logger;
}

/** Serves the cluster key to members over the Raft port (connections that open with "KKEY"). */
export function serveClusterKey(options: ClusterKeyServerOptions): void {
  const logger = (options.logger ?? rootLog).child({ component: "cluster-key" });
  let inFlight = 0;
  options.transport.acceptConnectionKind(KEY_EXCHANGE_MAGIC, (socket, head) => {
    if (inFlight >= KEY_EXCHANGES_IN_FLIGHT_MAX) {
      socket.end(refusal(KEY_EXCHANGE_NO_KEY, options.nodeId, "busy; try again"));
      return;
    }
    inFlight++;
    void answer(socket, head).finally(() => inFlight--);
  });

  async function answer(socket: net.Socket, head: Uint8Array): Promise<void> {
    try {
      const request = await readBytes(socket, head, () => REQUEST_BYTES, REQUEST_BYTES);
      const view = new DataView(request.buffer, request.byteOffset, request.length);
      const version = request[4]!;
      const requester = view.getUint32(5);
      const holder = view.getUint32(9);
      const reqPub = request.slice(13, 13 + PUBLIC_KEY_BYTES);
      if (version !== KEY_EXCHANGE_VERSION) {
        socket.end(refusal(KEY_EXCHANGE_UNSUPPORTED, options.nodeId, `version ${version}`));
        return;
      }
      const problem = whyRefuse(socket, requester, holder);
      if (problem !== null) {
        logger.warn("refused to hand out the cluster key", { requester, reason: problem });
        socket.end(refusal(KEY_EXCHANGE_REFUSED, options.nodeId, problem));
        return;
      }
      const key = options.key();
      if (key === null) {
        socket.end(refusal(KEY_EXCHANGE_NO_KEY, options.nodeId, "this node has no cluster key"));
        return;
      }
      const mine = await ephemeral();
      const info = transcript(requester, options.nodeId, reqPub, mine.pub);
      const wrap = await wrappingKey(mine.pair.privateKey, reqPub, info);
      const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
      const sealed = new Uint8Array(
        await crypto.subtle.encrypt(
          { name: "AES-GCM", iv: nonce, additionalData: new Uint8Array(info) },
          wrap,
          new Uint8Array(key),
        ),
      );
      const out = new Uint8Array(1 + 4 + PUBLIC_KEY_BYTES + 2 + SEALED_BYTES);
      const outView = new DataView(out.buffer);
      out[0] = KEY_EXCHANGE_OK;
      outView.setUint32(1, options.nodeId);
      out.set(mine.pub, 5);
      outView.setUint16(5 + PUBLIC_KEY_BYTES, SEALED_BYTES);
      out.set(nonce, 7 + PUBLIC_KEY_BYTES);
      out.set(sealed, 7 + PUBLIC_KEY_BYTES + NONCE_BYTES);
      socket.end(out);
      logger.info("cluster key handed to a joining node", { requester });
    } catch (e) {
      logger.warn("cluster key exchange failed", { error: (e as Error).message });
      socket.destroy();
    }
  }

  function whyRefuse(socket: net.Socket, requester: number, holder: number): string | null {
    if (holder !== options.nodeId) return `this is node ${options.nodeId}, not ${holder}`;
    if (requester === options.nodeId) return "a node asked itself";
    const addr = options.memberAddr(requester);
    if (addr === undefined) return `node ${requester} is not a member of the cluster`;
    if (!options.tls) return null;
    const problem = checkPeerCertificate(socket as tls.TLSSocket, ["node"]);
    if (problem !== null) return problem;
    const san = String((socket as tls.TLSSocket).getPeerCertificate()?.subjectaltname ?? "");
    const names = san.split(",").map((s) => s.trim().replace(/^(DNS|IP Address):/, ""));
    if (!names.includes(addr.host)) {
      return `the certificate does not name ${addr.host}, where node ${requester} is configured`;
    }
    return null;
  }
}

export interface PeerClusterKeySourceOptions {
  nodeId: number;
  /** The other members and their Raft addresses. */
  peers: readonly { id: number; addr: HostPort }[];
  tls: TlsMaterial | null;
  logger?: Logger;
  /** Checks a received key (against the log's key check); false tries the next peer. */
  verify?: (key: Uint8Array) => Promise<boolean>;
}

/** Gets the cluster key from whichever member answers first, round after round. */
export class PeerClusterKeySource implements ClusterKeySource {
  readonly #options: PeerClusterKeySourceOptions;
  readonly #logger: Logger;

  constructor(options: PeerClusterKeySourceOptions) {
    assert(options.peers.every((p) => p.id !== options.nodeId), "peers exclude this node");
    this.#options = options;
    this.#logger = (options.logger ?? rootLog).child({ component: "cluster-key" });
  }

  async fetch(signal: AbortSignal): Promise<Uint8Array> {
    for (let round = 0; !signal.aborted; round++) {
      for (const peer of this.#options.peers) {
        if (signal.aborted) break;
        try {
          const key = await requestClusterKey({
            nodeId: this.#options.nodeId,
            holder: peer.id,
            addr: peer.addr,
            tls: this.#options.tls,
          });
          if (key === null) continue;
          if (this.#options.verify !== undefined && !(await this.#options.verify(key))) {
            this.#logger.warn("a peer's cluster key does not match the cluster's key check", {
              peer: peer.id,
            });
            continue;
          }
          this.#logger.info("cluster key received", { from: peer.id });
          return key;
        } catch (e) {
          if (round % 20 === 0) {
            this.#logger.info("cluster key not yet available from a peer", {
              peer: peer.id,
              error: (e as Error).message,
            });
          }
        }
      }
      await new Promise((r) => setTimeout(r, KEY_EXCHANGE_RETRY_MS));
    }
    throw new KeyExchangeError("stopped before the cluster key arrived");
  }
}

/**
 * One exchange with `holder` at `addr`: the cluster key, or null when the holder has none
 * yet; KeyExchangeError when refused or broken.
 */
export async function requestClusterKey(options: {
  nodeId: number;
  holder: number;
  addr: HostPort;
  tls: TlsMaterial | null;
}): Promise<Uint8Array | null> {
  const mine = await ephemeral();
  const socket = dialNode(options.addr, options.tls, 30_000);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new KeyExchangeError(`connect timed out`)),
        KEY_EXCHANGE_TIMEOUT_MS,
      );
      socket.once(options.tls === null ? "connect" : "secureConnect", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once("error", (e: Error) => {
        clearTimeout(timer);
        reject(new KeyExchangeError(`${formatHostPort(options.addr)}: ${e.message}`));
      });
    });
    const request = new Uint8Array(REQUEST_BYTES);
    const view = new DataView(request.buffer);
    view.setUint32(0, KEY_EXCHANGE_MAGIC);
    request[4] = KEY_EXCHANGE_VERSION;
    view.setUint32(5, options.nodeId);
    view.setUint32(9, options.holder);
    request.set(mine.pub, 13);
    socket.write(request);
    const answer = await readBytes(socket, new Uint8Array(0), (have) => {
      if (have.length < 7) return null;
      const v = new DataView(have.buffer, have.byteOffset, have.length);
      return have[0] === KEY_EXCHANGE_OK
        ? 7 + PUBLIC_KEY_BYTES +
          (have.length >= 7 + PUBLIC_KEY_BYTES ? v.getUint16(5 + PUBLIC_KEY_BYTES) : 0xffff)
        : 7 + v.getUint16(5);
    }, ANSWER_BYTES_MAX);
    const aView = new DataView(answer.buffer, answer.byteOffset, answer.length);
    const holder = aView.getUint32(1);
    if (answer[0] !== KEY_EXCHANGE_OK) {
      const reason = decoder.decode(answer.subarray(7));
      if (answer[0] === KEY_EXCHANGE_NO_KEY) return null;
      throw new KeyExchangeError(`node ${holder} refused: ${reason}`);
    }
    if (holder !== options.holder) throw new KeyExchangeError(`answer from node ${holder}`);
    const holdPub = answer.slice(5, 5 + PUBLIC_KEY_BYTES);
    const sealed = answer.subarray(7 + PUBLIC_KEY_BYTES);
    if (sealed.length !== SEALED_BYTES) throw new KeyExchangeError("sealed key has a bad length");
    const info = transcript(options.nodeId, holder, mine.pub, holdPub);
    const wrap = await wrappingKey(mine.pair.privateKey, holdPub, info);
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: sealed.slice(0, NONCE_BYTES),
            additionalData: new Uint8Array(info),
          },
          wrap,
          sealed.slice(NONCE_BYTES),
        ),
      );
    } catch {
      throw new KeyExchangeError(`the key node ${holder} sealed does not open`);
    }
  } finally {
    socket.destroy();
  }
}
