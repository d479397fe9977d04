// NFSv4.1 state (RFC 8881 §2.10, §8, §9, §18.35-18.37): client records, sessions with their
// slot tables and reply caches, open and lock stateids, share reservations, byte-range locks,
// leases renewed by SEQUENCE and the grace period after a restart. Pure: time comes from
// `now`, and client records reach storage only through the ClientRecordStore port.

import { createHash } from "node:crypto";
import { assert, toHex } from "../base/mod.ts";
import {
  NFS4ERR_BAD_STATEID,
  NFS4ERR_BADSESSION,
  NFS4ERR_CLIENTID_BUSY,
  NFS4ERR_DENIED,
  NFS4ERR_EXPIRED,
  NFS4ERR_INVAL,
  NFS4ERR_LOCK_RANGE,
  NFS4ERR_LOCKS_HELD,
  NFS4ERR_NOENT,
  NFS4ERR_NOT_SAME,
  NFS4ERR_OLD_STATEID,
  NFS4ERR_RESOURCE,
  NFS4ERR_SHARE_DENIED,
  NFS4ERR_STALE_CLIENTID,
  NFS4ERR_STALE_STATEID,
  READ_LT,
  WRITE_LT,
} from "./nfs4_const.ts";
import { Nfs4Error } from "./nfs4_errors.ts";

/** Client records held at once (each EXCHANGE_ID of a new owner makes one). */
export const NFS4_CLIENTS_MAX = 1024;
/** Sessions one client holds at once. */
export const NFS4_SESSIONS_PER_CLIENT_MAX = 8;
/** Sessions all clients hold at once. */
export const NFS4_SESSIONS_MAX = 512;
/** Slots of a session's fore channel (the client's concurrent requests). */
export const NFS4_SLOTS_MAX = 64;
/** A reply kept in a slot for retransmissions at most; larger ones answer RETRY_UNCACHED_REP. */
export const NFS4_CACHED_REPLY_BYTES_MAX = 16 << 10;
/** Open and lock stateids one client holds at once. */
export const NFS4_STATEIDS_PER_CLIENT_MAX = 16_384;
/** Distinct lock owners one client holds locks for at once. */
export const NFS4_LOCK_OWNERS_PER_CLIENT_MAX = 4096;
/** Byte ranges one lock stateid holds at once (each LOCK may split a range). */
export const NFS4_LOCK_RANGES_PER_STATEID_MAX = 1024;
/** Seconds of a lease (the lease_time attribute). */
export const NFS4_LEASE_SECONDS = 90;
/** An owner (client_owner4, open_owner4, lock_owner4) is at most this many bytes. */
export const NFS4_OPAQUE_LIMIT = 1024;

/** The largest memory the reply caches may hold, asserted reasonable once. */
assert(
  NFS4_SESSIONS_MAX * NFS4_SLOTS_MAX * NFS4_CACHED_REPLY_BYTES_MAX <= 1 << 30,
  "session reply caches fit in 1 GiB",
);

const U64_END = 1n << 64n;
export const NFS4_LENGTH_TO_EOF = 0xffff_ffff_ffff_ffffn;

export interface Slot {
  /** The last sequence id this slot accepted (0 before the first). */
  seq: number;
  inProgress: boolean;
  /** The last reply, when small enough to keep. */
  reply: Uint8Array | null;
}

export interface Session {
  id: Uint8Array;
  key: string;
  client: Client;
  slots: Slot[];
  maxOps: number;
  maxRequestBytes: number;
  maxResponseBytes: number;
  maxCachedBytes: number;
}

export interface Client {
  id: bigint;
  owner: Uint8Array;
  ownerKey: string;
  /** What the ClientRecordStore keeps of this client. */
  record: string;
  verifier: string;
  confirmed: boolean;
  /** The CREATE_SESSION sequence id the client sends next. */
  csSeq: number;
  /** The last CREATE_SESSION result, for a retransmission. */
  csReply: Uint8Array | null;
  sessions: Set<Session>;
  lastRenewMs: number;
  reclaimComplete: boolean;
  /** The owner had a record before this start: its opens and locks may be reclaimed. */
  mayReclaim: boolean;
  states: Set<OpenState | LockState>;
  lockOwners: Map<string, number>;
}

export interface OpenState {
  kind: "open";
  other: Uint8Array;
  key: string;
  seqid: number;
  client: Client;
  ownerKey: string;
  fileKey: string;
  access: number;
  deny: number;
  locks: Set<LockState>;
}

export interface LockRange {
  start: bigint;
  /** Exclusive; 2^64 for "to the end of the file". */
  end: bigint;
  type: number;
}

export interface LockState {
  kind: "lock";
  other: Uint8Array;
  key: string;
  seqid: number;
  client: Client;
  open: OpenState;
  lockOwnerKey: string;
  /** The lock_owner4 as sent (clientid, owner), for LOCK4denied. */
  lockOwner: { clientId: bigint; owner: Uint8Array };
  fileKey: string;
  ranges: LockRange[];
}

export interface Stateid {
  seqid: number;
  other: Uint8Array;
}

export interface LockDenied {
  start: bigint;
  length: bigint;
  type: number;
  owner: { clientId: bigint; owner: Uint8Array };
}

/**
 * Where client records go, so that they outlive a restart. A record is the SHA-256 of the
 * client's owner id (hex): enough to know who may reclaim, and nothing a client named.
 */
export interface ClientRecordStore {
  load(): Promise<string[]>;
  save(record: string): Promise<void>;
  remove(record: string): Promise<void>;
}

/** The record of a client owner id. */
export function clientRecordOf(owner: Uint8Array): string {
  return createHash("sha256").update("kiseki/nfs4-client/v1\0").update(owner).digest("hex");
}

export interface Nfs4StateOptions {
  now: () => number;
  /** 4 bytes that differ between starts: the high half of client ids and stateids. */
  boot: number;
  leaseMs?: number;
  /** How long after a start reclaims are accepted (default: one lease). */
  graceMs?: number;
  random?: (n: number) => Uint8Array;
  clientsMax?: number;
  stateidsPerClientMax?: number;
  lockOwnersPerClientMax?: number;
}

function overlaps(a: { start: bigint; end: bigint }, b: { start: bigint; end: bigint }): boolean {
  return a.start < b.end && b.start < a.end;
}

/** The [start, end) of an offset and length (length all ones: to the end). */
export function lockRange(offset: bigint, length: bigint): { start: bigint; end: bigint } {
  if (length === 0n) throw new Nfs4Error(NFS4ERR_INVAL, "a lock of length 0");
  if (length === NFS4_LENGTH_TO_EOF) return { start: offset, end: U64_END };
  const end = offset + length;
  if (end > U64_END) throw new Nfs4Error(NFS4ERR_INVAL, "a lock range past 2^64");
  return { start: offset, end };
}

export class Nfs4State {
  readonly #now: () => number;
  readonly #boot: number;
  readonly leaseMs: number;
  readonly #random: (n: number) => Uint8Array;
  readonly #clientsMax: number;
  readonly #stateidsMax: number;
  readonly #lockOwnersMax: number;
  readonly #clients = new Map<bigint, Client>();
  readonly #byOwner = new Map<string, Client>();
  readonly #sessions = new Map<string, Session>();
  readonly #states = new Map<string, OpenState | LockState>();
  readonly #files = new Map<string, { opens: Set<OpenState>; locks: Set<LockState> }>();
  #nextClient = 1;
  #nextState = 1;
  /** Owners with a record from before this start that have not finished reclaiming. */
  readonly #reclaimable = new Set<string>();
  #graceEndMs: number;

  constructor(options: Nfs4StateOptions) {
    this.#now = options.now;
    this.#boot = options.boot >>> 0;
    this.leaseMs = options.leaseMs ?? NFS4_LEASE_SECONDS * 1000;
    this.#graceEndMs = this.#now() + (options.graceMs ?? this.leaseMs);
    this.#random = options.random ?? ((n) => crypto.getRandomValues(new Uint8Array(n)));
    this.#clientsMax = options.clientsMax ?? NFS4_CLIENTS_MAX;
    this.#stateidsMax = options.stateidsPerClientMax ?? NFS4_STATEIDS_PER_CLIENT_MAX;
    this.#lockOwnersMax = options.lockOwnersPerClientMax ?? NFS4_LOCK_OWNERS_PER_CLIENT_MAX;
  }

  // ---- grace ---------------------------------------------------------------------------------

  /** Owners that held state before this start (from the ClientRecordStore). */
  setReclaimable(records: string[]): void {
    for (const r of records) this.#reclaimable.add(r);
  }

  /** Whether reclaims are accepted (and new opens and locks refused with NFS4ERR_GRACE). */
  inGrace(): boolean {
    if (this.#reclaimable.size === 0) return false;
    if (this.#now() >= this.#graceEndMs) {
      // Who did not come back in time lost its state: its record goes too.
      const back = new Set([...this.#clients.values()].map((c) => c.record));
      for (const r of this.#reclaimable) if (!back.has(r)) this.forgotten.push(r);
      this.#reclaimable.clear();
      return false;
    }
    return true;
  }

  // ---- clients -------------------------------------------------------------------------------

  get clientCount(): number {
    return this.#clients.size;
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /**
   * EXCHANGE_ID (RFC 8881 §18.35.5, the cases a client without SSV meets): the same owner
   * and verifier get the same record; a new verifier (the client rebooted) gets a new,
   * unconfirmed one that replaces the old when a session confirms it.
   */
  exchangeId(owner: Uint8Array, verifier: Uint8Array, updateOnly: boolean): Client {
    this.#expireLeases();
    const ownerKey = toHex(owner);
    const verifierKey = toHex(verifier);
    const found = this.#byOwner.get(ownerKey);
    if (found !== undefined && found.verifier === verifierKey) {
      found.lastRenewMs = this.#now();
      return found;
    }
    if (updateOnly) {
      // EXCHGID4_FLAG_UPD_CONFIRMED_REC_A updates a record, never makes one (§18.35.5).
      throw new Nfs4Error(
        found === undefined ? NFS4ERR_NOENT : NFS4ERR_NOT_SAME,
        "no such confirmed record",
      );
    }
    if (found !== undefined && !found.confirmed) this.#dropClient(found);
    if (this.#clients.size >= this.#clientsMax) {
      throw new Nfs4Error(NFS4ERR_RESOURCE, `${this.#clientsMax} clients already`);
    }
    const record = clientRecordOf(owner);
    const id = (BigInt(this.#boot) << 32n) | BigInt(this.#nextClient++ >>> 0);
    const client: Client = {
      id,
      owner: owner.slice(),
      ownerKey,
      verifier: verifierKey,
      confirmed: false,
      csSeq: 1,
      csReply: null,
      sessions: new Set(),
      lastRenewMs: this.#now(),
      reclaimComplete: false,
      record,
      mayReclaim: this.#reclaimable.has(record),
      states: new Set(),
      lockOwners: new Map(),
    };
    this.#clients.set(id, client);
    // The confirmed record of an earlier incarnation stays until this one is confirmed.
    if (found === undefined) this.#byOwner.set(ownerKey, client);
    else this.#pendingReplace.set(id, found);
    return client;
  }

  readonly #pendingReplace = new Map<bigint, Client>();

  client(id: bigint): Client {
    const c = this.#clients.get(id);
    if (c === undefined) {
      throw new Nfs4Error(
        Number(id >> 32n) === this.#boot ? NFS4ERR_EXPIRED : NFS4ERR_STALE_CLIENTID,
        `client ${id} is unknown`,
      );
    }
    return c;
  }

  /** Confirms a client at its first session; returns the record an earlier incarnation had. */
  confirm(client: Client): Client | null {
    if (client.confirmed) return null;
    client.confirmed = true;
    const old = this.#pendingReplace.get(client.id) ?? null;
    this.#pendingReplace.delete(client.id);
    if (old !== null) this.#dropClient(old);
    this.#byOwner.set(client.ownerKey, client);
    return old;
  }

  createSession(
    client: Client,
    attrs: {
      maxOps: number;
      maxRequestBytes: number;
      maxResponseBytes: number;
      slots: number;
      maxCachedBytes: number;
    },
  ): Session {
    if (
      client.sessions.size >= NFS4_SESSIONS_PER_CLIENT_MAX ||
      this.#sessions.size >= NFS4_SESSIONS_MAX
    ) {
      throw new Nfs4Error(NFS4ERR_RESOURCE, "too many sessions");
    }
    const id = new Uint8Array(16);
    new DataView(id.buffer).setUint32(0, this.#boot);
    id.set(this.#random(12), 4);
    const session: Session = {
      id,
      key: toHex(id),
      client,
      slots: Array.from(
        { length: attrs.slots },
        () => ({ seq: 0, inProgress: false, reply: null }),
      ),
      maxOps: attrs.maxOps,
      maxRequestBytes: attrs.maxRequestBytes,
      maxResponseBytes: attrs.maxResponseBytes,
      maxCachedBytes: attrs.maxCachedBytes,
    };
    this.#sessions.set(session.key, session);
    client.sessions.add(session);
    return session;
  }

  session(id: Uint8Array): Session {
    const s = this.#sessions.get(toHex(id));
    if (s === undefined) throw new Nfs4Error(NFS4ERR_BADSESSION, "no such session");
    return s;
  }

  destroySession(id: Uint8Array): void {
    const s = this.session(id);
    this.#sessions.delete(s.key);
    s.client.sessions.delete(s);
  }

  /** SEQUENCE renews the lease of the session's client. */
  renew(client: Client): void {
    client.lastRenewMs = this.#now();
  }

  destroyClient(id: bigint): Client {
    const c = this.client(id);
    if (c.sessions.size > 0) throw new Nfs4Error(NFS4ERR_CLIENTID_BUSY, "the client has sessions");
    this.#dropClient(c);
    return c;
  }

  /** Finishes a client's reclaims; the grace period ends when every old client has. */
  reclaimComplete(client: Client): void {
    client.reclaimComplete = true;
    this.#reclaimable.delete(client.record);
  }

  #dropClient(c: Client): void {
    for (const s of c.sessions) this.#sessions.delete(s.key);
    c.sessions.clear();
    for (const st of [...c.states]) this.#dropState(st);
    this.#clients.delete(c.id);
    this.#pendingReplace.delete(c.id);
    if (this.#byOwner.get(c.ownerKey) === c) this.#byOwner.delete(c.ownerKey);
  }

  /** Owners whose records are to be removed from the store (expired, or never came back). */
  forgotten: string[] = [];

  /** Expires silent clients at most once a second (each COMPOUND calls it). */
  tick(): void {
    if (this.#now() - this.#sweptMs < 1000) return;
    this.#expireLeases();
  }

  #sweptMs = 0;

  #expireLeases(): void {
    this.#sweptMs = this.#now();
    const deadline = this.#now() - 2 * this.leaseMs;
    for (const c of this.#clients.values()) {
      if (c.lastRenewMs < deadline) {
        this.#dropClient(c);
        if (c.confirmed) this.forgotten.push(c.record);
      }
    }
  }

  // ---- stateids ------------------------------------------------------------------------------

  #newOther(): Uint8Array {
    const other = new Uint8Array(12);
    const v = new DataView(other.buffer);
    v.setUint32(0, this.#boot);
    v.setBigUint64(4, BigInt(this.#nextState++));
    return other;
  }

  #fileOf(fileKey: string) {
    let f = this.#files.get(fileKey);
    if (f === undefined) {
      f = { opens: new Set(), locks: new Set() };
      this.#files.set(fileKey, f);
    }
    return f;
  }

  #room(client: Client): void {
    if (client.states.size >= this.#stateidsMax) {
      throw new Nfs4Error(NFS4ERR_RESOURCE, `${this.#stateidsMax} stateids already`);
    }
  }

  /** The state a stateid names, checked for staleness and age (seqid 0: the current one). */
  find(id: Stateid): OpenState | LockState {
    const boot = new DataView(id.other.buffer, id.other.byteOffset, 12).getUint32(0);
    const st = this.#states.get(toHex(id.other));
    if (st === undefined) {
      throw new Nfs4Error(
        boot === this.#boot ? NFS4ERR_BAD_STATEID : NFS4ERR_STALE_STATEID,
        "no such stateid",
      );
    }
    if (id.seqid !== 0 && id.seqid !== st.seqid) {
      throw new Nfs4Error(
        id.seqid < st.seqid ? NFS4ERR_OLD_STATEID : NFS4ERR_BAD_STATEID,
        `stateid seqid ${id.seqid}, current ${st.seqid}`,
      );
    }
    return st;
  }

  /**
   * OPEN: a new open of `fileKey` by an open owner, or an upgrade of its open. Share
   * reservations of other owners that conflict refuse it with NFS4ERR_SHARE_DENIED.
   */
  open(client: Client, ownerKey: string, fileKey: string, access: number, deny: number): OpenState {
    const file = this.#fileOf(fileKey);
    let mine: OpenState | undefined;
    for (const o of file.opens) {
      if (o.client === client && o.ownerKey === ownerKey) {
        mine = o;
        continue;
      }
      if ((o.deny & access) !== 0 || (o.access & deny) !== 0) {
        throw new Nfs4Error(NFS4ERR_SHARE_DENIED, "a share reservation of another owner");
      }
    }
    if (mine !== undefined) {
      mine.access |= access;
      mine.deny |= deny;
      mine.seqid = nextSeqid(mine.seqid);
      return mine;
    }
    this.#room(client);
    const other = this.#newOther();
    const st: OpenState = {
      kind: "open",
      other,
      key: toHex(other),
      seqid: 1,
      client,
      ownerKey,
      fileKey,
      access,
      deny,
      locks: new Set(),
    };
    this.#states.set(st.key, st);
    client.states.add(st);
    file.opens.add(st);
    return st;
  }

  downgrade(st: OpenState, access: number, deny: number): void {
    if ((access & ~st.access) !== 0 || (deny & ~st.deny) !== 0 || access === 0) {
      throw new Nfs4Error(NFS4ERR_INVAL, "a downgrade to modes the open does not hold");
    }
    st.access = access;
    st.deny = deny;
    st.seqid = nextSeqid(st.seqid);
  }

  close(st: OpenState): void {
    for (const l of st.locks) {
      if (l.ranges.length > 0) throw new Nfs4Error(NFS4ERR_LOCKS_HELD, "locks are held");
    }
    for (const l of [...st.locks]) this.#dropState(l);
    this.#dropState(st);
    st.seqid = nextSeqid(st.seqid);
  }

  /** FREE_STATEID: a lock stateid without locks goes; anything else still holding is refused. */
  free(st: OpenState | LockState): void {
    if (st.kind === "open" || st.ranges.length > 0) {
      throw new Nfs4Error(NFS4ERR_LOCKS_HELD, "the stateid still holds");
    }
    this.#dropState(st);
  }

  #dropState(st: OpenState | LockState): void {
    this.#states.delete(st.key);
    st.client.states.delete(st);
    const file = this.#files.get(st.fileKey);
    if (st.kind === "open") {
      file?.opens.delete(st);
    } else {
      file?.locks.delete(st);
      st.open.locks.delete(st);
      const n = (st.client.lockOwners.get(st.lockOwnerKey) ?? 1) - 1;
      if (n <= 0) st.client.lockOwners.delete(st.lockOwnerKey);
      else st.client.lockOwners.set(st.lockOwnerKey, n);
    }
    if (file !== undefined && file.opens.size === 0 && file.locks.size === 0) {
      this.#files.delete(st.fileKey);
    }
  }

  /** Whether anyone else holds a deny of `access` on a file (for anonymous stateids). */
  denied(fileKey: string, access: number): boolean {
    const file = this.#files.get(fileKey);
    if (file === undefined) return false;
    for (const o of file.opens) if ((o.deny & access) !== 0) return true;
    return false;
  }

  // ---- locks ---------------------------------------------------------------------------------

  /** The lock state of a lock owner on an open's file, made on its first LOCK. */
  lockStateFor(
    open: OpenState,
    lockOwner: { clientId: bigint; owner: Uint8Array },
  ): LockState {
    const lockOwnerKey = `${lockOwner.clientId}:${toHex(lockOwner.owner)}`;
    for (const l of open.locks) if (l.lockOwnerKey === lockOwnerKey) return l;
    const client = open.client;
    if (!client.lockOwners.has(lockOwnerKey) && client.lockOwners.size >= this.#lockOwnersMax) {
      throw new Nfs4Error(NFS4ERR_RESOURCE, `${this.#lockOwnersMax} lock owners already`);
    }
    this.#room(client);
    const other = this.#newOther();
    const st: LockState = {
      kind: "lock",
      other,
      key: toHex(other),
      seqid: 0,
      client,
      open,
      lockOwnerKey,
      lockOwner: { clientId: lockOwner.clientId, owner: lockOwner.owner.slice() },
      fileKey: open.fileKey,
      ranges: [],
    };
    this.#states.set(st.key, st);
    client.states.add(st);
    open.locks.add(st);
    this.#fileOf(open.fileKey).locks.add(st);
    client.lockOwners.set(lockOwnerKey, (client.lockOwners.get(lockOwnerKey) ?? 0) + 1);
    return st;
  }

  /** The lock of another owner that a lock of `type` over [start, end) would conflict with. */
  conflict(
    fileKey: string,
    lockOwnerKey: string,
    type: number,
    range: { start: bigint; end: bigint },
  ): LockDenied | null {
    const file = this.#files.get(fileKey);
    if (file === undefined) return null;
    const write = type === WRITE_LT || type === 4;
    for (const l of file.locks) {
      if (l.lockOwnerKey === lockOwnerKey) continue;
      for (const r of l.ranges) {
        if ((write || r.type === WRITE_LT) && overlaps(r, range)) {
          return {
            start: r.start,
            length: r.end === U64_END ? NFS4_LENGTH_TO_EOF : r.end - r.start,
            type: r.type,
            owner: l.lockOwner,
          };
        }
      }
    }
    return null;
  }

  /** LOCK: adds [start, end) of `type` to a lock state (its own overlapping ranges give way). */
  lock(st: LockState, type: number, range: { start: bigint; end: bigint }): void {
    const t = type === WRITE_LT || type === 4 ? WRITE_LT : READ_LT;
    const denied = this.conflict(st.fileKey, st.lockOwnerKey, t, range);
    if (denied !== null) throw new LockDeniedError(denied);
    const kept = subtract(st.ranges, range);
    if (kept.length + 1 > NFS4_LOCK_RANGES_PER_STATEID_MAX) {
      throw new Nfs4Error(NFS4ERR_LOCK_RANGE, "too many byte ranges for one lock owner");
    }
    kept.push({ ...range, type: t });
    kept.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    st.ranges = kept;
    st.seqid = nextSeqid(st.seqid);
  }

  unlock(st: LockState, range: { start: bigint; end: bigint }): void {
    const kept = subtract(st.ranges, range);
    if (kept.length > NFS4_LOCK_RANGES_PER_STATEID_MAX) {
      throw new Nfs4Error(NFS4ERR_LOCK_RANGE, "too many byte ranges for one lock owner");
    }
    st.ranges = kept;
    st.seqid = nextSeqid(st.seqid);
  }
}

/** LOCK or LOCKT refused: the conflicting lock goes back in LOCK4denied. */
export class LockDeniedError extends Nfs4Error {
  constructor(readonly denied: LockDenied) {
    super(NFS4ERR_DENIED, "a conflicting lock");
  }
}

function subtract(ranges: LockRange[], cut: { start: bigint; end: bigint }): LockRange[] {
  const out: LockRange[] = [];
  for (const r of ranges) {
    if (!overlaps(r, cut)) {
      out.push(r);
      continue;
    }
    if (r.start < cut.start) out.push({ start: r.start, end: cut.start, type: r.type });
    if (cut.end < r.end) out.push({ start: cut.end, end: r.end, type: r.type });
  }
  return out;
}

/** Stateid seqids wrap past 0 (0 means "the current one" on the wire). */
function nextSeqid(s: number): number {
  return s >= 0xffff_ffff ? 1 : s + 1;
}
