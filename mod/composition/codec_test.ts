import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { ByteWriter, utf8 } from "./bytes.ts";
import {
  decodePayload,
  encodePayload,
  partsDigest,
  type Payload,
  PAYLOAD_OPS,
  PAYLOAD_PLAINTEXT_BYTES_MAX,
  PAYLOAD_TYPES,
  payloadChunkIds,
  PayloadFormatError,
  type PayloadType,
} from "./codec.ts";
import {
  type ChunkRef,
  type Content,
  INLINE_BYTES_MAX,
  METADATA_BYTES_MAX,
  PART_NUMBER_MAX,
  PUT_CHUNK_REFS_MAX,
  PUT_PART_SIZES_MAX,
} from "./composition.ts";

const ALPHABET = ["a", "b", "/", "-", ".", "é", "日", "😀", "Z", "0"];

function text(prng: Prng, min: number, max: number): string {
  let s = "";
  const n = min + prng.nextInt(max - min + 1);
  for (let i = 0; i < n; i++) s += ALPHABET[prng.nextInt(ALPHABET.length)];
  return s;
}

function refs(prng: Prng, count: number, sparse: boolean): { refs: ChunkRef[]; size: number } {
  const out: ChunkRef[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (sparse) at += prng.nextInt(3) * 100;
    const lengthBytes = 1 + prng.nextInt(1 << 20);
    out.push({ chunkId: prng.bytes(32), offsetBytes: at, lengthBytes });
    at += lengthBytes;
  }
  return { refs: out, size: at + (sparse ? prng.nextInt(50) : 0) };
}

function content(prng: Prng, sparse: boolean): { content: Content; size: number } {
  if (prng.nextInt(2) === 0) {
    const bytes = prng.bytes(prng.nextInt(64));
    return {
      content: { kind: "inline", bytes },
      size: bytes.length + (sparse ? prng.nextInt(9) : 0),
    };
  }
  const r = refs(prng, prng.nextInt(5), sparse);
  return { content: { kind: "chunks", chunkRefs: r.refs }, size: r.size };
}

function metadata(prng: Prng): Record<string, string> {
  const m: Record<string, string> = {};
  for (let i = prng.nextInt(4); i > 0; i--) m[text(prng, 1, 6)] = text(prng, 0, 8);
  return m;
}

/** `size` cut into 1..`countMax` parts (some may be empty), in order. */
function partSizesOf(prng: Prng, size: number, countMax: number): number[] {
  const count = 1 + prng.nextInt(countMax);
  const cuts = Array.from({ length: count - 1 }, () => prng.nextInt(size + 1)).sort((a, b) =>
    a - b
  );
  return [...cuts, size].map((cut, i) => cut - (i === 0 ? 0 : cuts[i - 1]!));
}

const TYPES = Object.keys(PAYLOAD_TYPES) as PayloadType[];

/** A valid payload of every shape the encoder accepts. */
export function randomPayload(prng: Prng, type = TYPES[prng.nextInt(TYPES.length)]!): Payload {
  const base = { token: prng.bytes(16), namespaceId: prng.bytes(16) };
  const inode = () => 1 + prng.nextInt(1000);
  const name = () => "n" + text(prng, 0, 8).replaceAll("/", "_");
  const time = () => ({ sec: prng.nextInt(2 ** 31), nsec: prng.nextInt(1_000_000_000) });
  switch (type) {
    case "namespace_create":
      return {
        ...base,
        type,
        name: "ns-" + prng.nextInt(1000),
        kind: prng.nextInt(2) ? "bucket" : "posix",
        rootMode: prng.nextInt(0o7777 + 1),
        rootUid: prng.nextU32(),
        rootGid: prng.nextU32(),
      };
    case "namespace_delete":
      return { ...base, type };
    case "object_put": {
      const c = content(prng, false);
      const kinds = [
        { kind: "none" },
        { kind: "absent" },
        { kind: "version", version: 1 + prng.nextInt(99) },
      ] as const;
      const put: Payload = {
        ...base,
        type,
        key: text(prng, 1, 20),
        size: c.size,
        contentType: text(prng, 0, 10),
        metadata: metadata(prng),
        etag: text(prng, 0, 12),
        content: c.content,
        condition: kinds[prng.nextInt(3)]!,
      };
      if (prng.nextInt(2) === 0) put.partSizes = partSizesOf(prng, c.size, 4);
      return put;
    }
    case "object_delete":
      return { ...base, type, key: text(prng, 1, 20) };
    case "upload_start":
      return {
        ...base,
        type,
        key: text(prng, 1, 20),
        contentType: text(prng, 0, 10),
        metadata: metadata(prng),
      };
    case "upload_part": {
      const r = refs(prng, prng.nextInt(4), false);
      return {
        ...base,
        type,
        key: text(prng, 1, 20),
        uploadId: prng.bytes(16),
        partNumber: 1 + prng.nextInt(10_000),
        size: r.size,
        etag: text(prng, 0, 12),
        chunkRefs: r.refs,
      };
    }
    case "upload_complete": {
      const complete: Payload = {
        ...base,
        type,
        key: text(prng, 1, 20),
        uploadId: prng.bytes(16),
        partNumbers: Array.from({ length: 1 + prng.nextInt(5) }, () => 1 + prng.nextInt(10_000)),
        partsDigest: prng.bytes(32),
        partBytesMin: prng.nextInt(10 << 20),
        etag: text(prng, 0, 12),
      };
      const layout = prng.nextInt(3);
      if (layout === 1) complete.partSizes = "listed";
      if (layout === 2) complete.partSizes = partSizesOf(prng, prng.nextInt(1 << 30), 4);
      return complete;
    }
    case "upload_abort":
      return { ...base, type, key: text(prng, 1, 20), uploadId: prng.bytes(16) };
    case "posix_mkdir":
    case "posix_create":
      return {
        ...base,
        type,
        parent: inode(),
        name: name(),
        mode: prng.nextInt(0o7777 + 1),
        uid: prng.nextU32(),
        gid: prng.nextU32(),
      };
    case "posix_symlink":
      return {
        ...base,
        type,
        parent: inode(),
        name: name(),
        target: text(prng, 1, 30),
        uid: prng.nextU32(),
        gid: prng.nextU32(),
      };
    case "posix_link":
      return { ...base, type, inode: inode(), parent: inode(), name: name() };
    case "posix_unlink":
    case "posix_rmdir":
      return { ...base, type, parent: inode(), name: name() };
    case "posix_rename":
      return {
        ...base,
        type,
        parent: inode(),
        name: name(),
        newParent: inode(),
        newName: name(),
      };
    case "posix_setattr": {
      const attributes: Record<string, unknown> = {};
      if (prng.nextInt(2)) attributes.mode = prng.nextInt(0o7777 + 1);
      if (prng.nextInt(2)) attributes.uid = prng.nextU32();
      if (prng.nextInt(2)) attributes.gid = prng.nextU32();
      if (prng.nextInt(2)) attributes.size = prng.nextInt(2 ** 32) * 256;
      const pick = prng.nextInt(3);
      if (pick === 1) attributes.atime = time();
      if (pick === 2) attributes.atime = "now";
      const pick2 = prng.nextInt(3);
      if (pick2 === 1) attributes.mtime = time();
      if (pick2 === 2) attributes.mtime = "now";
      return { ...base, type, inode: inode(), attributes };
    }
    case "posix_write": {
      const c = content(prng, true);
      return { ...base, type, inode: inode(), size: c.size, content: c.content };
    }
  }
}

function roundTrip(p: Payload): Payload {
  return decodePayload(encodePayload(p), payloadChunkIds(p));
}

Deno.test("decodePayload() returns what encodePayload() was given, for every type", () => {
  const prng = new Prng(11);
  for (const type of TYPES) {
    for (let i = 0; i < 50; i++) {
      const p = randomPayload(prng, type);
      assert.deepEqual(roundTrip(p), p, type);
    }
  }
});

Deno.test("encodePayload() is canonical: metadata order does not change the bytes", () => {
  const prng = new Prng(3);
  const p = randomPayload(prng, "upload_start") as Extract<Payload, { type: "upload_start" }>;
  const a = encodePayload({ ...p, metadata: { b: "2", a: "1", c: "3" } });
  const b = encodePayload({ ...p, metadata: { c: "3", a: "1", b: "2" } });
  assert.deepEqual(a, b);
});

Deno.test("PAYLOAD_OPS gives every payload type a delta operation", () => {
  for (const type of TYPES) assert.ok(PAYLOAD_OPS[type] !== undefined, type);
});

Deno.test("payloadChunkIds() puts chunk ids in the header, not the payload", () => {
  const prng = new Prng(5);
  const r = refs(prng, 3, false);
  const p: Payload = {
    type: "object_put",
    token: prng.bytes(16),
    namespaceId: prng.bytes(16),
    key: "k",
    size: r.size,
    contentType: "",
    metadata: {},
    etag: "",
    content: { kind: "chunks", chunkRefs: r.refs },
    condition: { kind: "none" },
  };
  const bytes = encodePayload(p);
  const ids = payloadChunkIds(p);
  assert.deepEqual(ids, r.refs.map((x) => x.chunkId));
  const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  assert.ok(!hex(bytes).includes(hex(ids[0]!)), "chunk id is not repeated in the payload");
  assert.throws(() => decodePayload(bytes, ids.slice(1)), PayloadFormatError);
  assert.throws(() => decodePayload(bytes, [...ids, prng.bytes(32)]), PayloadFormatError);
});

Deno.test("decodePayload() rejects every truncation and any trailing byte", () => {
  const prng = new Prng(17);
  for (let i = 0; i < 40; i++) {
    const p = randomPayload(prng);
    const bytes = encodePayload(p);
    const ids = payloadChunkIds(p);
    for (let n = 0; n < bytes.length; n++) {
      assert.throws(() => decodePayload(bytes.subarray(0, n), ids), PayloadFormatError);
    }
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    assert.throws(() => decodePayload(longer, ids), PayloadFormatError);
  }
});

Deno.test("decodePayload() rejects a wrong version, an unknown type and unsorted metadata", () => {
  const prng = new Prng(23);
  const p = randomPayload(prng, "object_delete");
  const bytes = encodePayload(p);
  assert.equal(bytes[0], 1);
  assert.throws(() => decodePayload(Uint8Array.of(0, ...bytes.subarray(1)), []), /version 0/);
  assert.throws(() => decodePayload(Uint8Array.of(4, ...bytes.subarray(1)), []), /version 4/);
  assert.throws(
    () => decodePayload(Uint8Array.of(3, ...bytes.subarray(1)), []),
    /object_delete payload has no version 3 form/,
  );
  // Version 2 adds part layouts to two types; the others have only their version 1 form.
  assert.throws(
    () => decodePayload(Uint8Array.of(2, ...bytes.subarray(1)), []),
    /object_delete payload has no version 2 form/,
  );
  assert.throws(
    () => decodePayload(Uint8Array.of(1, 99, ...bytes.subarray(2)), []),
    /type code 99/,
  );
  // Hand-made upload_start with metadata names out of order.
  const w = new ByteWriter().u8(1).u8(PAYLOAD_TYPES.upload_start).raw(prng.bytes(32));
  w.string16("key").string16("").u16(2).string16("b").string16("1").string16("a").string16("2");
  assert.throws(() => decodePayload(w.finish(), []), /ascending/);
});

Deno.test("decodePayload() rejects invalid UTF-8 and NUL in keys", () => {
  const prefix = () =>
    new ByteWriter().u8(1).u8(PAYLOAD_TYPES.object_delete).raw(new Uint8Array(32));
  assert.throws(
    () => decodePayload(prefix().bytes16(Uint8Array.of(0xc3, 0x28)).finish(), []),
    /UTF-8/,
  );
  assert.throws(() => decodePayload(prefix().bytes16(utf8("a\u0000b")).finish(), []), /NUL/);
  assert.throws(() => decodePayload(prefix().bytes16(new Uint8Array(0)).finish(), []), /empty/);
  assert.deepEqual(
    decodePayload(prefix().bytes16(utf8("ok")).finish(), []),
    {
      type: "object_delete",
      token: new Uint8Array(16),
      namespaceId: new Uint8Array(16),
      key: "ok",
    },
  );
});

Deno.test("encodePayload() refuses contents that do not tile the object or exceed limits", () => {
  const prng = new Prng(29);
  const base = randomPayload(prng, "object_put") as Extract<Payload, { type: "object_put" }>;
  const r = refs(prng, 2, false);
  const chunks: Content = { kind: "chunks", chunkRefs: r.refs };
  assert.throws(() => encodePayload({ ...base, content: chunks, size: r.size + 1 }), /cover/);
  const gap = [r.refs[0]!, { ...r.refs[1]!, offsetBytes: r.refs[1]!.offsetBytes + 1 }];
  assert.throws(
    () => encodePayload({ ...base, content: { kind: "chunks", chunkRefs: gap }, size: r.size + 1 }),
    /does not follow/,
  );
  assert.throws(
    () =>
      encodePayload({
        ...base,
        content: { kind: "inline", bytes: new Uint8Array(INLINE_BYTES_MAX + 1) },
        size: INLINE_BYTES_MAX + 1,
      }),
    /inline content/,
  );
  assert.throws(
    () => encodePayload({ ...base, metadata: { big: "x".repeat(METADATA_BYTES_MAX) } }),
    /metadata/,
  );
  assert.throws(() => encodePayload({ ...base, key: "" }), PayloadFormatError);
});

Deno.test("the largest payloads still fit a delta with the cipher's overhead", () => {
  const prng = new Prng(31);
  const r = refs(prng, PUT_CHUNK_REFS_MAX, false);
  const meta: Record<string, string> = {};
  for (let i = 0; i < 16; i++) meta[`m${i}`.padEnd(20, "x")] = "y".repeat(100);
  const p: Payload = {
    type: "object_put",
    token: prng.bytes(16),
    namespaceId: prng.bytes(16),
    key: "k".repeat(1024),
    size: r.size,
    contentType: "c".repeat(256),
    metadata: meta,
    etag: "e".repeat(128),
    content: { kind: "chunks", chunkRefs: r.refs },
    condition: { kind: "version", version: 9 },
  };
  assert.ok(encodePayload(p).length <= PAYLOAD_PLAINTEXT_BYTES_MAX);
  const inline: Payload = {
    ...p,
    content: { kind: "inline", bytes: prng.bytes(INLINE_BYTES_MAX) },
    size: INLINE_BYTES_MAX,
  };
  assert.ok(encodePayload(inline).length <= PAYLOAD_PLAINTEXT_BYTES_MAX);
  // A copy of a multipart object: as many part sizes as one put may carry.
  const copy: Payload = {
    ...p,
    partSizes: Array.from({ length: PUT_PART_SIZES_MAX }, () => 0).fill(r.size, -1),
  };
  assert.ok(encodePayload(copy).length <= PAYLOAD_PLAINTEXT_BYTES_MAX);
  const complete: Payload = {
    type: "upload_complete",
    token: prng.bytes(16),
    namespaceId: prng.bytes(16),
    key: "k".repeat(1024),
    uploadId: prng.bytes(16),
    partNumbers: Array.from({ length: 10_000 }, (_, i) => i + 1),
    partsDigest: partsDigest([{ partNumber: 1, etag: "x" }]),
    partBytesMin: 5 << 20,
    etag: "e".repeat(128),
    // A copy of a 10,000-part object through hidden parts.
    partSizes: Array.from({ length: PART_NUMBER_MAX }, () => 5 * 1024 ** 3),
  };
  assert.ok(encodePayload(complete).length <= PAYLOAD_PLAINTEXT_BYTES_MAX);
});

/** A version 1 upload_complete laid out by hand, as encoders before version 2 wrote it. */
function uploadCompleteV1(etag: string): { bytes: Uint8Array; decoded: Payload } {
  const token = new Uint8Array(16).fill(7);
  const namespaceId = new Uint8Array(16).fill(9);
  const uploadId = new Uint8Array(16).fill(3);
  const digest = new Uint8Array(32).fill(5);
  const w = new ByteWriter().u8(1).u8(PAYLOAD_TYPES.upload_complete).raw(token).raw(namespaceId);
  w.string16("big.bin").raw(uploadId).u16(3).u16(1).u16(2).u16(4).raw(digest).u64(5 << 20);
  w.string16(etag);
  return {
    bytes: w.finish(),
    decoded: {
      type: "upload_complete",
      token,
      namespaceId,
      key: "big.bin",
      uploadId,
      partNumbers: [1, 2, 4],
      partsDigest: digest,
      partBytesMin: 5 << 20,
      etag,
    },
  };
}

Deno.test("decodePayload() reads a version 1 completion (stored before part layouts) as having none", () => {
  const v1 = uploadCompleteV1("0123456789abcdef0123456789abcdef-3");
  const decoded = decodePayload(v1.bytes, []);
  assert.deepEqual(decoded, v1.decoded);
  assert.ok(!("partSizes" in decoded), "no part layout");
  // What has no layout is still written as version 1, byte for byte.
  assert.deepEqual(encodePayload(v1.decoded), v1.bytes);
});

Deno.test("encodePayload() writes a part layout as version 2: the version 1 bytes, then the layout", () => {
  const v1 = uploadCompleteV1("e-3");
  const listed = encodePayload({ ...v1.decoded, partSizes: "listed" } as Payload);
  assert.deepEqual(listed, Uint8Array.of(2, ...v1.bytes.subarray(1), 1));
  const sizes = encodePayload({ ...v1.decoded, partSizes: [5, 0, 1 << 40] } as Payload);
  const tail = new ByteWriter().u8(2).u16(3).u64(5).u64(0).u64(1 << 40).finish();
  assert.deepEqual(sizes, Uint8Array.of(2, ...v1.bytes.subarray(1), ...tail));
  assert.deepEqual(decodePayload(listed, []), { ...v1.decoded, partSizes: "listed" });
  assert.deepEqual(decodePayload(sizes, []), { ...v1.decoded, partSizes: [5, 0, 1 << 40] });

  const prng = new Prng(41);
  const r = refs(prng, 3, false);
  const put = {
    ...randomPayload(prng, "object_put"),
    content: { kind: "chunks", chunkRefs: r.refs },
    size: r.size,
  } as Extract<Payload, { type: "object_put" }>;
  delete put.partSizes;
  const plain = encodePayload(put);
  assert.equal(plain[0], 1);
  const ids = payloadChunkIds(put);
  const layout = [r.size - 10, 10];
  const withParts = encodePayload({ ...put, partSizes: layout });
  const putTail = new ByteWriter().u16(2).u64(r.size - 10).u64(10).finish();
  assert.deepEqual(withParts, Uint8Array.of(2, ...plain.subarray(1), ...putTail));
  assert.deepEqual(decodePayload(withParts, ids), { ...put, partSizes: layout });
  assert.ok(!("partSizes" in decodePayload(plain, ids)));
});

Deno.test("encodePayload() writes a completion's condition and metadata as version 3: version 2, then both", () => {
  const v1 = uploadCompleteV1("e-3");
  const listed = { ...v1.decoded, partSizes: "listed" } as Extract<
    Payload,
    { type: "upload_complete" }
  >;
  const v2 = encodePayload(listed);
  // Neither: the version 2 bytes, unchanged.
  assert.deepEqual(encodePayload({ ...listed, condition: { kind: "none" }, metadata: {} }), v2);
  const absent = encodePayload({ ...listed, condition: { kind: "absent" } });
  assert.deepEqual(absent, Uint8Array.of(3, ...v2.subarray(1), 1, 0, 0));
  assert.deepEqual(decodePayload(absent, []), { ...listed, condition: { kind: "absent" } });
  const both = { ...listed, condition: { kind: "version", version: 9 }, metadata: { c: "x" } };
  const bytes = encodePayload(both as Payload);
  const tail = new ByteWriter().u8(2).u64(9).u16(1).string16("c").string16("x").finish();
  assert.deepEqual(bytes, Uint8Array.of(3, ...v2.subarray(1), ...tail));
  assert.deepEqual(decodePayload(bytes, []), both);
  // One encoding: a version 3 payload that says nothing more than version 2 is refused, and
  // a condition needs a part layout.
  assert.throws(
    () => decodePayload(Uint8Array.of(3, ...v2.subarray(1), 0, 0, 0), []),
    /carries a condition or metadata/,
  );
  assert.throws(
    () => encodePayload({ ...v1.decoded, condition: { kind: "absent" } } as Payload),
    /needs a part layout/,
  );
});

Deno.test("encodePayload() writes a part's metadata as version 3: version 1, then the metadata", () => {
  const prng = new Prng(47);
  const r = refs(prng, 2, false);
  const part = {
    ...randomPayload(prng, "upload_part"),
    chunkRefs: r.refs,
    size: r.size,
  } as Extract<Payload, { type: "upload_part" }>;
  delete part.metadata;
  const ids = payloadChunkIds(part);
  const v1 = encodePayload(part);
  assert.equal(v1[0], 1);
  assert.deepEqual(encodePayload({ ...part, metadata: {} }), v1);
  const withSums = { ...part, metadata: { ":checksum-sha1": "x" } };
  const v3 = encodePayload(withSums);
  const tail = new ByteWriter().u16(1).string16(":checksum-sha1").string16("x").finish();
  assert.deepEqual(v3, Uint8Array.of(3, ...v1.subarray(1), ...tail));
  assert.deepEqual(decodePayload(v3, ids), withSums);
  assert.throws(
    () => decodePayload(Uint8Array.of(3, ...v1.subarray(1), 0, 0), ids),
    /version 3 part carries metadata/,
  );
});

Deno.test("part layouts have one encoding and must describe the object", () => {
  const v1 = uploadCompleteV1("e-3");
  const complete = v1.decoded as Extract<Payload, { type: "upload_complete" }>;
  // Version 2 without a layout, or with one it does not know.
  assert.throws(() => decodePayload(Uint8Array.of(2, ...v1.bytes.subarray(1)), []), /layout/);
  assert.throws(
    () => decodePayload(Uint8Array.of(2, ...v1.bytes.subarray(1), 3), []),
    /unknown part layout 3/,
  );
  const emptySizes = Uint8Array.of(2, ...v1.bytes.subarray(1), 2, 0, 0);
  assert.throws(() => decodePayload(emptySizes, []), /part sizes are empty/);
  assert.throws(() => encodePayload({ ...complete, partSizes: [] }), /part sizes are empty/);
  assert.throws(() => encodePayload({ ...complete, partSizes: [1, -1] }), /part 2 size -1/);
  assert.throws(
    () => encodePayload({ ...complete, partSizes: new Array(PART_NUMBER_MAX + 1).fill(1) }),
    /10001 part sizes/,
  );

  const prng = new Prng(43);
  const r = refs(prng, 2, false);
  const put = {
    ...randomPayload(prng, "object_put"),
    content: { kind: "chunks", chunkRefs: r.refs },
    size: r.size,
  } as Extract<Payload, { type: "object_put" }>;
  assert.throws(() => encodePayload({ ...put, partSizes: [r.size, 1] }), /add up to/);
  assert.throws(
    () => encodePayload({ ...put, partSizes: new Array(PUT_PART_SIZES_MAX + 1).fill(0) }),
    /part sizes \(max 4096\)/,
  );
  // Sizes that add up to something else than the object, written by hand.
  delete put.partSizes;
  const plain = encodePayload(put);
  const wrong = new ByteWriter().u16(1).u64(r.size + 1).finish();
  assert.throws(
    () => decodePayload(Uint8Array.of(2, ...plain.subarray(1), ...wrong), payloadChunkIds(put)),
    /add up to/,
  );
});

Deno.test("decodePayload() fuzz: mutated payloads decode to canonical payloads or throw PayloadFormatError", () => {
  const prng = new Prng(0xf022);
  let accepted = 0;
  for (let i = 0; i < 4000; i++) {
    const p = randomPayload(prng);
    const bytes = encodePayload(p);
    const ids = payloadChunkIds(p);
    const mutated = bytes.slice();
    const flips = 1 + prng.nextInt(4);
    for (let f = 0; f < flips; f++) {
      const at = prng.nextInt(mutated.length);
      switch (prng.nextInt(3)) {
        case 0:
          mutated[at] = prng.nextInt(256);
          break;
        case 1:
          mutated[at]! ^= 1 << prng.nextInt(8);
          break;
        default:
          mutated[at] = [0, 1, 0xff, 0x7f, 0x80][prng.nextInt(5)]!;
      }
    }
    const cut = prng.nextInt(8) === 0 ? mutated.subarray(0, prng.nextInt(mutated.length)) : mutated;
    let decoded: Payload;
    try {
      decoded = decodePayload(cut, ids);
    } catch (e) {
      assert.ok(
        e instanceof PayloadFormatError,
        `unexpected ${(e as Error).name}: ${(e as Error).message}`,
      );
      continue;
    }
    accepted++;
    // Whatever decodes is a valid payload, and re-encodes to exactly the same bytes.
    assert.deepEqual(encodePayload(decoded), cut);
  }
  assert.ok(accepted > 100, `only ${accepted} mutations decoded: the fuzz does not reach the body`);
});

Deno.test("decodePayload() fuzz: random bytes never throw anything but PayloadFormatError", () => {
  const prng = new Prng(0xbad);
  for (let i = 0; i < 20_000; i++) {
    const bytes = prng.bytes(prng.nextInt(120));
    if (bytes.length > 0 && prng.nextInt(2)) bytes[0] = 1 + prng.nextInt(2);
    if (bytes.length > 1 && prng.nextInt(2)) bytes[1] = 1 + prng.nextInt(17);
    try {
      decodePayload(bytes, prng.nextInt(4) === 0 ? [prng.bytes(32)] : []);
    } catch (e) {
      assert.ok(
        e instanceof PayloadFormatError,
        `unexpected ${(e as Error).name}: ${(e as Error).message}`,
      );
    }
  }
});
