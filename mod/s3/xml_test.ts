import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import {
  buildCompleteMultipartUploadResult,
  buildCopyObjectResult,
  buildCopyPartResult,
  buildDeleteResult,
  buildInitiateMultipartUploadResult,
  buildListAllMyBucketsResult,
  buildListMultipartUploadsResult,
  buildListObjectsResult,
  buildListObjectsV2Result,
  buildListPartsResult,
  buildListVersionsResult,
  buildLocationConstraint,
  buildVersioningConfiguration,
  DELETE_OBJECTS_KEYS_MAX,
  formatS3Date,
  parseCompleteMultipartUpload,
  parseCreateBucketConfiguration,
  parseDelete,
  parseXmlDocument,
  quoteETag,
  S3_XMLNS,
  s3UrlEncode,
  XML_BODY_BYTES_MAX,
  type XmlElement,
} from "./xml.ts";

const DECL = `<?xml version="1.0" encoding="UTF-8"?>\n`;
const T = Date.UTC(2026, 10, 24, 10, 0, 0);
const owner = { id: "tenant-1", displayName: "tenant-1" };

function child(e: XmlElement, name: string): XmlElement {
  const found = e.children.find((c) => c.name === name);
  assert.ok(found, `<${e.name}> has no <${name}>`);
  return found;
}

function all(e: XmlElement, name: string): XmlElement[] {
  return e.children.filter((c) => c.name === name);
}

Deno.test("formatS3Date() writes ISO 8601 with milliseconds", () => {
  assert.equal(formatS3Date(T), "2026-11-24T10:00:00.000Z");
  assert.equal(formatS3Date(T + 7), "2026-11-24T10:00:00.007Z");
});

Deno.test("buildListAllMyBucketsResult() lays out owner and buckets", () => {
  const xml = buildListAllMyBucketsResult({
    owner,
    buckets: [{ name: "a", creationDateMs: T }, { name: "b-2", creationDateMs: T + 1 }],
  });
  assert.equal(
    xml,
    `${DECL}<ListAllMyBucketsResult xmlns="${S3_XMLNS}"><Owner><ID>tenant-1</ID>` +
      `<DisplayName>tenant-1</DisplayName></Owner><Buckets><Bucket><Name>a</Name>` +
      `<CreationDate>2026-11-24T10:00:00.000Z</CreationDate></Bucket><Bucket><Name>b-2</Name>` +
      `<CreationDate>2026-11-24T10:00:00.001Z</CreationDate></Bucket></Buckets>` +
      `</ListAllMyBucketsResult>`,
  );
  parseXmlDocument(xml);
});

const listing = {
  bucket: "bkt",
  prefix: "photos/",
  delimiter: "/",
  maxKeys: 2,
  isTruncated: true,
  contents: [
    {
      key: "photos/a&b <1>.jpg",
      lastModifiedMs: T,
      etag: "d41d8cd98f00b204e9800998ecf8427e",
      sizeBytes: 0,
    },
    { key: "photos/c.jpg", lastModifiedMs: T, etag: '"abc-2"', sizeBytes: 10, owner },
  ],
  commonPrefixes: ["photos/2026/"],
};

Deno.test("buildListObjectsV2Result() lays out a page as AWS does", () => {
  const xml = buildListObjectsV2Result({
    ...listing,
    continuationToken: "tok&1",
    nextContinuationToken: "tok2",
    startAfter: "photos/",
  });
  assert.equal(
    xml,
    `${DECL}<ListBucketResult xmlns="${S3_XMLNS}"><Name>bkt</Name><Prefix>photos/</Prefix>` +
      `<ContinuationToken>tok&amp;1</ContinuationToken><NextContinuationToken>tok2` +
      `</NextContinuationToken><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter>` +
      `<IsTruncated>true</IsTruncated><StartAfter>photos/</StartAfter><Contents>` +
      `<Key>photos/a&amp;b &lt;1&gt;.jpg</Key><LastModified>2026-11-24T10:00:00.000Z` +
      `</LastModified><ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>0</Size>` +
      `<StorageClass>STANDARD</StorageClass></Contents><Contents><Key>photos/c.jpg</Key>` +
      `<LastModified>2026-11-24T10:00:00.000Z</LastModified><ETag>&quot;abc-2&quot;</ETag>` +
      `<Size>10</Size><Owner><ID>tenant-1</ID><DisplayName>tenant-1</DisplayName></Owner>` +
      `<StorageClass>STANDARD</StorageClass></Contents><CommonPrefixes><Prefix>photos/2026/` +
      `</Prefix></CommonPrefixes></ListBucketResult>`,
  );
  const doc = parseXmlDocument(xml);
  assert.equal(child(all(doc, "Contents")[0]!, "Key").text, "photos/a&b <1>.jpg");
  assert.equal(child(all(doc, "Contents")[0]!, "ETag").text, '"d41d8cd98f00b204e9800998ecf8427e"');
});

Deno.test("encoding-type=url encodes keys, prefixes, delimiter and markers only", () => {
  const enc = { ...listing, prefix: "p q/", delimiter: "+", encodingUrl: true };
  const v2 = parseXmlDocument(
    buildListObjectsV2Result({ ...enc, startAfter: "ü~", continuationToken: "a b" }),
  );
  assert.equal(child(v2, "Prefix").text, "p%20q/");
  assert.equal(child(v2, "Delimiter").text, "%2B");
  assert.equal(child(v2, "StartAfter").text, "%C3%BC~");
  assert.equal(child(v2, "ContinuationToken").text, "a b");
  assert.equal(child(all(v2, "Contents")[0]!, "Key").text, "photos/a%26b%20%3C1%3E.jpg");
  assert.equal(child(child(v2, "CommonPrefixes"), "Prefix").text, "photos/2026/");
  assert.equal(child(v2, "EncodingType").text, "url");
  const v1 = parseXmlDocument(
    buildListObjectsResult({ ...enc, marker: "m n", nextMarker: "x/y z" }),
  );
  assert.equal(child(v1, "Marker").text, "m%20n");
  assert.equal(child(v1, "NextMarker").text, "x/y%20z");
  assert.equal(child(v1, "EncodingType").text, "url");
  // Without encoding-type nothing is encoded and no EncodingType is sent.
  const plain = parseXmlDocument(buildListObjectsResult({ ...listing, marker: "m n" }));
  assert.equal(child(plain, "Marker").text, "m n");
  assert.ok(!plain.children.some((c) => c.name === "EncodingType"));
  assert.ok(!plain.children.some((c) => c.name === "NextMarker"));
});

Deno.test("s3UrlEncode() follows S3: space as %20, + as %2B, / and unreserved kept", () => {
  assert.equal(s3UrlEncode("a b/c*d~e+f%g"), "a%20b/c%2Ad~e%2Bf%25g");
  assert.equal(s3UrlEncode("quux ab/"), "quux%20ab/");
  assert.equal(s3UrlEncode("test_file(3).png"), "test_file%283%29.png");
  assert.equal(s3UrlEncode("日"), "%E6%97%A5");
  assert.equal(s3UrlEncode("\u0001\n"), "%01%0A");
});

Deno.test("buildListObjectsResult() lays out v1 fields", () => {
  const doc = parseXmlDocument(
    buildListObjectsResult({ ...listing, marker: "", nextMarker: "photos/c.jpg" }),
  );
  assert.deepEqual(
    doc.children.map((c) => c.name),
    [
      "Name",
      "Prefix",
      "Marker",
      "NextMarker",
      "MaxKeys",
      "Delimiter",
      "IsTruncated",
      "Contents",
      "Contents",
      "CommonPrefixes",
    ],
  );
  assert.equal(child(doc, "Marker").text, "");
});

Deno.test("buildListVersionsResult() lists each object as its only version, VersionId null", () => {
  const doc = parseXmlDocument(buildListVersionsResult({
    ...listing,
    owner,
    keyMarker: "",
    versionIdMarker: "",
    nextKeyMarker: "photos/c.jpg",
    nextVersionIdMarker: "null",
  }));
  assert.equal(doc.name, "ListVersionsResult");
  const versions = all(doc, "Version");
  assert.equal(versions.length, 2);
  for (const v of versions) {
    assert.equal(child(v, "VersionId").text, "null");
    assert.equal(child(v, "IsLatest").text, "true");
    assert.equal(child(child(v, "Owner"), "ID").text, "tenant-1");
  }
  assert.equal(child(doc, "NextVersionIdMarker").text, "null");
});

Deno.test("multipart results carry the fields clients read", () => {
  assert.equal(
    buildInitiateMultipartUploadResult({ bucket: "b", key: "k/1", uploadId: "u1" }),
    `${DECL}<InitiateMultipartUploadResult xmlns="${S3_XMLNS}"><Bucket>b</Bucket>` +
      `<Key>k/1</Key><UploadId>u1</UploadId></InitiateMultipartUploadResult>`,
  );
  assert.equal(
    buildCompleteMultipartUploadResult({
      location: "http://h/b/k",
      bucket: "b",
      key: "k",
      etag: "abc-3",
      checksums: { ChecksumCRC32: "AAAAAA==" },
    }),
    `${DECL}<CompleteMultipartUploadResult xmlns="${S3_XMLNS}"><Location>http://h/b/k` +
      `</Location><Bucket>b</Bucket><Key>k</Key><ETag>&quot;abc-3&quot;</ETag>` +
      `<ChecksumCRC32>AAAAAA==</ChecksumCRC32></CompleteMultipartUploadResult>`,
  );
  const parts = parseXmlDocument(buildListPartsResult({
    bucket: "b",
    key: "k",
    uploadId: "u1",
    initiator: owner,
    owner,
    partNumberMarker: 0,
    nextPartNumberMarker: 2,
    maxParts: 2,
    isTruncated: true,
    parts: [
      { partNumber: 1, lastModifiedMs: T, etag: "e1", sizeBytes: 5 << 20 },
      { partNumber: 2, lastModifiedMs: T, etag: "e2", sizeBytes: 1 },
    ],
  }));
  assert.equal(all(parts, "Part").length, 2);
  assert.equal(child(all(parts, "Part")[1]!, "ETag").text, '"e2"');
  assert.equal(child(parts, "NextPartNumberMarker").text, "2");
  const uploads = parseXmlDocument(buildListMultipartUploadsResult({
    bucket: "b",
    keyMarker: "",
    uploadIdMarker: "",
    prefix: "",
    maxUploads: 1000,
    isTruncated: false,
    uploads: [{ key: "k", uploadId: "u1", initiator: owner, owner, initiatedMs: T }],
    commonPrefixes: [],
  }));
  assert.equal(child(all(uploads, "Upload")[0]!, "Initiated").text, "2026-11-24T10:00:00.000Z");
});

Deno.test("copy results carry LastModified and a quoted ETag", () => {
  assert.equal(
    buildCopyObjectResult({ lastModifiedMs: T, etag: "e" }),
    `${DECL}<CopyObjectResult xmlns="${S3_XMLNS}"><LastModified>2026-11-24T10:00:00.000Z` +
      `</LastModified><ETag>&quot;e&quot;</ETag></CopyObjectResult>`,
  );
  assert.equal(
    parseXmlDocument(buildCopyPartResult({ lastModifiedMs: T, etag: "e" })).name,
    "CopyPartResult",
  );
});

Deno.test("buildDeleteResult() lists deletions unless quiet, and errors always", () => {
  const outcomes = [
    { key: "a" },
    { key: "b<", error: { code: "AccessDenied", message: "Access Denied" } },
  ];
  assert.equal(
    buildDeleteResult({ quiet: false, outcomes }),
    `${DECL}<DeleteResult xmlns="${S3_XMLNS}"><Deleted><Key>a</Key></Deleted><Error><Key>b&lt;` +
      `</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>`,
  );
  const quiet = parseXmlDocument(buildDeleteResult({ quiet: true, outcomes }));
  assert.deepEqual(quiet.children.map((c) => c.name), ["Error"]);
  assert.equal(
    buildDeleteResult({ quiet: true, outcomes: [{ key: "a" }] }),
    `${DECL}<DeleteResult xmlns="${S3_XMLNS}"></DeleteResult>`,
  );
});

Deno.test("buildLocationConstraint() and buildVersioningConfiguration() match AWS", () => {
  assert.equal(
    buildLocationConstraint("us-east-1"),
    `${DECL}<LocationConstraint xmlns="${S3_XMLNS}"></LocationConstraint>`,
  );
  assert.equal(parseXmlDocument(buildLocationConstraint("eu-west-1")).text, "eu-west-1");
  assert.equal(
    buildVersioningConfiguration(),
    `${DECL}<VersioningConfiguration xmlns="${S3_XMLNS}"/>`,
  );
  assert.equal(quoteETag('"x"'), '"x"');
});

function rejectsXml(fn: () => unknown, code = "MalformedXML", part?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof S3Error, String(e));
    assert.equal(e.code, code, e.message);
    if (part !== undefined) assert.ok(e.message.includes(part), e.message);
    return true;
  });
}

Deno.test("parseCompleteMultipartUpload() reads the parts boto3 and the JS SDK send", () => {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<CompleteMultipartUpload xmlns="${S3_XMLNS}">\n  <Part>\n    <ETag>"e1"</ETag>\n` +
    `    <PartNumber>1</PartNumber>\n  </Part>\n  <Part><PartNumber>2</PartNumber>` +
    `<ETag>&quot;e2&quot;</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>\n` +
    `</CompleteMultipartUpload>`;
  assert.deepEqual(parseCompleteMultipartUpload(new TextEncoder().encode(body)), [
    { partNumber: 1, etag: "e1", checksums: {} },
    { partNumber: 2, etag: "e2", checksums: { ChecksumCRC32: "AAAAAA==" } },
  ]);
  // Without a namespace and with unquoted ETags (s3cmd).
  assert.deepEqual(
    parseCompleteMultipartUpload(
      "<CompleteMultipartUpload><Part><PartNumber>3</PartNumber><ETag>e3</ETag></Part></CompleteMultipartUpload>",
    ),
    [{ partNumber: 3, etag: "e3", checksums: {} }],
  );
});

Deno.test("parseCompleteMultipartUpload() refuses anything but a list of parts", () => {
  const part = "<Part><PartNumber>1</PartNumber><ETag>e</ETag></Part>";
  const cases = [
    "<CompleteMultipartUpload></CompleteMultipartUpload>",
    `<CompleteMultipartUpload>${part}`,
    `<Complete>${part}</Complete>`,
    `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><ETag>e</ETag></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag><Size>1</Size></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload>text${part}</CompleteMultipartUpload>`,
    `<CompleteMultipartUpload xmlns="urn:other">${part}</CompleteMultipartUpload>`,
    `<CompleteMultipartUpload>${part}</CompleteMultipartUpload><Extra/>`,
    `<!DOCTYPE x [<!ENTITY a "b">]><CompleteMultipartUpload>${part}</CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&bogus;</ETag></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&#0;</ETag></Part></CompleteMultipartUpload>`,
    `<CompleteMultipartUpload>${"<Part>".repeat(20)}</CompleteMultipartUpload>`,
  ];
  for (const body of cases) rejectsXml(() => parseCompleteMultipartUpload(body), "MalformedXML");
  rejectsXml(
    () =>
      parseCompleteMultipartUpload(
        "<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
      ),
    "InvalidArgument",
  );
  rejectsXml(() => parseCompleteMultipartUpload(""), "MalformedXML");
  rejectsXml(() => parseCompleteMultipartUpload(new Uint8Array(0)), "MalformedXML");
  rejectsXml(
    () => parseCompleteMultipartUpload(new Uint8Array([0x3c, 0xff, 0x3e])),
    "MalformedXML",
    "UTF-8",
  );
  rejectsXml(
    () => parseCompleteMultipartUpload(new Uint8Array(XML_BODY_BYTES_MAX + 1)),
    "MaxMessageLengthExceeded",
  );
});

Deno.test("parseDelete() reads keys exactly, entities and character references decoded", () => {
  const body = `<Delete xmlns="${S3_XMLNS}"><Quiet>true</Quiet>` +
    `<Object><Key> lead and trail </Key></Object>` +
    `<Object><Key>a&amp;b&lt;c&gt;&quot;&apos;&#13;&#x1F600;</Key><VersionId>null</VersionId></Object>` +
    `<Object><Key><![CDATA[x<y>&z]]></Key></Object>` +
    `<Object><Key>line1\r\nline2</Key></Object></Delete>`;
  assert.deepEqual(parseDelete(body), {
    quiet: true,
    objects: [
      { key: " lead and trail " },
      { key: "a&b<c>\"'\r\u{1F600}", versionId: "null" },
      { key: "x<y>&z" },
      { key: "line1\nline2" },
    ],
  });
  assert.equal(parseDelete("<Delete><Object><Key>k</Key></Object></Delete>").quiet, false);
});

Deno.test("parseDelete() refuses an empty list, more than 1000 keys and stray elements", () => {
  const many = "<Object><Key>k</Key></Object>".repeat(DELETE_OBJECTS_KEYS_MAX);
  assert.equal(parseDelete(`<Delete>${many}</Delete>`).objects.length, DELETE_OBJECTS_KEYS_MAX);
  for (
    const body of [
      "<Delete></Delete>",
      `<Delete>${many}<Object><Key>k</Key></Object></Delete>`,
      "<Delete><Object></Object></Delete>",
      "<Delete><Object><Key></Key></Object></Delete>",
      "<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>",
      "<Delete><Object><Key>k</Key></Object><Other/></Delete>",
      "<Delete><Object><Key><b>k</b></Key></Object></Delete>",
    ]
  ) {
    rejectsXml(() => parseDelete(body));
  }
});

Deno.test("parseCreateBucketConfiguration() reads the location constraint", () => {
  assert.deepEqual(parseCreateBucketConfiguration(""), { locationConstraint: null });
  assert.deepEqual(
    parseCreateBucketConfiguration(
      `<CreateBucketConfiguration xmlns="${S3_XMLNS}"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>`,
    ),
    { locationConstraint: "eu-west-1" },
  );
  assert.deepEqual(
    parseCreateBucketConfiguration("<CreateBucketConfiguration/>"),
    { locationConstraint: null },
  );
  rejectsXml(() =>
    parseCreateBucketConfiguration(
      "<CreateBucketConfiguration><Bogus/></CreateBucketConfiguration>",
    )
  );
  rejectsXml(() => parseCreateBucketConfiguration("<Other/>"));
});
