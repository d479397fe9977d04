// A small world for data-driven Raft tests: nodes over MemoryRaftLogStores, a network that
// holds messages until a command delivers or drops them, and commands that print what each
// step did (Readies, messages, role changes). Deterministic: randomness is a per-node knob.
//
// Commands (ids are node ids; several commands may share one block):
//   add-nodes N [voters=(1,2,3)] [learners=(4)] [index=I] [prevote=true] [checkquorum=true]
//             [max-inflight=N] [max-size-per-msg=B] [max-uncommitted-size=B]
//             [election-tick=T] [heartbeat-tick=T]   next N ids; index>0 bootstraps from a
//                                                  snapshot at I (term 1) holding the conf
//   campaign ID | propose ID DATA | propose-conf-change ID add_voter|add_learner|remove_node N
//   read-index ID CTX | transfer-leadership from=ID to=ID
//   tick ID [N] | tick-election ID | tick-heartbeat ID | set-jitter ID N (randomInt's answer)
//   process-ready ID... | deliver-msgs ID... [from=ID] [type=MsgApp] | drop-msgs [from=] [to=]
//             [type=] | stabilize [ID...] (Readies and deliveries until quiet)
//   isolate ID | heal (messages to or from isolated nodes are dropped on delivery)
//   compact ID INDEX (snapshot at INDEX <= applied, then compaction) | restart ID
//   report-unreachable ID PEER | report-snapshot ID PEER finish|failure
//   status ID | raft-log ID (the durable log) | raft-state | log-level none|info

import { assert } from "../../base/mod.ts";
import { decodeConfChange } from "../conf_change.ts";
import { MemoryRaftLogStore } from "../memory_storage.ts";
import { createRaftNode } from "../raw_node.ts";
import { NONE, ProposalDroppedError } from "../types.ts";
import type {
  ConfChangeType,
  ConfState,
  Message,
  NodeId,
  RaftConfig,
  RaftNode,
  RaftRole,
  Snapshot,
} from "../types.ts";
import type { Command, TestBlock } from "./datadriven.ts";
import {
  describeConfState,
  describeEntry,
  describeMessage,
  describeProgress,
  describeReady,
  MESSAGE_TYPE_NAMES,
} from "../describe.ts";

/** Upper bound on rounds of one `stabilize` (a livelock fails the test instead of hanging). */
export const STABILIZE_ROUNDS_MAX = 1000;

const encoder = new TextEncoder();

interface EnvNode {
  id: NodeId;
  node: RaftNode;
  store: MemoryRaftLogStore;
  config: RaftConfig;
  /** Index the (simulated) state machine has applied. */
  applied: number;
  /** Membership as of each applied index where it changed, oldest first. */
  confHistory: { index: number; conf: ConfState }[];
  /** What randomInt returns (clamped to its range): shifts this node's election timeout. */
  jitter: number;
}

interface Observed {
  role: RaftRole;
  term: number;
  leadTransferee: NodeId;
}

function parseIds(text: string | undefined): NodeId[] {
  if (text === undefined) return [];
  const inner = text.replace(/^\(/, "").replace(/\)$/, "").trim();
  if (inner === "") return [];
  return inner.split(",").map((s) => parseId(s.trim()));
}

function parseId(text: string | undefined): NodeId {
  const id = Number(text);
  if (!Number.isSafeInteger(id) || id <= 0) throw new Error(`bad node id: ${text}`);
  return id;
}

function parseCount(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad number: ${text}`);
  return n;
}

function parseBool(text: string | undefined): boolean {
  return text === "true";
}

function messageTypeByName(name: string): Message["type"] {
  for (const [type, typeName] of Object.entries(MESSAGE_TYPE_NAMES)) {
    if (typeName === name || type === name) return type as Message["type"];
  }
  throw new Error(`unknown message type: ${name}`);
}

export class InteractionEnv {
  readonly #nodes = new Map<NodeId, EnvNode>();
  /** Messages sent and not yet delivered or dropped, in send order. */
  #network: Message[] = [];
  readonly #isolated = new Set<NodeId>();
  /** `log-level none` silences command output (setup steps); `log-level info` restores it. */
  #quiet = false;

  /** Runs a block's commands; returns their combined output ("ok" when silent). */
  runBlock(block: TestBlock): string {
    const out: string[] = [];
    for (const command of block.commands) {
      const commandOut: string[] = [];
      try {
        this.#handle(command, commandOut);
      } catch (error) {
        throw new Error(`line ${command.line}: ${command.raw}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      if (!this.#quiet) out.push(...commandOut);
    }
    return out.length === 0 ? "ok" : out.join("\n");
  }

  #handle(c: Command, out: string[]): void {
    switch (c.name) {
      case "log-level":
        this.#quiet = c.positional[0] === "none";
        return;
      case "add-nodes":
        return this.#addNodes(c, out);
      case "campaign": {
        const n = this.#node(c.positional[0]);
        return this.#observe(n, out, () => n.node.campaign());
      }
      case "propose": {
        const n = this.#node(c.positional[0]);
        const data = encoder.encode(c.positional[1] ?? "");
        return this.#observe(n, out, () => this.#dropping(n, out, () => n.node.propose(data)));
      }
      case "propose-conf-change": {
        const n = this.#node(c.positional[0]);
        const type = c.positional[1] as ConfChangeType;
        if (!["add_voter", "add_learner", "remove_node"].includes(type)) {
          throw new Error(`unknown conf change type: ${type}`);
        }
        const nodeId = parseId(c.positional[2]);
        const change = { type, nodeId, context: new Uint8Array(0) };
        return this.#observe(
          n,
          out,
          () => this.#dropping(n, out, () => n.node.proposeConfChange(change)),
        );
      }
      case "tick":
      case "tick-election":
      case "tick-heartbeat": {
        const n = this.#node(c.positional[0]);
        const ticks = c.name === "tick"
          ? parseCount(c.positional[1], 1)
          : c.name === "tick-election"
          ? n.config.electionTick
          : n.config.heartbeatTick;
        return this.#observe(n, out, () => {
          for (let i = 0; i < ticks; i++) n.node.tick();
        });
      }
      case "process-ready": {
        const ids = c.positional.map(parseId);
        for (const id of ids) {
          const n = this.#node(String(id));
          if (ids.length === 1) {
            this.#processReady(n, out);
          } else {
            out.push(`> ${id} handling Ready`);
            const inner: string[] = [];
            this.#processReady(n, inner);
            out.push(...inner.map((l) => `  ${l}`));
          }
        }
        return;
      }
      case "deliver-msgs": {
        const ids = c.positional.map(parseId);
        const from = c.keyed.has("from") ? parseId(c.keyed.get("from")) : null;
        const type = c.keyed.has("type") ? messageTypeByName(c.keyed.get("type")!) : null;
        for (const id of ids) {
          this.#deliver(
            this.#node(String(id)),
            out,
            (m) => (from === null || m.from === from) && (type === null || m.type === type),
          );
        }
        return;
      }
      case "drop-msgs": {
        const from = c.keyed.has("from") ? parseId(c.keyed.get("from")) : null;
        const to = c.keyed.has("to") ? parseId(c.keyed.get("to")) : null;
        const type = c.keyed.has("type") ? messageTypeByName(c.keyed.get("type")!) : null;
        const kept: Message[] = [];
        for (const m of this.#network) {
          if (
            (from === null || m.from === from) && (to === null || m.to === to) &&
            (type === null || m.type === type)
          ) {
            out.push(`dropped: ${describeMessage(m)}`);
          } else {
            kept.push(m);
          }
        }
        this.#network = kept;
        return;
      }
      case "stabilize":
        return this.#stabilize(c.positional.map(parseId), out);
      case "isolate":
        this.#isolated.add(this.#node(c.positional[0]).id);
        return;
      case "heal":
        this.#isolated.clear();
        return;
      case "transfer-leadership": {
        const n = this.#node(c.keyed.get("from"));
        const to = parseId(c.keyed.get("to"));
        return this.#observe(n, out, () => n.node.transferLeadership(to));
      }
      case "read-index": {
        const n = this.#node(c.positional[0]);
        const context = encoder.encode(c.positional[1] ?? "");
        return this.#observe(n, out, () => this.#dropping(n, out, () => n.node.readIndex(context)));
      }
      case "compact":
        return this.#compact(this.#node(c.positional[0]), parseCount(c.positional[1], 0));
      case "status":
        return this.#status(this.#node(c.positional[0]), out);
      case "raft-log":
        return this.#raftLog(this.#node(c.positional[0]), out);
      case "raft-state":
        for (const n of this.#sortedNodes()) {
          const s = n.node.status();
          const isolated = this.#isolated.has(n.id) ? " isolated" : "";
          out.push(`${n.id}: ${s.role} term=${s.term} lead=${s.lead}${isolated}`);
        }
        return;
      case "report-unreachable": {
        const n = this.#node(c.positional[0]);
        return this.#observe(n, out, () => n.node.reportUnreachable(parseId(c.positional[1])));
      }
      case "report-snapshot": {
        const n = this.#node(c.positional[0]);
        const status = c.positional[2] === "failure" ? "failure" : "finish";
        return this.#observe(
          n,
          out,
          () => n.node.reportSnapshot(parseId(c.positional[1]), status),
        );
      }
      case "restart":
        return this.#restart(this.#node(c.positional[0]), out);
      case "set-jitter":
        this.#node(c.positional[0]).jitter = parseCount(c.positional[1], 0);
        return;
      default:
        throw new Error(`unknown command ${c.name}`);
    }
  }

  #node(idText: string | undefined): EnvNode {
    const id = parseId(idText);
    const n = this.#nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  #sortedNodes(): EnvNode[] {
    return [...this.#nodes.values()].sort((a, b) => a.id - b.id);
  }

  #addNodes(c: Command, out: string[]): void {
    const count = parseCount(c.positional[0], 1);
    const conf: ConfState = {
      voters: parseIds(c.keyed.get("voters")),
      learners: parseIds(c.keyed.get("learners")),
    };
    const index = parseCount(c.keyed.get("index"), 0);
    let nextId = Math.max(0, ...this.#nodes.keys()) + 1;
    for (let i = 0; i < count; i++) {
      const id = nextId++;
      // A group bootstrapped at `index` starts from a snapshot there, taken in term 1.
      const snapshot: Snapshot = index > 0
        ? { meta: { index, term: 1, conf }, data: encoder.encode(`state@${index}`) }
        : { meta: { index: 0, term: 0, conf }, data: new Uint8Array(0) };
      const store = new MemoryRaftLogStore({
        snapshot,
        hardState: { term: snapshot.meta.term, vote: NONE, commit: index },
      });
      const envNode: EnvNode = {
        id,
        node: undefined as unknown as RaftNode,
        store,
        config: undefined as unknown as RaftConfig,
        applied: index,
        confHistory: [{ index, conf }],
        jitter: 0,
      };
      envNode.config = {
        id,
        electionTick: parseCount(c.keyed.get("election-tick"), 10),
        heartbeatTick: parseCount(c.keyed.get("heartbeat-tick"), 1),
        storage: store,
        applied: index,
        maxSizePerMsgBytes: parseCount(c.keyed.get("max-size-per-msg"), 1024 * 1024),
        maxInflightMsgs: parseCount(c.keyed.get("max-inflight"), 256),
        maxUncommittedEntriesBytes: parseCount(c.keyed.get("max-uncommitted-size"), 0),
        preVote: parseBool(c.keyed.get("prevote")),
        checkQuorum: parseBool(c.keyed.get("checkquorum")),
        randomInt: (n: number) => Math.min(envNode.jitter, n - 1),
      };
      envNode.node = createRaftNode(envNode.config);
      this.#nodes.set(id, envNode);
      out.push(this.#describeStart(envNode));
    }
  }

  #describeStart(n: EnvNode): string {
    const s = n.node.status();
    return `INFO ${n.id} started: term=${s.term} commit=${s.commit} applied=${s.applied} ` +
      `first=${n.store.firstIndex()} last=${n.store.lastIndex()} ${describeConfState(s.conf)}`;
  }

  #restart(n: EnvNode, out: string[]): void {
    // The state machine is durable at `applied`; the log keeps what persist() covered.
    n.store = n.store.cloneDurable();
    n.config = { ...n.config, storage: n.store, applied: n.applied };
    n.node = createRaftNode(n.config);
    out.push(this.#describeStart(n));
  }

  /** Runs `action` on a node and prints the role, term and transfer changes it caused. */
  #observe(n: EnvNode, out: string[], action: () => void): void {
    const before = this.#observed(n);
    action();
    const after = this.#observed(n);
    if (before.role !== after.role || before.term !== after.term) {
      out.push(`INFO ${n.id} became ${after.role} at term ${after.term}`);
    }
    if (before.leadTransferee !== after.leadTransferee) {
      if (after.leadTransferee !== NONE) {
        out.push(`INFO ${n.id} transferring leadership to ${after.leadTransferee}`);
      } else if (after.role === "leader" && before.term === after.term) {
        out.push(`INFO ${n.id} aborted leadership transfer to ${before.leadTransferee}`);
      }
    }
  }

  #observed(n: EnvNode): Observed {
    const s = n.node.status();
    return { role: s.role, term: s.term, leadTransferee: s.leadTransferee };
  }

  #dropping(n: EnvNode, out: string[], action: () => void): void {
    try {
      action();
    } catch (error) {
      if (!(error instanceof ProposalDroppedError)) throw error;
      out.push(`INFO ${n.id} dropped: ${error.message}`);
    }
  }

  /** The host's side of one Ready cycle: persist, send, apply, advance. */
  #processReady(n: EnvNode, out: string[]): void {
    if (!n.node.hasReady()) {
      out.push("no Ready");
      return;
    }
    const ready = n.node.ready();
    out.push(...describeReady(ready));
    if (ready.snapshot !== null) {
      n.store.applySnapshot(ready.snapshot);
      n.applied = ready.snapshot.meta.index;
      n.confHistory.push({ index: n.applied, conf: ready.snapshot.meta.conf });
    }
    n.store.append(ready.entries);
    if (ready.hardState !== null) n.store.setHardState(ready.hardState);
    void n.store.persist();
    this.#network.push(...ready.messages);
    for (const entry of ready.committedEntries) {
      if (entry.type === "conf_change") {
        const change = decodeConfChange(entry.data);
        this.#observe(n, out, () => {
          const conf = n.node.applyConfChange(change);
          n.confHistory.push({ index: entry.index, conf });
          out.push(
            `INFO ${n.id} applied ${change.type} ${change.nodeId}: ${describeConfState(conf)}`,
          );
        });
      }
      n.applied = entry.index;
    }
    this.#observe(n, out, () => n.node.advance(ready));
  }

  /** Delivers every in-flight message to `n` that `filter` accepts, in send order. */
  #deliver(n: EnvNode, out: string[], filter: (m: Message) => boolean): boolean {
    const mine: Message[] = [];
    const rest: Message[] = [];
    for (const m of this.#network) (m.to === n.id && filter(m) ? mine : rest).push(m);
    this.#network = rest;
    for (const m of mine) {
      if (this.#isolated.has(m.from) || this.#isolated.has(m.to)) {
        out.push(`${describeMessage(m)} [dropped: isolated]`);
        continue;
      }
      out.push(describeMessage(m));
      this.#observe(n, out, () => n.node.step(m));
    }
    return mine.length > 0;
  }

  /** Handles Readies and delivers messages among `ids` (default: all) until nothing moves. */
  #stabilize(ids: NodeId[], out: string[]): void {
    const nodes = ids.length === 0 ? this.#sortedNodes() : ids.map((id) => this.#node(String(id)));
    for (let round = 0; round < STABILIZE_ROUNDS_MAX; round++) {
      let quiet = true;
      for (const n of nodes) {
        if (!n.node.hasReady()) continue;
        quiet = false;
        out.push(`> ${n.id} handling Ready`);
        const inner: string[] = [];
        this.#processReady(n, inner);
        out.push(...inner.map((l) => `  ${l}`));
      }
      for (const n of nodes) {
        if (!this.#network.some((m) => m.to === n.id)) continue;
        quiet = false;
        out.push(`> ${n.id} receiving messages`);
        const inner: string[] = [];
        this.#deliver(n, inner, () => true);
        out.push(...inner.map((l) => `  ${l}`));
      }
      if (quiet) return;
    }
    assert(false, `stabilize did not settle within ${STABILIZE_ROUNDS_MAX} rounds`);
  }

  #compact(n: EnvNode, index: number): void {
    if (index > n.applied) throw new Error(`cannot compact ${index} past applied ${n.applied}`);
    let conf = n.confHistory[0].conf;
    for (const h of n.confHistory) if (h.index <= index) conf = h.conf;
    n.store.createSnapshot(index, conf, encoder.encode(`state@${index}`));
    n.store.compact(index);
    void n.store.persist();
  }

  #status(n: EnvNode, out: string[]): void {
    const s = n.node.status();
    let line = `${n.id}: ${s.role} term=${s.term} vote=${s.vote} lead=${s.lead} ` +
      `commit=${s.commit} applied=${s.applied} ${describeConfState(s.conf)}`;
    if (s.leadTransferee !== NONE) line += ` transferee=${s.leadTransferee}`;
    out.push(line);
    if (s.progress !== null) {
      for (const [id, pr] of s.progress) out.push(`  ${describeProgress(id, pr)}`);
    }
  }

  #raftLog(n: EnvNode, out: string[]): void {
    const first = n.store.firstIndex();
    const last = n.store.lastIndex();
    if (last < first) {
      out.push(`log is empty: first index=${first}, last index=${last}`);
      return;
    }
    for (const entry of n.store.entries(first, last + 1, Number.MAX_SAFE_INTEGER)) {
      out.push(describeEntry(entry));
    }
  }
}
