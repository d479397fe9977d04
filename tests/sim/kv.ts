// The simulated key-value state machine each node applies committed entries to, and the
// command encoding clients propose. Commands carry a globally unique request id; a command
// applied twice (a duplicated forward) takes effect once, as a client session would ensure.

import { assert } from "../../mod/base/mod.ts";

export type KvCommand =
  | { t: "put"; k: string; v: string; r: number }
  | { t: "get"; k: string; r: number }
  | { t: "cas"; k: string; e: string | null; v: string; r: number };

export type KvResult =
  | { kind: "put" }
  | { kind: "get"; value: string | null }
  | { kind: "cas"; ok: boolean };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(command: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

export function decodeCommand(data: Uint8Array): KvCommand {
  const command = JSON.parse(decoder.decode(data)) as KvCommand;
  assert(
    command.t === "put" || command.t === "get" || command.t === "cas",
    "unknown command",
  );
  return command;
}

/** Request ids remembered for de-duplication; a run issues far fewer. */
export const APPLIED_REQUESTS_MAX = 1_000_000;

export class KvStateMachine {
  #data = new Map<string, string>();
  #appliedRequests = new Set<number>();
  /** Index of the last entry applied (or covered by the restored snapshot). */
  applied = 0;

  get(key: string): string | null {
    return this.#data.get(key) ?? null;
  }

  /** Applies one command; null when it was a duplicate and had no effect. */
  apply(command: KvCommand): KvResult | null {
    if (this.#appliedRequests.has(command.r)) return null;
    assert(this.#appliedRequests.size < APPLIED_REQUESTS_MAX, "too many applied requests");
    this.#appliedRequests.add(command.r);
    switch (command.t) {
      case "put":
        this.#data.set(command.k, command.v);
        return { kind: "put" };
      case "get":
        return { kind: "get", value: this.get(command.k) };
      case "cas": {
        const ok = this.get(command.k) === command.e;
        if (ok) this.#data.set(command.k, command.v);
        return { kind: "cas", ok };
      }
    }
  }

  snapshot(): Uint8Array {
    const data = [...this.#data.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    const requests = [...this.#appliedRequests].sort((a, b) => a - b);
    return encoder.encode(JSON.stringify({ data, requests }));
  }

  restore(snapshot: Uint8Array, index: number): void {
    this.#data = new Map();
    this.#appliedRequests = new Set();
    if (snapshot.length > 0) {
      const parsed = JSON.parse(decoder.decode(snapshot)) as {
        data: [string, string][];
        requests: number[];
      };
      this.#data = new Map(parsed.data);
      this.#appliedRequests = new Set(parsed.requests);
    }
    this.applied = index;
  }

  /** A compact fingerprint of the whole state, equal on nodes that applied the same log. */
  digest(): string {
    let s = `${this.#appliedRequests.size}`;
    for (const key of [...this.#data.keys()].sort()) s += `|${key}=${this.#data.get(key)}`;
    return s;
  }
}
