// Compact, human-readable renderings of entries, messages and Readies for traces and logs,
// in the shape etcd's raft uses (`1->2 MsgApp Term:1 Log:1/3 Commit:3 Entries:[...]`).

import { toHex } from "../base/mod.ts";
import { decodeConfChange } from "./conf_change.ts";
import type {
  ConfState,
  Entry,
  HardState,
  Message,
  MessageType,
  ProgressStatus,
  Ready,
  Snapshot,
} from "./types.ts";

export const MESSAGE_TYPE_NAMES: Record<MessageType, string> = {
  append: "MsgApp",
  append_resp: "MsgAppResp",
  vote: "MsgVote",
  vote_resp: "MsgVoteResp",
  prevote: "MsgPreVote",
  prevote_resp: "MsgPreVoteResp",
  heartbeat: "MsgHeartbeat",
  heartbeat_resp: "MsgHeartbeatResp",
  snapshot: "MsgSnap",
  timeout_now: "MsgTimeoutNow",
  read_index: "MsgReadIndex",
  read_index_resp: "MsgReadIndexResp",
  propose: "MsgProp",
};

/** Bytes as a quoted string when printable ASCII, else as hex. */
export function describeBytes(bytes: Uint8Array): string {
  let printable = true;
  for (const byte of bytes) {
    if (byte < 0x20 || byte > 0x7e || byte === 0x22 || byte === 0x5c) {
      printable = false;
      break;
    }
  }
  if (printable) return `"${String.fromCharCode(...bytes)}"`;
  return `0x${toHex(bytes)}`;
}

export function describeIds(ids: readonly number[]): string {
  return `(${ids.join(",")})`;
}

export function describeConfState(conf: ConfState): string {
  return `voters=${describeIds(conf.voters)} learners=${describeIds(conf.learners)}`;
}

export function describeEntry(entry: Entry): string {
  if (entry.type === "conf_change") {
    try {
      const change = decodeConfChange(entry.data);
      return `${entry.term}/${entry.index} EntryConfChange ${change.type} ${change.nodeId}`;
    } catch {
      return `${entry.term}/${entry.index} EntryConfChange ${describeBytes(entry.data)}`;
    }
  }
  return `${entry.term}/${entry.index} EntryNormal ${describeBytes(entry.data)}`;
}

export function describeSnapshot(snapshot: Snapshot): string {
  const meta = snapshot.meta;
  return `Index:${meta.index} Term:${meta.term} ${describeConfState(meta.conf)}`;
}

export function describeHardState(state: HardState): string {
  return `Term:${state.term} Vote:${state.vote} Commit:${state.commit}`;
}

export function describeMessage(m: Message): string {
  let out = `${m.from}->${m.to} ${MESSAGE_TYPE_NAMES[m.type]} Term:${m.term} ` +
    `Log:${m.logTerm}/${m.index}`;
  if (m.reject) out += ` Rejected (Hint: ${m.rejectHint})`;
  if (m.commit !== 0) out += ` Commit:${m.commit}`;
  if (m.entries.length > 0) out += ` Entries:[${m.entries.map(describeEntry).join(", ")}]`;
  if (m.context.byteLength > 0) out += ` Context:${describeBytes(m.context)}`;
  if (m.snapshot !== null) out += ` Snapshot:[${describeSnapshot(m.snapshot)}]`;
  return out;
}

/** The lines of a Ready, in the order the host handles it. */
export function describeReady(ready: Ready): string[] {
  const lines = ["Ready:"];
  if (ready.softState !== null) {
    lines.push(`Lead:${ready.softState.lead} Role:${ready.softState.role}`);
  }
  if (ready.hardState !== null) lines.push(`HardState ${describeHardState(ready.hardState)}`);
  if (ready.snapshot !== null) lines.push(`Snapshot ${describeSnapshot(ready.snapshot)}`);
  if (ready.entries.length > 0) {
    lines.push("Entries:");
    for (const entry of ready.entries) lines.push(describeEntry(entry));
  }
  if (ready.committedEntries.length > 0) {
    lines.push("CommittedEntries:");
    for (const entry of ready.committedEntries) lines.push(describeEntry(entry));
  }
  if (ready.messages.length > 0) {
    lines.push("Messages:");
    for (const m of ready.messages) lines.push(describeMessage(m));
  }
  if (ready.readStates.length > 0) {
    lines.push("ReadStates:");
    for (const rs of ready.readStates) {
      lines.push(`Index:${rs.index} Context:${describeBytes(rs.context)}`);
    }
  }
  return lines;
}

export function describeProgress(id: number, pr: ProgressStatus): string {
  let out = `${id}: ${pr.state} match=${pr.match} next=${pr.next}`;
  if (pr.isLearner) out += " learner";
  if (!pr.recentActive) out += " inactive";
  return out;
}
