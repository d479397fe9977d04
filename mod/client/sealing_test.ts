import assert from "node:assert/strict";
import { deriveChunkDek, openChunk, sealChunk, WebCryptoAead } from "../crypto/mod.ts";
import { Prng } from "../base/mod.ts";
import { envelopeEpoch, openWithKey, sealWithKey } from "./sealing.ts";

const aead = new WebCryptoAead();
const prng = new Prng(0xc11e);
const master = prng.bytes(32);
const chunkId = prng.bytes(32);
const plaintext = prng.bytes(100_003);

Deno.test("sealWithKey() writes the server's envelope byte for byte", async () => {
  const nonce = prng.bytes(12);
  const server = await sealChunk({ aead, masterKey: master, epoch: 7, chunkId, plaintext, nonce });
  const client = await sealWithKey({
    aead,
    dataKey: deriveChunkDek(master, chunkId),
    epoch: 7,
    chunkId,
    plaintext,
    nonce,
  });
  assert.deepEqual(client, server);
});

Deno.test("openWithKey() opens what a node sealed, and a node opens what the client sealed", async () => {
  const dataKey = deriveChunkDek(master, chunkId);
  const server = await sealChunk({ aead, masterKey: master, epoch: 3, chunkId, plaintext });
  assert.equal(envelopeEpoch(server), 3);
  assert.deepEqual(await openWithKey({ aead, dataKey, chunkId, envelope: server }), plaintext);
  const client = await sealWithKey({ aead, dataKey, epoch: 3, chunkId, plaintext });
  const opened = await openChunk({
    aead,
    masterKeyFor: () => Promise.resolve(master),
    chunkId,
    envelope: client,
  });
  assert.deepEqual(opened, plaintext);
});

Deno.test("openWithKey() refuses another chunk's key and an envelope moved under another id", async () => {
  const dataKey = deriveChunkDek(master, chunkId);
  const envelope = await sealWithKey({ aead, dataKey, epoch: 1, chunkId, plaintext });
  const otherId = prng.bytes(32);
  await assert.rejects(
    openWithKey({ aead, dataKey: deriveChunkDek(master, otherId), chunkId, envelope }),
  );
  await assert.rejects(openWithKey({ aead, dataKey, chunkId: otherId, envelope }));
});
