// NFSv4 client records of a node, kept under the data directory so that clients holding opens
// and locks may reclaim them after a restart. A record is a digest of a client's owner id,
// never the id itself: nothing a client named is on disk. Node-local: a client that moves to
// another node after a restart starts afresh there (its old opens were this node's anyway).

import { NFS4_CLIENTS_MAX } from "../nfs/nfs4_state.ts";
import type { ClientRecordStore } from "../nfs/nfs4_state.ts";

const RECORD = /^[0-9a-f]{64}$/;

export class FileClientRecords implements ClientRecordStore {
  readonly #path: string;
  #records: Set<string> | null = null;
  #writing: Promise<void> = Promise.resolve();

  constructor(path: string) {
    this.#path = path;
  }

  async load(): Promise<string[]> {
    let text = "";
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const records = text.split("\n").filter((l) => RECORD.test(l)).slice(0, NFS4_CLIENTS_MAX * 2);
    this.#records = new Set(records);
    return records;
  }

  save(record: string): Promise<void> {
    return this.#change(() => this.#records!.add(record));
  }

  remove(record: string): Promise<void> {
    return this.#change(() => this.#records!.delete(record));
  }

  /** Writes the whole set anew (temp file, fsync, rename), one change after another. */
  #change(apply: () => void): Promise<void> {
    const run = async () => {
      if (this.#records === null) await this.load();
      apply();
      // Oldest first out: expired clients are removed as they go, so this only bounds abuse.
      while (this.#records!.size > NFS4_CLIENTS_MAX * 2) {
        this.#records!.delete(this.#records!.values().next().value!);
      }
      const tmp = `${this.#path}.tmp`;
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        await file.write(new TextEncoder().encode([...this.#records!].join("\n") + "\n"));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, this.#path);
    };
    this.#writing = this.#writing.then(run, run);
    return this.#writing;
  }
}
