import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { inCi, Prng } from "../base/mod.ts";
import {
  AWS_CHUNK_HEADER_BYTES_MAX,
  AwsChunkedDecoder,
  type AwsChunkedOptions,
  type AwsChunkedSigning,
  parseAnnouncedTrailers,
} from "./aws_chunked.ts";
import {
  type ChecksumAlgorithm,
  checksumHeaderName,
  createChecksum,
  toBase64,
} from "./checksums.ts";
import { S3Error } from "./errors.ts";
import { chunkSignature, deriveSigningKey, trailerSignature } from "./sigv4.ts";

const encoder = new TextEncoder();
const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/** The seed of AWS's "Example: PUT Object" in sigv4-streaming.html. */
const AWS_EXAMPLE: AwsChunkedSigning = {
  signingKey: deriveSigningKey(SECRET, "20130524", "us-east-1", "s3"),
  amzDate: "20130524T000000Z",
  scope: "20130524/us-east-1/s3/aws4_request",
  seedSignature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
};

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** AWS's example body, byte for byte: 64 KiB and 1 KiB of 'a', then the final chunk. */
function awsExampleBody(): Uint8Array {
  return concat([
    encoder.encode(
      "10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
    ),
    new Uint8Array(65536).fill(0x61),
    encoder.encode(
      "\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
    ),
    new Uint8Array(1024).fill(0x61),
    encoder.encode(
      "\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n",
    ),
  ]);
}

interface EncodeOptions {
  signing: AwsChunkedSigning | null;
  chunks: Uint8Array[];
  checksum?: ChecksumAlgorithm;
  /** Trailer line to send instead of the right checksum. */
  checksumValue?: string;
}

/** An aws-chunked encoder, as SDKs write bodies: signed or not, with or without a trailer. */
function encode(options: EncodeOptions): Uint8Array {
  const out: Uint8Array[] = [];
  let previous = options.signing?.seedSignature ?? "";
  const checksum = options.checksum === undefined ? null : createChecksum(options.checksum);
  for (const chunk of [...options.chunks, new Uint8Array(0)]) {
    checksum?.update(chunk);
    let header = chunk.length.toString(16);
    if (options.signing !== null) {
      previous = chunkSignature({
        ...options.signing,
        previousSignature: previous,
        chunkSha256Hex: createHash("sha256").update(chunk).digest("hex"),
      });
      header += `;chunk-signature=${previous}`;
    }
    out.push(encoder.encode(header + "\r\n"), chunk);
    if (chunk.length > 0) out.push(encoder.encode("\r\n"));
  }
  if (options.checksum !== undefined) {
    const name = checksumHeaderName(options.checksum);
    const value = options.checksumValue ?? toBase64(checksum!.digest());
    out.push(encoder.encode(`${name}:${value}\r\n`));
    if (options.signing !== null) {
      const signature = trailerSignature({
        ...options.signing,
        previousSignature: previous,
        trailerSha256Hex: createHash("sha256").update(`${name}:${value}\n`).digest("hex"),
      });
      out.push(encoder.encode(`x-amz-trailer-signature:${signature}\r\n`));
    }
  }
  out.push(encoder.encode("\r\n"));
  return concat(out);
}

/** Feeds `body` to a decoder in pieces of random size; returns the decoded bytes. */
async function decode(
  body: Uint8Array,
  options: AwsChunkedOptions,
  seed = 1,
  pieceMax = 4096,
): Promise<{ data: Uint8Array; decoder: AwsChunkedDecoder }> {
  const prng = new Prng(seed);
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < body.length;) {
    const n = 1 + prng.nextInt(pieceMax);
    pieces.push(body.slice(at, at + n));
    at += n;
  }
  const decoder = new AwsChunkedDecoder(options);
  const out: Uint8Array[] = [];
  for await (const chunk of ReadableStream.from(pieces).pipeThrough(decoder)) out.push(chunk);
  return { data: concat(out), decoder };
}

async function rejectsCode(p: Promise<unknown>, code: string, part?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof S3Error, String(e));
    assert.equal(e.code, code, e.message);
    if (part !== undefined) assert.ok(e.message.includes(part), e.message);
    return true;
  });
}

Deno.test("AwsChunkedDecoder decodes AWS's signed example however it is split", async () => {
  const body = awsExampleBody();
  assert.equal(body.length, 66824);
  for (const [seed, pieceMax] of [[1, 1], [2, 7], [3, 100], [4, 70000]] as const) {
    const { data, decoder } = await decode(
      body,
      {
        signing: AWS_EXAMPLE,
        trailer: false,
        decodedLengthBytes: 66560,
      },
      seed,
      pieceMax,
    );
    assert.equal(data.length, 66560);
    assert.ok(data.every((b) => b === 0x61));
    const result = await decoder.result;
    assert.equal(result.decodedBytes, 66560);
    assert.deepEqual(result.trailers, {});
  }
});

Deno.test("AwsChunkedDecoder refuses a signed body changed in any chunk", async () => {
  const options = { signing: AWS_EXAMPLE, trailer: false };
  const body = awsExampleBody();
  // A data byte of the first chunk, of the second, and a signature digit.
  for (const at of [100, 65712 + 100, 50]) {
    const changed = body.slice();
    changed[at] = changed[at] === 0x61 ? 0x62 : 0x61;
    await rejectsCode(decode(changed, options), "SignatureDoesNotMatch");
  }
  // Signed under another seed (another request).
  await rejectsCode(
    decode(body, { ...options, signing: { ...AWS_EXAMPLE, seedSignature: "0".repeat(64) } }),
    "SignatureDoesNotMatch",
  );
  // Chunks swapped: each signature is chained to the one before.
  const a = new Uint8Array(100).fill(1);
  const b = new Uint8Array(100).fill(2);
  const ab = encode({ signing: AWS_EXAMPLE, chunks: [a, b] });
  const ba = encode({ signing: AWS_EXAMPLE, chunks: [b, a] });
  const headerLength = ab.indexOf(0x0a) + 1;
  const swapped = concat([ba.subarray(0, headerLength + 102), ab.subarray(headerLength + 102)]);
  await rejectsCode(decode(swapped, options), "SignatureDoesNotMatch");
});

Deno.test("AwsChunkedDecoder reports a truncated body as IncompleteBody", async () => {
  const body = encode({
    signing: AWS_EXAMPLE,
    chunks: [new Uint8Array(300).fill(7), new Uint8Array(50).fill(8)],
    checksum: "CRC32",
  });
  const options = {
    signing: AWS_EXAMPLE,
    trailer: true,
    announcedTrailers: "x-amz-checksum-crc32",
  };
  await decode(body, options);
  for (let cut = 0; cut < body.length; cut += 1 + (cut % 13)) {
    await assert.rejects(decode(body.subarray(0, cut), options), (e: unknown) => {
      // A cut inside the trailer line leaves an incomplete line: also a short body.
      assert.ok(e instanceof S3Error && e.code === "IncompleteBody", `cut at ${cut}: ${e}`);
      return true;
    });
  }
});

Deno.test("AwsChunkedDecoder checks x-amz-decoded-content-length", async () => {
  const body = encode({
    signing: null,
    chunks: [new Uint8Array(10), new Uint8Array(5)],
    checksum: "CRC32",
  });
  const options = { signing: null, trailer: true, announcedTrailers: "x-amz-checksum-crc32" };
  await decode(body, { ...options, decodedLengthBytes: 15 });
  await rejectsCode(decode(body, { ...options, decodedLengthBytes: 16 }), "IncompleteBody");
  await rejectsCode(decode(body, { ...options, decodedLengthBytes: 14 }), "InvalidRequest");
});

Deno.test("AwsChunkedDecoder verifies a signed trailer and its checksum", async () => {
  const prng = new Prng(9);
  const chunks = [prng.bytes(8192), prng.bytes(8192), prng.bytes(17)];
  const whole = concat(chunks);
  for (const algorithm of ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] as const) {
    const body = encode({ signing: AWS_EXAMPLE, chunks, checksum: algorithm });
    const options = {
      signing: AWS_EXAMPLE,
      trailer: true,
      announcedTrailers: checksumHeaderName(algorithm),
    };
    const { data, decoder } = await decode(body, options);
    assert.deepEqual(data, whole);
    const result = await decoder.result;
    const expected = createChecksum(algorithm);
    expected.update(whole);
    assert.deepEqual(result.checksum, { algorithm, value: toBase64(expected.digest()) });

    // Right signature over a wrong checksum: the payload decides.
    const wrongSum = encode({
      signing: AWS_EXAMPLE,
      chunks,
      checksum: algorithm,
      checksumValue: toBase64(new Uint8Array(createChecksumLength(algorithm))),
    });
    await rejectsCode(decode(wrongSum, options), "BadDigest", algorithm);
  }
  // The trailer changed after signing.
  const body = encode({ signing: AWS_EXAMPLE, chunks, checksum: "CRC32" });
  const text = new TextDecoder("latin1").decode(body);
  const at = text.lastIndexOf("x-amz-checksum-crc32:") + "x-amz-checksum-crc32:".length;
  const changed = body.slice();
  changed[at] = changed[at] === 0x41 ? 0x42 : 0x41;
  await rejectsCode(
    decode(changed, {
      signing: AWS_EXAMPLE,
      trailer: true,
      announcedTrailers: "x-amz-checksum-crc32",
    }),
    "SignatureDoesNotMatch",
  );
});

function createChecksumLength(algorithm: ChecksumAlgorithm): number {
  const h = createChecksum(algorithm);
  return h.digest().length;
}

Deno.test("AwsChunkedDecoder decodes unsigned chunks with a trailing checksum", async () => {
  // As botocore and the JS SDK send STREAMING-UNSIGNED-PAYLOAD-TRAILER.
  const body = encoder.encode("5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n");
  const { data, decoder } = await decode(
    body,
    {
      signing: null,
      trailer: true,
      announcedTrailers: "x-amz-checksum-crc32",
      decodedLengthBytes: 5,
    },
    1,
    3,
  );
  assert.equal(new TextDecoder().decode(data), "hello");
  assert.deepEqual((await decoder.result).checksum, { algorithm: "CRC32", value: "NhCmhg==" });
  const wrong = encoder.encode("5\r\nhellp\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n");
  await rejectsCode(
    decode(wrong, { signing: null, trailer: true, announcedTrailers: "x-amz-checksum-crc32" }),
    "BadDigest",
  );
});

Deno.test("AwsChunkedDecoder refuses malformed framing", async () => {
  const unsigned = { signing: null, trailer: false };
  const cases: Array<[string, AwsChunkedOptions, string, string]> = [
    ["5\r\nhelloXX0\r\n\r\n", unsigned, "InvalidRequest", "CRLF"],
    ["zz\r\nhello\r\n0\r\n\r\n", unsigned, "InvalidRequest", "not hex"],
    ["5\nhello\r\n0\r\n\r\n", unsigned, "InvalidRequest", "CRLF"],
    ["5;chunk-signature=00\r\nhello\r\n0\r\n\r\n", unsigned, "InvalidRequest", "extension"],
    ["5\r\nhello\r\n0\r\n\r\nmore", unsigned, "InvalidRequest", "follows the end"],
    [
      "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
      unsigned,
      "InvalidRequest",
      "empty line",
    ],
    ["1000001\r\n", unsigned, "InvalidRequest", "exceeds"],
    ["123456789\r\n", unsigned, "InvalidRequest", "not hex"],
    [
      `5;chunk-signature=${"g".repeat(64)}\r\nhello\r\n`,
      { signing: AWS_EXAMPLE, trailer: false },
      "InvalidRequest",
      "chunk-signature",
    ],
    [
      "5\r\nhello\r\n",
      { signing: AWS_EXAMPLE, trailer: false },
      "InvalidRequest",
      "chunk-signature",
    ],
    ["1".repeat(AWS_CHUNK_HEADER_BYTES_MAX + 1), unsigned, "InvalidRequest", "longer than"],
  ];
  for (const [text, options, code, part] of cases) {
    await rejectsCode(decode(encoder.encode(text), options), code, part);
  }
});

Deno.test("AwsChunkedDecoder refuses trailers that were not announced or are malformed", async () => {
  const options = { signing: null, trailer: true, announcedTrailers: "x-amz-checksum-crc32" };
  const cases: Array<[string, AwsChunkedOptions, string]> = [
    ["0\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n", options, "not announced"],
    ["0\r\n\r\n", options, "missing"],
    ["0\r\nx-amz-checksum-crc32 AAAAAA==\r\n\r\n", options, "name:value"],
    [
      "0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
      options,
      "twice",
    ],
    [
      `0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:${"0".repeat(64)}\r\n\r\n`,
      options,
      "unsigned",
    ],
    [
      `0;chunk-signature=${"0".repeat(64)}\r\n`,
      { signing: AWS_EXAMPLE, trailer: true, announcedTrailers: "x-amz-checksum-crc32" },
      "",
    ],
  ];
  for (const [text, opts, part] of cases.slice(0, 5)) {
    await rejectsCode(decode(encoder.encode(text), opts), "MalformedTrailerError", part);
  }
  // The value must be base64 of the algorithm's length.
  await rejectsCode(
    decode(encoder.encode("0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n"), options),
    "InvalidRequest",
    "x-amz-checksum-crc32",
  );
  // A signed stream's trailer needs its signature.
  const signedNoSignature = encode({ signing: AWS_EXAMPLE, chunks: [], checksum: "CRC32" });
  const text = new TextDecoder().decode(signedNoSignature).replace(
    /x-amz-trailer-signature:.*\r\n/,
    "",
  );
  await rejectsCode(
    decode(encoder.encode(text), {
      signing: AWS_EXAMPLE,
      trailer: true,
      announcedTrailers: "x-amz-checksum-crc32",
    }),
    "MalformedTrailerError",
    "no x-amz-trailer-signature",
  );
});

Deno.test("parseAnnouncedTrailers() reads x-amz-trailer and refuses what cannot be checked", () => {
  assert.deepEqual(parseAnnouncedTrailers(null), []);
  assert.deepEqual(parseAnnouncedTrailers(" X-Amz-Checksum-CRC32 "), ["x-amz-checksum-crc32"]);
  assert.throws(
    () => parseAnnouncedTrailers("a,b,c,d,e"),
    (e: S3Error) => e.code === "InvalidRequest",
  );
  assert.throws(
    () =>
      new AwsChunkedDecoder({ signing: null, trailer: true, announcedTrailers: "x-amz-meta-a" }),
    (e: S3Error) => e.code === "InvalidRequest" && e.message.includes("unsupported"),
  );
  assert.throws(
    () =>
      new AwsChunkedDecoder({
        signing: null,
        trailer: false,
        announcedTrailers: "x-amz-checksum-crc32",
      }),
    (e: S3Error) => e.code === "InvalidRequest",
  );
  assert.throws(
    () =>
      new AwsChunkedDecoder({
        signing: null,
        trailer: true,
        announcedTrailers: "x-amz-checksum-crc32,x-amz-checksum-sha1",
      }),
    (e: S3Error) => e.code === "InvalidRequest",
  );
});

// --- Bodies boto3 encodes, when a boto3 that sends aws-chunked is installed -------------

const BOTO3_CHUNKED = `
import base64, io, json
import boto3, botocore
from botocore.config import Config
class Captured(Exception):
    pass
out = []
def capture(request, **kw):
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    out.append({"headers": headers, "body": base64.b64encode(body or b"").decode()})
    raise Captured()
s3 = boto3.client("s3", endpoint_url="https://localhost:9000", region_name="us-east-1",
                  aws_access_key_id="AK", aws_secret_access_key="SK",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}))
s3.meta.events.register("before-send.s3", capture)
for size in [0, 1, 65536, 1 << 20, (1 << 20) + 3]:
    for algorithm in ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]:
        try:
            s3.put_object(Bucket="b", Key="k", Body=io.BytesIO(bytes(range(256)) * (size // 256) + b"z" * (size % 256)),
                          ChecksumAlgorithm=algorithm)
        except Captured:
            pass
        except Exception as e:
            pass
print(json.dumps(out))
`;

Deno.test({
  name: "AwsChunkedDecoder decodes the aws-chunked bodies boto3 sends",
  async fn(t) {
    let samples: Array<{ headers: Record<string, string>; body: string }> = [];
    for (const python of ["/usr/bin/python3", "python3"]) {
      let output: Deno.CommandOutput;
      try {
        output = await new Deno.Command(python, {
          args: ["-c", BOTO3_CHUNKED],
          stdout: "piped",
          stderr: "null",
        }).output();
      } catch {
        continue;
      }
      if (!output.success) continue;
      samples = samples.concat(JSON.parse(new TextDecoder().decode(output.stdout)));
    }
    const chunked = samples.filter((s) =>
      Object.entries(s.headers).some(([k, v]) =>
        k.toLowerCase() === "content-encoding" && v.includes("aws-chunked")
      )
    );
    if (chunked.length === 0) {
      // No boto3 at all is a missing client (a failure under CI=true); a boto3 too old to
      // send aws-chunked bodies is not.
      if (samples.length === 0 && inCi()) {
        throw new Error("boto3 (Debian python3-boto3) is missing: no python3 that imports boto3");
      }
      t.step({ name: "no boto3 here sends aws-chunked bodies", ignore: true, fn() {} });
      return;
    }
    for (const sample of chunked) {
      const headers = new Headers(sample.headers);
      assert.equal(headers.get("x-amz-content-sha256"), "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
      const body = Uint8Array.from(atob(sample.body), (c) => c.charCodeAt(0));
      const size = Number(headers.get("x-amz-decoded-content-length"));
      const { data, decoder } = await decode(
        body,
        {
          signing: null,
          trailer: true,
          announcedTrailers: headers.get("x-amz-trailer"),
          decodedLengthBytes: size,
        },
        size,
        65536,
      );
      assert.equal(data.length, size);
      const result = await decoder.result;
      assert.equal(
        result.checksum?.algorithm.toLowerCase(),
        headers.get("x-amz-trailer")!.replace("x-amz-checksum-", ""),
      );
    }
  },
});
