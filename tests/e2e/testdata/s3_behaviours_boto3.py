# The boto3 side of tests/e2e/s3_behaviours_test.ts. One job (JSON in argv[1]) runs against a
# real kiseki server; what boto3 saw is printed as JSON. Expected values (ETags, checksums,
# encodings, bytes) are computed by the test, not here: this script only observes.

import json
import sys
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

job = json.loads(sys.argv[1])
s3 = boto3.client(
    "s3",
    endpoint_url=job["endpoint"],
    region_name="us-east-1",
    config=Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        # An error must reach the test as it was answered, not retried away.
        retries={"mode": "standard", "total_max_attempts": 1},
    ),
)
op = job["op"]
bucket = job.get("bucket")
out = {}
if job.get("createBucket"):
    s3.create_bucket(Bucket=bucket)


def error(fn):
    """The S3 error code and HTTP status of a call expected to fail ("OK" if it did not)."""
    try:
        fn()
        return {"code": "OK"}
    except ClientError as e:
        return {
            "code": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        }


def text(b):
    return b.decode("latin-1")


def body(key):
    return text(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def upload(key, parts, **create):
    """A multipart upload of `key` with `parts` (bytes) as parts 1.., not completed."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    listed = []
    for i, p in enumerate(parts):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i + 1, Body=p)
        listed.append({"PartNumber": i + 1, "ETag": r["ETag"]})
    return upload_id, listed


def complete(key, upload_id, listed, **kw):
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, **kw
    )


if op == "delete-bucket-uploads":
    # A bucket holding only open uploads (one with a part, two without).
    upload("a/one", [b"part"])
    upload("b two", [])
    upload("b two", [])
    out["uploadsBefore"] = len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    out["delete"] = error(lambda: s3.delete_bucket(Bucket=bucket))
    out["headAfter"] = error(lambda: s3.head_bucket(Bucket=bucket))
    # A bucket holding an object too stays, with its upload.
    other = job["other"]
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="obj", Body=b"x")
    s3.create_multipart_upload(Bucket=other, Key="up")
    out["deleteOther"] = error(lambda: s3.delete_bucket(Bucket=other))
    out["uploadsOther"] = len(s3.list_multipart_uploads(Bucket=other).get("Uploads", []))

elif op == "complete-shapes":
    part = job["part"].encode()
    upload_id, listed = upload("k", [part])
    out["etag"] = complete("k", upload_id, listed)["ETag"]
    again = complete("k", upload_id, listed)
    out["againETag"] = again["ETag"]
    out["againStatus"] = again["ResponseMetadata"]["HTTPStatusCode"]
    out["unknown"] = error(lambda: complete("k", "00" * 16, listed))
    out["unknownGarbage"] = error(lambda: complete("k", "no-such-upload", listed))
    # An empty body (no part list at all).
    empty_id, _ = upload("empty", [part])
    out["emptyBody"] = error(
        lambda: s3.complete_multipart_upload(Bucket=bucket, Key="empty", UploadId=empty_id)
    )
    # Part 1 uploaded twice; both answers listed, the later one last.
    dup_id = s3.create_multipart_upload(Bucket=bucket, Key="dup")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="dup", UploadId=dup_id, PartNumber=1, Body=job["dupFirst"].encode())
    second = s3.upload_part(Bucket=bucket, Key="dup", UploadId=dup_id, PartNumber=1, Body=job["dupSecond"].encode())
    dup = complete("dup", dup_id, [
        {"PartNumber": 1, "ETag": first["ETag"]},
        {"PartNumber": 1, "ETag": second["ETag"]},
    ])
    out["dupETag"] = dup["ETag"]
    out["dupBody"] = body("dup")
    # A number lower than the one before is still out of order.
    order_id, order_listed = upload("order", [part, part])
    out["descending"] = error(lambda: complete("order", order_id, list(reversed(order_listed))))

elif op == "upload-part-copy-range":
    s3.put_object(Bucket=bucket, Key="src", Body=job["source"].encode())
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]

    def copy(rng):
        return s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=rng,
        )

    for name, rng in job["ranges"].items():
        out[name] = error(lambda: copy(rng))
    out["inside"] = copy(job["inside"])["CopyPartResult"]["ETag"]

elif op == "listing-encoding":
    for k in job["keys"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    for k in job["uploadKeys"]:
        s3.create_multipart_upload(Bucket=bucket, Key=k)
    q = job["query"]
    v1 = s3.list_objects(Bucket=bucket, EncodingType="url", Delimiter=q["delimiter"], Marker=q["marker"], MaxKeys=1)
    out["v1"] = {
        "Prefix": v1.get("Prefix"), "Marker": v1.get("Marker"), "NextMarker": v1.get("NextMarker"),
        "Delimiter": v1.get("Delimiter"), "Keys": [c["Key"] for c in v1.get("Contents", [])],
        "CommonPrefixes": [p["Prefix"] for p in v1.get("CommonPrefixes", [])],
        "EncodingType": v1.get("EncodingType"),
    }
    v1p = s3.list_objects(Bucket=bucket, EncodingType="url", Prefix=q["prefix"])
    out["v1Prefix"] = {"Prefix": v1p.get("Prefix"), "Keys": [c["Key"] for c in v1p.get("Contents", [])]}
    v2 = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Delimiter=q["delimiter"], StartAfter=q["startAfter"], Prefix="")
    out["v2"] = {
        "StartAfter": v2.get("StartAfter"), "Delimiter": v2.get("Delimiter"), "Name": v2.get("Name"),
        "Keys": [c["Key"] for c in v2.get("Contents", [])],
        "CommonPrefixes": [p["Prefix"] for p in v2.get("CommonPrefixes", [])],
    }
    page = s3.list_objects_v2(Bucket=bucket, EncodingType="url", MaxKeys=1)
    token = page["NextContinuationToken"]
    page2 = s3.list_objects_v2(Bucket=bucket, EncodingType="url", MaxKeys=1, ContinuationToken=token)
    out["v2Token"] = {"sent": token, "echoed": page2.get("ContinuationToken")}
    # Without EncodingType, botocore asks for url itself and decodes: the keys as stored.
    out["v2Decoded"] = [c["Key"] for c in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    empty = s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    out["v2EmptyToken"] = {
        "keys": [c["Key"] for c in empty.get("Contents", [])],
        "echoed": empty.get("ContinuationToken"),
    }
    ver = s3.list_object_versions(Bucket=bucket, EncodingType="url", KeyMarker=q["marker"], MaxKeys=1, Prefix=q["prefixAll"])
    out["versions"] = {
        "KeyMarker": ver.get("KeyMarker"), "NextKeyMarker": ver.get("NextKeyMarker"), "Prefix": ver.get("Prefix"),
        "Keys": [v["Key"] for v in ver.get("Versions", [])],
    }
    up = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url", KeyMarker=q["marker"], MaxUploads=1, Prefix=q["prefixAll"])
    out["uploads"] = {
        "KeyMarker": up.get("KeyMarker"), "NextKeyMarker": up.get("NextKeyMarker"), "Prefix": up.get("Prefix"),
        "Keys": [u["Key"] for u in up.get("Uploads", [])],
        "UploadIdMarker": up.get("UploadIdMarker"),
    }

elif op == "stored-headers":
    sent = job["headers"]
    s3.put_object(
        Bucket=bucket, Key="h", Body=b"payload",
        ContentEncoding=sent["content-encoding"], CacheControl=sent["cache-control"],
        ContentDisposition=sent["content-disposition"], ContentLanguage=sent["content-language"],
        ContentType=sent["content-type"],
    )
    got = s3.head_object(Bucket=bucket, Key="h")["ResponseMetadata"]["HTTPHeaders"]
    out["head"] = {name: got.get(name) for name in sent}
    got = s3.get_object(Bucket=bucket, Key="h")
    got["Body"].read()
    out["get"] = {name: got["ResponseMetadata"]["HTTPHeaders"].get(name) for name in sent}

elif op == "metadata-limits":
    meta = job["metadata"]
    r = s3.put_object(Bucket=bucket, Key="m", Body=b"m", Metadata=meta, ContentDisposition=job["disposition"])
    out["put"] = r["ResponseMetadata"]["HTTPStatusCode"]
    head = s3.head_object(Bucket=bucket, Key="m")
    out["metadata"] = head["Metadata"]
    out["disposition"] = head.get("ContentDisposition")
    out["over"] = error(lambda: s3.put_object(Bucket=bucket, Key="m2", Body=b"m", Metadata=job["over"]))
    out["overMultipart"] = error(lambda: s3.create_multipart_upload(Bucket=bucket, Key="m3", Metadata=job["over"]))

elif op == "checksums":
    r = s3.create_multipart_upload(Bucket=bucket, Key="mpu", ChecksumAlgorithm="CRC32")
    out["createAlgorithm"] = r.get("ChecksumAlgorithm")
    s3.abort_multipart_upload(Bucket=bucket, Key="mpu", UploadId=r["UploadId"])
    data = job["body"].encode()
    out["wrong"] = error(lambda: s3.put_object(Bucket=bucket, Key="w", Body=data, ChecksumCRC32=job["wrongCrc32"]))
    out["wrongStored"] = error(lambda: s3.head_object(Bucket=bucket, Key="w"))
    s3.put_object(Bucket=bucket, Key="src", Body=data, ChecksumAlgorithm="SHA256")
    s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE", Metadata={"replaced": "yes"}, ContentType="text/x",
    )
    head = s3.head_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    out["copy"] = {"sha256": head.get("ChecksumSHA256"), "metadata": head["Metadata"], "type": head["ContentType"]}

elif op == "presign-expires":
    s3.put_object(Bucket=bucket, Key="p", Body=b"presigned")
    for name, seconds in job["expires"].items():
        # botocore's CRT signer will not sign for 0 seconds: signed for 1, sent as 0 (the
        # parameter is refused before any signature is checked).
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=max(seconds, 1))
        if seconds < 1:
            url = url.replace("X-Amz-Expires=1&", f"X-Amz-Expires={seconds}&")
            assert f"X-Amz-Expires={seconds}&" in url, url
        try:
            r = urllib.request.urlopen(url, timeout=10)
            out[name] = {"status": r.status, "body": text(r.read())}
        except urllib.error.HTTPError as e:
            out[name] = {"status": e.code, "body": text(e.read())}

else:
    raise SystemExit(f"unknown op {op}")

print(json.dumps(out))
