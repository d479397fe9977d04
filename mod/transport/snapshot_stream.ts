// Snapshot streams: a leader sends a follower that is too far behind for the log its shard's
// snapshot over the Raft port (its own connection kind, through the same mTLS or loopback
// checks): the Raft snapshot message with the inline state, then each durable part (the
// views) as a stream of chunks, then a checksum. The follower stages the stream in a file
// under $KISEKI_DATA_DIR/snapshots (memory stays bounded by one chunk per stream), sealed
// chunk by chunk under a key that lives only in memory for that stream (the records are
// tenant metadata; a crash leaves unreadable bytes, removed at the next stream), checks it,
// installs every durable part from the file, and only then hands the Raft message to its
// shard, which records the snapshot in its log. It answers one status byte; the leader
// reports the outcome to its Raft group (finish: probe from the snapshot on; failure: try
// again later).
//
//   magic u32 | version u8 | cluster id length u8 | cluster id | from u32 | to u32 |
//   shard u32 | message length u32 | Raft message (codec) |
//   per part: 1 u8 | name length u8 | name | (length u32 | chunk)* | 0 u32 | index u64 |
//   0 u8 | crc32c u32 (over everything after the magic)
//   answer: status u8 (0 installed) | text length u16 | text

import type * as net from "node:net";
import { assert, crc32c, type HostPort } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { Message, NodeId } from "../raft/mod.ts";
import { decodeMessage, encodeMessage, MESSAGE_SIZE_BYTES_MAX } from "../raft/codec.ts";
import type { DurableSnapshotPart } from "../log/mod.ts";
import {
  SNAPSHOT_CHUNK_BYTES_MAX,
  SNAPSHOT_INLINE_BYTES_MAX,
  SNAPSHOT_PARTS_MAX,
} from "../log/mod.ts";
import { dialNode, type TcpRaftTransport, type TlsMaterial } from "./raft_transport.ts";

/** "KSNP": the first bytes of a snapshot stream on the Raft port. */
export const SNAPSHOT_MAGIC = 0x4b534e50;
export const SNAPSHOT_STREAM_VERSION = 1;
/** Streams received at once (each holds one staging file and one chunk in memory). */
export const SNAPSHOT_STREAMS_INBOUND_MAX = 4;
/** Streams sent at once. */
export const SNAPSHOT_STREAMS_OUTBOUND_MAX = 4;
/** Largest snapshot a follower stages. */
export const SNAPSHOT_STREAM_BYTES_MAX: number = 2 ** 40;
/** Largest Raft message in the header (it carries only the inline state). */
export const SNAPSHOT_MESSAGE_BYTES_MAX: number = 32 << 20;
/** A stream that moves no byte for this long is cut. */
export const SNAPSHOT_STREAM_IDLE_MS = 30_000;
assert(
  SNAPSHOT_INLINE_BYTES_MAX + (1 << 20) <= SNAPSHOT_MESSAGE_BYTES_MAX &&
    SNAPSHOT_MESSAGE_BYTES_MAX <= MESSAGE_SIZE_BYTES_MAX,
  "a snapshot message with its inline state fits the stream header and the codec",
);
/** How long a sender waits for the follower to install what it sent. */
export const SNAPSHOT_INSTALL_TIMEOUT_MS = 10 * 60_000;
/** Time to connect to the follower. */
export const SNAPSHOT_CONNECT_TIMEOUT_MS = 5_000;
/** After a failed stream to a peer, the next waits this long (doubling up to the maximum). */
export const SNAPSHOT_RETRY_DELAY_MS_MIN = 500;
export const SNAPSHOT_RETRY_DELAY_MS_MAX = 30_000;
/** Bytes a reader buffers before it pauses its socket. */
const READ_BUFFER_BYTES_HIGH = 4 << 20;
const ANSWER_TEXT_BYTES_MAX = 1024;

export interface SnapshotStreamOptions {
  nodeId: NodeId;
  clusterId: string;
  /** The Raft address of a member (null: unknown, the stream fails). */
  addressOf(nodeId: NodeId): HostPort | null;
  tls: TlsMaterial | null;
  /** Where received streams are staged ($KISEKI_DATA_DIR/snapshots). */
  stagingDir: string;
  /** The durable parts of a shard hosted here (undefined: no such shard). */
  parts(shardId: number): readonly DurableSnapshotPart[] | undefined;
  /** Hands a received, installed snapshot message to its shard's Raft group. */
  deliver(shardId: number, message: Message): void;
  /** Tells the shard's Raft group how sending to `peer` ended. */
  report(shardId: number, peer: NodeId, status: "finish" | "failure"): void;
  log: Logger;
  idleMs?: number;
}

export interface SnapshotStreamStats {
  sent: number;
  sendFailures: number;
  received: number;
  receiveFailures: number;
  bytesSent: number;
  bytesReceived: number;
  inFlightOut: number;
  inFlightIn: number;
}

/** A stream that breaks the protocol or cannot be installed. */
export class SnapshotStreamError extends Error {
  override name = "SnapshotStreamError";
}

/** Exact reads from a socket with backpressure (pauses it while its buffer is full). */
class SocketReader {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #waiter: (() => void) | null = null;
  #ended: Error | null = null;

  constructor(readonly socket: net.Socket, head: Uint8Array) {
    if (head.length > 0) this.#push(head);
    socket.on("data", (chunk: Uint8Array) => this.#push(chunk));
    socket.on("end", () => this.#end(new SnapshotStreamError("the peer ended the stream")));
    socket.on("close", () => this.#end(new SnapshotStreamError("the connection closed")));
    socket.on("error", (e: Error) => this.#end(e));
  }

  #push(chunk: Uint8Array): void {
    this.#chunks.push(new Uint8Array(chunk));
    this.#buffered += chunk.length;
    if (this.#buffered >= READ_BUFFER_BYTES_HIGH) this.socket.pause();
    this.#wake();
  }

  #end(e: Error): void {
    this.#ended ??= e;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  async read(n: number): Promise<Uint8Array<ArrayBuffer>> {
    while (this.#buffered < n) {
      if (this.#ended !== null) throw this.#ended;
      this.socket.resume();
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const first = this.#chunks[0]!;
      const take = Math.min(first.length, n - at);
      out.set(first.subarray(0, take), at);
      at += take;
      if (take === first.length) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(take);
    }
    this.#buffered -= n;
    if (this.#buffered < READ_BUFFER_BYTES_HIGH) this.socket.resume();
    return out;
  }
}

/** Exact reads from a staged file. */
class FileReader {
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  constructor(readonly file: Deno.FsFile) {}

  async read(n: number): Promise<Uint8Array<ArrayBuffer>> {
    while (this.#buffer.length < n) {
      const block = new Uint8Array(Math.max(n - this.#buffer.length, 1 << 20));
      const got = await this.file.read(block);
      if (got === null) throw new SnapshotStreamError("the staged snapshot is truncated");
      const merged = new Uint8Array(this.#buffer.length + got);
      merged.set(this.#buffer);
      merged.set(block.subarray(0, got), this.#buffer.length);
      this.#buffer = merged;
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }
}

const u32 = (b: Uint8Array, at = 0) => new DataView(b.buffer, b.byteOffset).getUint32(at);
const u64 = (b: Uint8Array) => {
  const v = new DataView(b.buffer, b.byteOffset);
  return v.getUint32(0) * 0x1_0000_0000 + v.getUint32(4);
};
function u32Bytes(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}
function u64Bytes(n: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, Math.floor(n / 0x1_0000_0000));
  v.setUint32(4, n >>> 0);
  return out;
}

export class SnapshotStreams {
  readonly #options: SnapshotStreamOptions;
  readonly #clusterId: Uint8Array;
  readonly #outbound = new Map<string, Promise<void>>();
  /** Per shard and peer that failed last: when the next attempt may start, and the delay. */
  readonly #retry = new Map<string, { atMs: number; delayMs: number }>();
  readonly #inbound = new Set<number>();
  readonly #sockets = new Set<net.Socket>();
  readonly #idleMs: number;
  #closed = false;
  readonly #stats: SnapshotStreamStats = {
    sent: 0,
    sendFailures: 0,
    received: 0,
    receiveFailures: 0,
    bytesSent: 0,
    bytesReceived: 0,
    inFlightOut: 0,
    inFlightIn: 0,
  };

  private constructor(options: SnapshotStreamOptions) {
    this.#options = options;
    this.#clusterId = new TextEncoder().encode(options.clusterId);
    assert(this.#clusterId.length <= 255, "cluster id is at most 255 bytes");
    this.#idleMs = options.idleMs ?? SNAPSHOT_STREAM_IDLE_MS;
  }

  /** Takes snapshot streams arriving on the transport's port. */
  static attach(transport: TcpRaftTransport, options: SnapshotStreamOptions): SnapshotStreams {
    assert(transport.nodeId === options.nodeId, "snapshot streams run on the transport's node");
    const streams = new SnapshotStreams(options);
    // What a crash left staged is sealed under a key that died with it: unreadable, so gone.
    try {
      Deno.removeSync(options.stagingDir, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    transport.acceptConnectionKind(SNAPSHOT_MAGIC, (socket, head) => streams.#accept(socket, head));
    return streams;
  }

  stats(): SnapshotStreamStats {
    return {
      ...this.#stats,
      inFlightOut: this.#outbound.size,
      inFlightIn: this.#inbound.size,
    };
  }

  /** Streams the shard's snapshot to `message.to` (a Raft snapshot message from its group). */
  send(shardId: number, message: Message): void {
    assert(message.type === "snapshot" && message.snapshot !== null, "a snapshot message");
    const key = `${shardId}:${message.to}`;
    if (this.#outbound.has(key)) return; // the stream under way reports for this one too
    const retry = this.#retry.get(key);
    if (
      this.#closed || this.#outbound.size >= SNAPSHOT_STREAMS_OUTBOUND_MAX ||
      (retry !== undefined && performance.now() < retry.atMs)
    ) {
      // Raft asks again with its next probe.
      this.#options.report(shardId, message.to, "failure");
      return;
    }
    const run = this.#send(shardId, message).then(
      () => {
        this.#stats.sent++;
        this.#retry.delete(key);
        this.#options.report(shardId, message.to, "finish");
      },
      (e) => {
        this.#stats.sendFailures++;
        const delayMs = Math.min(
          SNAPSHOT_RETRY_DELAY_MS_MAX,
          retry === undefined ? SNAPSHOT_RETRY_DELAY_MS_MIN : retry.delayMs * 2,
        );
        this.#retry.set(key, { atMs: performance.now() + delayMs, delayMs });
        this.#options.log.warn("sending a snapshot failed; trying again later", {
          shard: shardId,
          peer: message.to,
          retryMs: delayMs,
          error: e,
        });
        this.#options.report(shardId, message.to, "failure");
      },
    ).finally(() => this.#outbound.delete(key));
    this.#outbound.set(key, run);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#sockets) s.destroy();
    await Promise.allSettled([...this.#outbound.values()]);
  }

  async #send(shardId: number, message: Message): Promise<void> {
    const parts = this.#options.parts(shardId);
    if (parts === undefined) throw new SnapshotStreamError(`shard ${shardId} is not hosted`);
    const addr = this.#options.addressOf(message.to);
    if (addr === null) throw new SnapshotStreamError(`no address for node ${message.to}`);
    const socket = dialNode(addr, this.#options.tls, 30_000);
    this.#sockets.add(socket);
    socket.setTimeout(this.#idleMs, () => socket.destroy(new SnapshotStreamError("idle")));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new SnapshotStreamError(`no connection to ${addr.host}:${addr.port}`)),
          SNAPSHOT_CONNECT_TIMEOUT_MS,
        );
        socket.once(this.#options.tls === null ? "connect" : "secureConnect", () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once("error", (e) => {
          clearTimeout(timer);
          reject(e);
        });
      });
      const reader = new SocketReader(socket, new Uint8Array(0));
      let crc = 0;
      const write = async (bytes: Uint8Array, covered = true): Promise<void> => {
        if (covered) crc = crc32c(bytes, crc);
        this.#stats.bytesSent += bytes.length;
        if (!socket.write(bytes)) {
          await new Promise<void>((resolve, reject) => {
            const onClose = () => reject(new SnapshotStreamError("the connection closed"));
            socket.once("close", onClose);
            socket.once("drain", () => {
              socket.off("close", onClose);
              resolve();
            });
          });
        }
      };
      const encoded = encodeMessage(message);
      const head = new Uint8Array(4 + 1 + 1 + this.#clusterId.length + 16);
      const view = new DataView(head.buffer);
      view.setUint32(0, SNAPSHOT_MAGIC);
      head[4] = SNAPSHOT_STREAM_VERSION;
      head[5] = this.#clusterId.length;
      head.set(this.#clusterId, 6);
      const at = 6 + this.#clusterId.length;
      view.setUint32(at, this.#options.nodeId);
      view.setUint32(at + 4, message.to);
      view.setUint32(at + 8, shardId);
      view.setUint32(at + 12, encoded.length);
      await write(head.subarray(0, 4), false);
      await write(head.subarray(4));
      await write(encoded);
      for (const part of parts) {
        const name = new TextEncoder().encode(part.name);
        await write(Uint8Array.of(1, name.length));
        await write(name);
        const index = await part.export(async (chunk) => {
          assert(chunk.length > 0 && chunk.length <= SNAPSHOT_CHUNK_BYTES_MAX, "chunk size");
          await write(u32Bytes(chunk.length));
          await write(chunk);
        }, message.snapshot!.meta.index);
        assert(index >= message.snapshot!.meta.index, "a part exported behind the snapshot");
        await write(u32Bytes(0));
        await write(u64Bytes(index));
      }
      await write(Uint8Array.of(0));
      await write(u32Bytes(crc), false);
      // The follower answers once every part is installed, which takes as long as it takes
      // to write the state: only a much longer silence means it is gone.
      socket.setTimeout(SNAPSHOT_INSTALL_TIMEOUT_MS);
      const status = await reader.read(1);
      const textBytes = u32(new Uint8Array([0, 0, ...await reader.read(2)]));
      const text = new TextDecoder().decode(await reader.read(textBytes));
      if (status[0] !== 0) {
        throw new SnapshotStreamError(`node ${message.to} refused the snapshot: ${text}`);
      }
      this.#options.log.info("snapshot sent", {
        shard: shardId,
        peer: message.to,
        index: message.snapshot!.meta.index,
      });
    } finally {
      this.#sockets.delete(socket);
      socket.destroy();
    }
  }

  #accept(socket: net.Socket, head: Uint8Array): void {
    socket.on("error", () => {});
    if (this.#closed || this.#inbound.size >= SNAPSHOT_STREAMS_INBOUND_MAX) {
      socket.destroy();
      return;
    }
    const reader = new SocketReader(socket, head);
    socket.setTimeout(this.#idleMs, () => socket.destroy());
    this.#sockets.add(socket);
    let shardId = -1;
    const answer = (status: number, text: string) => {
      const bytes = new TextEncoder().encode(text).subarray(0, ANSWER_TEXT_BYTES_MAX);
      const out = new Uint8Array(3 + bytes.length);
      out[0] = status;
      new DataView(out.buffer).setUint16(1, bytes.length);
      out.set(bytes, 3);
      socket.end(out);
    };
    this.#receive(reader, (id) => {
      if (this.#inbound.has(id)) {
        throw new SnapshotStreamError(`a snapshot of shard ${id} is already being received`);
      }
      shardId = id;
      this.#inbound.add(id);
    }).then(
      () => {
        this.#stats.received++;
        answer(0, "installed");
      },
      (e) => {
        this.#stats.receiveFailures++;
        this.#options.log.warn("receiving a snapshot failed", {
          shard: shardId,
          from: socket.remoteAddress,
          error: e,
        });
        answer(1, (e as Error).message);
      },
    ).finally(() => {
      if (shardId >= 0) this.#inbound.delete(shardId);
      this.#sockets.delete(socket);
    });
  }

  async #receive(reader: SocketReader, claim: (shardId: number) => void): Promise<void> {
    const fixed = await reader.read(6);
    if (u32(fixed) !== SNAPSHOT_MAGIC) throw new SnapshotStreamError("not a snapshot stream");
    if (fixed[4] !== SNAPSHOT_STREAM_VERSION) {
      throw new SnapshotStreamError(`unsupported snapshot stream version ${fixed[4]}`);
    }
    let crc = crc32c(fixed.subarray(4));
    const take = async (n: number) => {
      const bytes = await reader.read(n);
      crc = crc32c(bytes, crc);
      this.#stats.bytesReceived += n;
      return bytes;
    };
    const cluster = new TextDecoder().decode(await take(fixed[5]!));
    if (cluster !== this.#options.clusterId) {
      throw new SnapshotStreamError(`a snapshot for cluster ${cluster}`);
    }
    const ids = await take(16);
    const from = u32(ids, 0);
    const to = u32(ids, 4);
    const shardId = u32(ids, 8);
    const messageBytes = u32(ids, 12);
    if (to !== this.#options.nodeId) throw new SnapshotStreamError(`a snapshot for node ${to}`);
    if (this.#options.addressOf(from) === null) {
      throw new SnapshotStreamError(`a snapshot from unknown node ${from}`);
    }
    const parts = this.#options.parts(shardId);
    if (parts === undefined) throw new SnapshotStreamError(`shard ${shardId} is not hosted`);
    if (messageBytes > SNAPSHOT_MESSAGE_BYTES_MAX) {
      throw new SnapshotStreamError(`a snapshot message of ${messageBytes} bytes`);
    }
    claim(shardId);
    const message = decodeMessage(await take(messageBytes));
    if (
      message.type !== "snapshot" || message.snapshot === null || message.from !== from ||
      message.to !== to
    ) {
      throw new SnapshotStreamError("the stream does not carry a snapshot message from its sender");
    }

    // Stage every part's chunks to a file, noting where each starts and its index.
    await Deno.mkdir(this.#options.stagingDir, { recursive: true });
    const path = `${this.#options.stagingDir}/shard-${shardId}.incoming`;
    const file = await Deno.open(path, { read: true, write: true, create: true, truncate: true });
    const seal = await StagingSeal.create();
    try {
      const staged: { part: DurableSnapshotPart; offset: number; index: number }[] = [];
      let offset = 0;
      let total = 0;
      for (;;) {
        const more = (await take(1))[0];
        if (more === 0) break;
        if (more !== 1 || staged.length >= SNAPSHOT_PARTS_MAX) {
          throw new SnapshotStreamError("damaged part header");
        }
        const name = new TextDecoder().decode(await take((await take(1))[0]!));
        const part = parts.find((p) => p.name === name);
        if (part === undefined) throw new SnapshotStreamError(`part ${name} is not known here`);
        const start = offset;
        for (;;) {
          const length = u32(await take(4));
          if (length > SNAPSHOT_CHUNK_BYTES_MAX) {
            throw new SnapshotStreamError(`a chunk of ${length} bytes`);
          }
          total += length;
          if (total > SNAPSHOT_STREAM_BYTES_MAX) throw new SnapshotStreamError("too large");
          const sealed = length > 0 ? await seal.seal(await take(length)) : new Uint8Array(0);
          const frame = new Uint8Array(4 + sealed.length);
          new DataView(frame.buffer).setUint32(0, sealed.length);
          frame.set(sealed, 4);
          await writeAll(file, frame);
          offset += frame.length;
          if (length === 0) break;
        }
        staged.push({ part, offset: start, index: u64(await take(8)) });
      }
      const expected = crc;
      const trailer = u32(await reader.read(4));
      if (trailer !== expected) throw new SnapshotStreamError("the snapshot fails its checksum");
      // Installing sends nothing: the sender waits up to SNAPSHOT_INSTALL_TIMEOUT_MS.
      reader.socket.setTimeout(0);
      for (const p of parts) {
        if (!staged.some((s) => s.part === p)) {
          throw new SnapshotStreamError(`the snapshot lacks part ${p.name}`);
        }
      }
      // Every part first, then the log: a crash in between leaves the log behind, and the
      // leader sends a snapshot again.
      for (const s of staged) {
        if (s.index < message.snapshot.meta.index) {
          throw new SnapshotStreamError(`part ${s.part.name} is behind the snapshot`);
        }
        await file.seek(s.offset, Deno.SeekMode.Start);
        await s.part.install(fileChunks(new FileReader(file), seal), s.index);
      }
      this.#options.deliver(shardId, message);
      this.#options.log.info("snapshot installed", {
        shard: shardId,
        from,
        index: message.snapshot.meta.index,
        bytes: total,
      });
    } finally {
      file.close();
      await Deno.remove(path).catch(() => {});
    }
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

async function* fileChunks(reader: FileReader, seal: StagingSeal): AsyncIterable<Uint8Array> {
  for (;;) {
    const length = u32(await reader.read(4));
    if (length === 0) return;
    yield await seal.open(await reader.read(length));
  }
}

/**
 * AES-256-GCM under a random key held only by this object: each staged chunk is sealed
 * with a fresh 12-byte nonce stored before it.
 */
class StagingSeal {
  private constructor(readonly key: CryptoKey) {}

  static async create(): Promise<StagingSeal> {
    const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
      "encrypt",
      "decrypt",
    ]);
    return new StagingSeal(key);
  }

  async seal(plain: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, plain),
    );
    const out = new Uint8Array(12 + sealed.length);
    out.set(iv);
    out.set(sealed, 12);
    return out;
  }

  async open(sealed: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    if (sealed.length < 12 + 16) throw new SnapshotStreamError("a staged chunk is torn");
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: sealed.subarray(0, 12) },
          this.key,
          sealed.subarray(12),
        ),
      );
    } catch {
      throw new SnapshotStreamError("a staged chunk fails its authentication");
    }
  }
}
