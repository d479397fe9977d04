# The boto3 side of tests/e2e/s3_clients_test.ts. One job (JSON in argv[1]) runs against a
# real kiseki server; what boto3 saw is printed as JSON. Expected values (ETags, checksums,
# bytes) are computed by the test, not here: this script only observes.

import hashlib
import json
import sys

import boto3
import botocore
import botocore.httpchecksum
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
    """The S3 error code, HTTP status and message of a call expected to fail."""
    try:
        fn()
        return {"code": "OK"}
    except ClientError as e:
        return {
            "code": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message", ""),
        }


def read_slice(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def download(key, path, **kw):
    r = s3.get_object(Bucket=bucket, Key=key, **kw)
    with open(path, "wb") as f:
        for chunk in r["Body"].iter_chunks(1 << 20):
            f.write(chunk)
    return r


def upload_ids():
    return [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


if op == "multipart":
    key, source = job["key"], job["source"]
    parts = {n: (start, end) for n, start, end in job["parts"]}
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = {}
    for n in job["uploadOrder"]:
        start, end = parts[n]
        body = read_slice(source, start, end)
        etags[n] = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=body
        )["ETag"]
    out["uploaded"] = {str(n): e for n, e in etags.items()}
    out["listed"] = [
        {"partNumber": p["PartNumber"], "etag": p["ETag"], "size": p["Size"]}
        for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)["Parts"]
    ]
    out["listedUpload"] = upload in upload_ids()
    listed_out_of_order = [{"PartNumber": n, "ETag": etags[n]} for n in job["badCompleteOrder"]]
    out["badOrder"] = error(
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": listed_out_of_order},
        )
    )
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
    )
    out["completeETag"] = done["ETag"]
    head = s3.head_object(Bucket=bucket, Key=key)
    out["head"] = {"length": head["ContentLength"], "etag": head["ETag"]}
    out["getETag"] = download(key, job["out"])["ETag"]
    out["listedAfterComplete"] = upload in upload_ids()

    # A part under 5 MiB that is not the last: the completion is refused.
    small = s3.create_multipart_upload(Bucket=bucket, Key=key + ".small")["UploadId"]
    small_parts = []
    for n, body in ((1, b"a" * (1 << 20)), (2, b"b" * 10)):
        e = s3.upload_part(Bucket=bucket, Key=key + ".small", UploadId=small, PartNumber=n, Body=body)
        small_parts.append({"PartNumber": n, "ETag": e["ETag"]})
    out["tooSmall"] = error(
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key + ".small",
            UploadId=small,
            MultipartUpload={"Parts": small_parts},
        )
    )
    out["tooSmallObject"] = error(lambda: s3.head_object(Bucket=bucket, Key=key + ".small"))
    s3.abort_multipart_upload(Bucket=bucket, Key=key + ".small", UploadId=small)

    # An aborted upload is gone for every later call; another open upload stays listed.
    aborted = s3.create_multipart_upload(Bucket=bucket, Key=key + ".aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key + ".aborted", UploadId=aborted, PartNumber=1, Body=b"x")
    still_open = s3.create_multipart_upload(Bucket=bucket, Key=key + ".open")["UploadId"]
    before = upload_ids()
    s3.abort_multipart_upload(Bucket=bucket, Key=key + ".aborted", UploadId=aborted)
    after = upload_ids()
    out["abort"] = {
        "listedBefore": aborted in before,
        "listedAfter": aborted in after,
        "openListedAfter": still_open in after,
        "uploadPart": error(
            lambda: s3.upload_part(
                Bucket=bucket, Key=key + ".aborted", UploadId=aborted, PartNumber=2, Body=b"y"
            )
        ),
        "listParts": error(
            lambda: s3.list_parts(Bucket=bucket, Key=key + ".aborted", UploadId=aborted)
        ),
        "object": error(lambda: s3.head_object(Bucket=bucket, Key=key + ".aborted")),
    }
    s3.abort_multipart_upload(Bucket=bucket, Key=key + ".open", UploadId=still_open)
    out["uploadsLeft"] = upload_ids()

elif op == "copy":
    src = job["sourceKey"]
    with open(job["source"], "rb") as f:
        s3.put_object(
            Bucket=bucket,
            Key=src,
            Body=f.read(),
            ContentType="application/x-e2e-source",
            Metadata={"origin": "e2e", "shade": "blue"},
        )
    source_etag = s3.head_object(Bucket=bucket, Key=src)["ETag"]
    out["sourceETag"] = source_etag
    copy_source = {"Bucket": bucket, "Key": src}
    wrong_etag = '"' + "0" * 32 + '"'

    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    part_etags = []
    for n, byte_range in enumerate(job["ranges"], start=1):
        r = s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload,
            PartNumber=n,
            CopySource=copy_source,
            CopySourceRange=byte_range,
            CopySourceIfMatch=source_etag,
        )
        part_etags.append(r["CopyPartResult"]["ETag"])
    out["partCopyETags"] = part_etags
    out["partCopyIfMatchWrong"] = error(
        lambda: s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload,
            PartNumber=len(part_etags) + 1,
            CopySource=copy_source,
            CopySourceRange="bytes=0-9",
            CopySourceIfMatch=wrong_etag,
        )
    )
    out["partsListed"] = [
        p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="assembled", UploadId=upload)["Parts"]
    ]
    out["assembledETag"] = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload,
        MultipartUpload={
            "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(part_etags)]
        },
    )["ETag"]
    download("assembled", job["assembledOut"])

    def described(key):
        h = s3.head_object(Bucket=bucket, Key=key)
        return {
            "etag": h["ETag"],
            "length": h["ContentLength"],
            "contentType": h["ContentType"],
            "metadata": h["Metadata"],
        }

    copied = s3.copy_object(
        Bucket=bucket, Key="copied", CopySource=copy_source, MetadataDirective="COPY"
    )
    out["copyResultETag"] = copied["CopyObjectResult"]["ETag"]
    out["copied"] = described("copied")
    download("copied", job["copiedOut"])
    s3.copy_object(
        Bucket=bucket,
        Key="replaced",
        CopySource=copy_source,
        MetadataDirective="REPLACE",
        Metadata={"fresh": "yes"},
        ContentType="text/x-replaced",
    )
    out["replaced"] = described("replaced")
    out["copyIfMatchWrong"] = error(
        lambda: s3.copy_object(
            Bucket=bucket, Key="cond-a", CopySource=copy_source, CopySourceIfMatch=wrong_etag
        )
    )
    out["copyIfNoneMatchSame"] = error(
        lambda: s3.copy_object(
            Bucket=bucket, Key="cond-b", CopySource=copy_source, CopySourceIfNoneMatch=source_etag
        )
    )
    out["copyIfMatchRight"] = error(
        lambda: s3.copy_object(
            Bucket=bucket, Key="cond-c", CopySource=copy_source, CopySourceIfMatch=source_etag
        )
    )
    out["refusedCopies"] = [
        error(lambda: s3.head_object(Bucket=bucket, Key=k))["code"] for k in ("cond-a", "cond-b")
    ]

elif op == "headers":
    import gzip

    sent = job["headers"]
    s3.put_object(
        Bucket=bucket,
        Key=job["key"],
        Body=gzip.compress(job["body"].encode()),
        ContentType=sent["contentType"],
        ContentDisposition=sent["contentDisposition"],
        ContentEncoding=sent["contentEncoding"],
        CacheControl=sent["cacheControl"],
        Expires=sent["expires"],
        Metadata=sent["metadata"],
    )

    def seen(r):
        return {
            "contentType": r.get("ContentType"),
            "contentDisposition": r.get("ContentDisposition"),
            "contentEncoding": r.get("ContentEncoding"),
            "cacheControl": r.get("CacheControl"),
            "expires": r["Expires"].isoformat() if "Expires" in r else None,
            "metadata": r.get("Metadata"),
        }

    out["head"] = seen(s3.head_object(Bucket=bucket, Key=job["key"]))
    got = s3.get_object(Bucket=bucket, Key=job["key"])
    out["get"] = seen(got)
    # boto3 does not decode Content-Encoding: the stored gzip bytes come back as they are.
    out["body"] = gzip.decompress(got["Body"].read()).decode()

elif op == "checksums":
    algorithms = ["CRC32", "CRC32C", "SHA1", "SHA256"]
    supported = sorted(a.upper() for a in botocore.httpchecksum._CHECKSUM_CLS)
    out["botocore"] = botocore.__version__
    out["supported"] = supported
    if "CRC64NVME" in supported:
        algorithms.append("CRC64NVME")
    with open(job["source"], "rb") as f:
        body = f.read()
    for algorithm in algorithms:
        key = "ck-" + algorithm.lower()
        field = "Checksum" + algorithm
        put = s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm=algorithm)
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        # Reading the body makes botocore check it against the checksum header.
        got_sha256 = hashlib.sha256(got["Body"].read()).hexdigest()
        plain = s3.head_object(Bucket=bucket, Key=key)
        out[algorithm] = {
            "put": put.get(field),
            "head": head.get(field),
            "get": got.get(field),
            "getBodySha256": got_sha256,
            "withoutMode": plain.get(field),
        }
    out["wrong"] = error(
        lambda: s3.put_object(Bucket=bucket, Key="ck-wrong", Body=body, ChecksumCRC32=job["wrongCrc32"])
    )
    out["wrongStored"] = error(lambda: s3.head_object(Bucket=bucket, Key="ck-wrong"))

elif op == "ranges":
    key = job["key"]
    with open(job["source"], "rb") as f:
        etag = s3.put_object(Bucket=bucket, Key=key, Body=f.read())["ETag"]
    out["etag"] = etag

    def ranged(spec):
        r = s3.get_object(Bucket=bucket, Key=key, Range=spec)
        return {
            "status": r["ResponseMetadata"]["HTTPStatusCode"],
            "contentRange": r.get("ContentRange"),
            "length": r["ContentLength"],
            "body": r["Body"].read().hex(),
        }

    for spec in job["ranges"]:
        out[spec] = ranged(spec)
    out["unsatisfiable"] = error(lambda: s3.get_object(Bucket=bucket, Key=key, Range=job["unsatisfiable"]))
    wrong = '"' + "0" * 32 + '"'

    def status(**kw):
        r = s3.get_object(Bucket=bucket, Key=key, **kw)
        r["Body"].read()
        return r["ResponseMetadata"]["HTTPStatusCode"]

    out["ifNoneMatchSame"] = error(lambda: s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag))
    out["headIfNoneMatchSame"] = error(lambda: s3.head_object(Bucket=bucket, Key=key, IfNoneMatch=etag))
    out["ifNoneMatchOther"] = status(IfNoneMatch=wrong)
    out["ifMatchWrong"] = error(lambda: s3.get_object(Bucket=bucket, Key=key, IfMatch=wrong))
    out["headIfMatchWrong"] = error(lambda: s3.head_object(Bucket=bucket, Key=key, IfMatch=wrong))
    out["ifMatchSame"] = status(IfMatch=etag)

elif op == "partNumber":
    multipart, copy, single = job["multipart"], job["copy"], job["single"]
    s3.copy_object(Bucket=bucket, Key=copy, CopySource={"Bucket": bucket, "Key": multipart})

    def part(key, n):
        r = s3.get_object(Bucket=bucket, Key=key, PartNumber=n)
        body = r["Body"].read()
        return {
            "status": r["ResponseMetadata"]["HTTPStatusCode"],
            "contentRange": r.get("ContentRange"),
            "length": r["ContentLength"],
            "partsCount": r.get("PartsCount"),
            "etag": r["ETag"],
            "bodyLength": len(body),
            "bodySha256": hashlib.sha256(body).hexdigest(),
        }

    def head_part(key, n):
        r = s3.head_object(Bucket=bucket, Key=key, PartNumber=n)
        return {
            "status": r["ResponseMetadata"]["HTTPStatusCode"],
            "length": r["ContentLength"],
            "partsCount": r.get("PartsCount"),
            "etag": r["ETag"],
        }

    out["get"] = {"%s %d" % (k, n): part(k, n) for k in (multipart, copy) for n in (1, 2, 3)}
    out["get"][single + " 1"] = part(single, 1)
    out["head"] = {"%s %d" % (multipart, n): head_part(multipart, n) for n in (1, 2, 3)}
    out["head"][single + " 1"] = head_part(single, 1)
    out["beyond"] = error(lambda: s3.get_object(Bucket=bucket, Key=multipart, PartNumber=4))
    out["headBeyond"] = error(lambda: s3.head_object(Bucket=bucket, Key=multipart, PartNumber=4))
    out["withRange"] = error(
        lambda: s3.get_object(Bucket=bucket, Key=multipart, PartNumber=1, Range="bytes=0-9")
    )
    out["singleBeyond"] = error(lambda: s3.get_object(Bucket=bucket, Key=single, PartNumber=2))

elif op == "auth":
    # Requests a real client signs wrongly: another secret, an unknown key, a skewed clock.
    import datetime as _dt

    import botocore.auth

    def client(key, secret):
        return boto3.client(
            "s3",
            endpoint_url=job["endpoint"],
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 1},
            ),
        )

    key, secret = job["key"], job["secret"]
    out["right"] = error(lambda: client(key, secret).head_object(Bucket=bucket, Key=job["objkey"]))
    out["wrongSecret"] = error(lambda: client(key, secret[:-4] + "AAAA").list_objects_v2(Bucket=bucket))
    out["unknownKey"] = error(lambda: client("AKIAUNKNOWNKEY000000", secret).list_objects_v2(Bucket=bucket))
    skew = _dt.timedelta(minutes=job["skewMinutes"])

    class Skewed(_dt.datetime):
        @classmethod
        def utcnow(cls):
            return _dt.datetime.utcnow() - skew

        @classmethod
        def now(cls, tz=None):
            return _dt.datetime.now(tz) - skew

    class SkewedModule:
        datetime = Skewed
        timedelta = _dt.timedelta
        timezone = _dt.timezone

    # botocore 1.29 reads the clock as datetime.datetime.utcnow() in botocore.auth, or in
    # botocore.crt.auth when awscrt signs (Debian's does); later releases through
    # get_current_datetime().
    for name in ("botocore.auth", "botocore.crt.auth"):
        module = sys.modules.get(name)
        if module is None:
            continue
        module.datetime = SkewedModule
        if hasattr(module, "get_current_datetime"):
            module.get_current_datetime = Skewed.utcnow
    out["skewed"] = error(lambda: client(key, secret).list_objects_v2(Bucket=bucket))

elif op == "expect100":
    # One connection, reused: each put of a file-like body sends Expect: 100-continue, and
    # the empty ones (and the refused one) are answered without "100 Continue".
    import io
    import time

    one = boto3.client(
        "s3",
        endpoint_url=job["endpoint"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=1,
            read_timeout=job["readTimeoutS"],
        ),
    )
    for target, key, size in job["puts"]:
        started = time.monotonic()
        try:
            one.put_object(Bucket=target, Key=key, Body=io.BytesIO(b"z" * size))
            result = "OK"
        except ClientError as e:
            result = e.response["Error"]["Code"]
        except Exception as e:  # a read timeout, a broken response
            result = type(e).__name__
        out[key] = {"result": result, "seconds": round(time.monotonic() - started, 3)}

else:
    raise SystemExit("unknown op " + op)

print(json.dumps(out))
