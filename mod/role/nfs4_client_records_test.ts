import assert from "node:assert/strict";
import { FileClientRecords } from "./nfs4_client_records.ts";
import { clientRecordOf } from "../nfs/nfs4_state.ts";

Deno.test("FileClientRecords keeps digests of owner ids across instances, never the ids", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-nfs4-records-" });
  try {
    const path = `${dir}/nfs4-clients`;
    const first = new FileClientRecords(path);
    assert.deepEqual(await first.load(), []);
    const a = clientRecordOf(new TextEncoder().encode("Linux NFSv4.2 host-a"));
    const b = clientRecordOf(new TextEncoder().encode("Linux NFSv4.2 host-b"));
    await Promise.all([first.save(a), first.save(b)]);
    await first.remove(a);
    const second = new FileClientRecords(path);
    assert.deepEqual(await second.load(), [b]);
    const text = await Deno.readTextFile(path);
    assert.doesNotMatch(text, /host-/);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    // Lines that are not records are ignored, not trusted.
    await Deno.writeTextFile(path, `garbage\n${a}\n`);
    assert.deepEqual(await new FileClientRecords(path).load(), [a]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
