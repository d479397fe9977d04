import assert from "node:assert/strict";
import * as abi from "./abi.ts";

const attr: abi.Attr = {
  ino: 0x0102030405060708n,
  size: 1234,
  blocks: 3,
  atimeMs: 1_500_000_000_250,
  mtimeMs: 1_600_000_000_500,
  ctimeMs: 1_700_000_000_999,
  mode: abi.S_IFDIR | 0o755,
  nlink: 2,
  uid: 1000,
  gid: 100,
  blksize: 4096,
};

Deno.test("entryOut() lays fuse_entry_out and fuse_attr out as the kernel header does", () => {
  const b = abi.entryOut(42n, 0n, attr, { entryMs: 1500, attrMs: 250 });
  assert.equal(b.length, 128);
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(0, true), 42n);
  assert.equal(v.getBigUint64(16, true), 1n, "entry_valid seconds");
  assert.equal(v.getBigUint64(24, true), 0n, "attr_valid seconds");
  assert.equal(v.getUint32(32, true), 500_000_000, "entry_valid_nsec");
  assert.equal(v.getUint32(36, true), 250_000_000, "attr_valid_nsec");
  const a = 40;
  assert.equal(v.getBigUint64(a, true), attr.ino);
  assert.equal(v.getBigUint64(a + 8, true), 1234n);
  assert.equal(v.getBigUint64(a + 24, true), 1_500_000_000n, "atime");
  assert.equal(v.getBigUint64(a + 32, true), 1_600_000_000n, "mtime");
  assert.equal(v.getUint32(a + 48, true), 250_000_000, "atimensec");
  assert.equal(v.getUint32(a + 56, true), 999_000_000, "ctimensec");
  assert.equal(v.getUint32(a + 60, true), abi.S_IFDIR | 0o755, "mode");
  assert.equal(v.getUint32(a + 64, true), 2, "nlink");
  assert.equal(v.getUint32(a + 68, true), 1000, "uid");
  assert.equal(v.getUint32(a + 80, true), 4096, "blksize");
});

Deno.test("attrOut(), initOut() and statfsOut() have the kernel's sizes", () => {
  assert.equal(abi.attrOut(attr, 1000).length, 104);
  assert.equal(
    abi.initOut({
      minor: 31,
      maxReadahead: 1,
      flags: 0,
      maxBackground: 1,
      congestionThreshold: 1,
      maxWrite: 1 << 20,
      timeGranNs: 1,
      maxPages: 256,
    }).length,
    64,
  );
  const s = abi.statfsOut({
    blocks: 10,
    bfree: 5,
    bavail: 4,
    files: 3,
    ffree: 2,
    bsize: 4096,
    namelen: 255,
    frsize: 4096,
  });
  assert.equal(s.length, 80);
  assert.equal(new DataView(s.buffer).getUint32(44, true), 255);
});

Deno.test("writeDirent() pads each entry to 8 bytes, direntplus after a zero entry_out", () => {
  const w = new abi.OutWriter(1024);
  const name = new TextEncoder().encode("abc");
  abi.writeDirent(w, 5n, 1n, abi.DT_REG, name);
  assert.equal(w.length, 32);
  assert.equal(abi.direntBytes(3, false), 32);
  abi.writeDirent(w, 6n, 2n, abi.DT_DIR, name, null);
  assert.equal(w.length, 32 + abi.direntBytes(3, true));
  const v = new DataView(w.bytes.buffer);
  assert.equal(v.getBigUint64(32, true), 0n, "no nodeid for the kernel");
  assert.equal(v.getBigUint64(32 + 128, true), 6n, "ino after the entry_out");
});

Deno.test("InReader refuses a short body and a name without NUL with AbiError", () => {
  assert.throws(() => new abi.InReader(new Uint8Array(3)).u32(), abi.AbiError);
  assert.throws(() => new abi.InReader(new Uint8Array([65, 66])).cstring(), abi.AbiError);
  const r = new abi.InReader(new Uint8Array([104, 105, 0, 1, 0, 0, 0]));
  assert.equal(r.cstring(), "hi");
  assert.equal(r.u32(), 1);
  const big = new abi.OutWriter(8).u64(2n ** 60n).done();
  assert.throws(() => new abi.InReader(big).u64n(), abi.AbiError);
});
