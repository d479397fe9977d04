# Every S3 operation the gateway serves, through boto3 as users run it. Reads the endpoint
# and keys from the environment; prints "ok <botocore version>" or fails with a traceback.
import hashlib
import io
import json
import os
import sys
import urllib.request

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = os.environ["S3_ENDPOINT"]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"],
    config=Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": 1},
    ),
)
bucket = os.environ.get("S3_BUCKET", "boto3-bucket")


def code_of(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("expected a ClientError")


# Buckets.
s3.create_bucket(Bucket=bucket)
assert code_of(lambda: s3.create_bucket(Bucket=bucket)) == ("BucketAlreadyOwnedByYou", 409)
s3.head_bucket(Bucket=bucket)
assert code_of(lambda: s3.head_bucket(Bucket="no-such-bucket-here")) == ("404", 404)
assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")
assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
assert code_of(lambda: s3.get_bucket_acl(Bucket=bucket)) == ("NotImplemented", 501)

# Objects, with keys that need encoding and user metadata.
keys = ["plain.txt", "dir/sub/a b+c.txt", "ünï/日本語 ~!*'().txt", "a//b/../c", "100% & <x>"]
for i, key in enumerate(keys):
    body = ("body %d %s" % (i, key)).encode()
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain",
                        Metadata={"index": str(i), "note": "two  spaces"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put["ETag"]
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"index": str(i), "note": "two  spaces"}, got["Metadata"]
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]

# Streaming body of unknown length (file-like), and an empty object.
s3.put_object(Bucket=bucket, Key="stream.bin", Body=io.BytesIO(b"s" * 300000))
assert s3.get_object(Bucket=bucket, Key="stream.bin")["Body"].read() == b"s" * 300000
s3.put_object(Bucket=bucket, Key="empty", Body=b"")
assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""

# Ranges and conditional requests.
data = bytes(range(256)) * 4
s3.put_object(Bucket=bucket, Key="range.bin", Body=data)
r = s3.get_object(Bucket=bucket, Key="range.bin", Range="bytes=10-19")
assert r["Body"].read() == data[10:20] and r["ContentRange"] == "bytes 10-19/1024"
assert s3.get_object(Bucket=bucket, Key="range.bin", Range="bytes=-4")["Body"].read() == data[-4:]
assert code_of(lambda: s3.get_object(Bucket=bucket, Key="range.bin", Range="bytes=5000-")) == (
    "InvalidRange", 416)
etag = s3.head_object(Bucket=bucket, Key="range.bin")["ETag"]
assert code_of(lambda: s3.get_object(Bucket=bucket, Key="range.bin", IfNoneMatch=etag)) == (
    "304", 304)
assert code_of(lambda: s3.get_object(Bucket=bucket, Key="range.bin", IfMatch='"nope"')) == (
    "PreconditionFailed", 412)
assert s3.get_object(Bucket=bucket, Key="range.bin", IfMatch=etag)["ContentLength"] == 1024
assert code_of(lambda: s3.get_object(Bucket=bucket, Key="missing")) == ("NoSuchKey", 404)
assert code_of(lambda: s3.head_object(Bucket=bucket, Key="missing")) == ("404", 404)

# Copy, with and without replacing metadata.
s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": keys[1]})
c = s3.get_object(Bucket=bucket, Key="copy.txt")
assert c["Body"].read() == ("body 1 %s" % keys[1]).encode() and c["Metadata"]["index"] == "1"
s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": keys[1]},
               MetadataDirective="REPLACE", Metadata={"new": "yes"}, ContentType="x/y")
c = s3.head_object(Bucket=bucket, Key="copy.txt")
assert c["Metadata"] == {"new": "yes"} and c["ContentType"] == "x/y"

# Listings: v2 pages with a delimiter, v1, versions, url encoding.
for i in range(25):
    s3.put_object(Bucket=bucket, Key="list/%02d" % i, Body=b"x")
s3.put_object(Bucket=bucket, Key="list/sub/a", Body=b"x")
pages = list(s3.get_paginator("list_objects_v2").paginate(
    Bucket=bucket, Prefix="list/", Delimiter="/", PaginationConfig={"PageSize": 10}))
listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
assert listed == ["list/%02d" % i for i in range(25)], listed
assert prefixes == ["list/sub/"], prefixes
assert len(pages) == 3
v1 = list(s3.get_paginator("list_objects").paginate(
    Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 7}))
assert [o["Key"] for p in v1 for o in p.get("Contents", [])] == (
    ["list/%02d" % i for i in range(25)] + ["list/sub/a"])
everything = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])]
for key in keys:
    assert key in everything, (key, everything)
versions = s3.list_object_versions(Bucket=bucket, Prefix="list/0")
assert [v["VersionId"] for v in versions["Versions"]] == ["null"] * 10

# DeleteObjects, verbose and quiet.
deleted = s3.delete_objects(Bucket=bucket, Delete={
    "Objects": [{"Key": "list/%02d" % i} for i in range(10)] + [{"Key": "never-existed"}]})
assert len(deleted["Deleted"]) == 11 and "Errors" not in deleted
quiet = s3.delete_objects(Bucket=bucket, Delete={
    "Objects": [{"Key": "list/%02d" % i} for i in range(10, 25)], "Quiet": True})
assert "Deleted" not in quiet
assert s3.list_objects_v2(Bucket=bucket, Prefix="list/")["KeyCount"] == 1

# Multipart: parts, copy part, list parts and uploads, complete; and abort.
part = b"p" * (5 << 20)
mp = s3.create_multipart_upload(Bucket=bucket, Key="multi.bin", ContentType="a/b",
                                Metadata={"m": "1"})
upload_id = mp["UploadId"]
e1 = s3.upload_part(Bucket=bucket, Key="multi.bin", UploadId=upload_id, PartNumber=1,
                    Body=part)["ETag"]
e2 = s3.upload_part_copy(Bucket=bucket, Key="multi.bin", UploadId=upload_id, PartNumber=2,
                         CopySource={"Bucket": bucket, "Key": "range.bin"},
                         CopySourceRange="bytes=0-99")["CopyPartResult"]["ETag"]
parts = s3.list_parts(Bucket=bucket, Key="multi.bin", UploadId=upload_id)["Parts"]
assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 << 20), (2, 100)], parts
uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
assert [u["UploadId"] for u in uploads] == [upload_id]
assert code_of(lambda: s3.complete_multipart_upload(
    Bucket=bucket, Key="multi.bin", UploadId=upload_id,
    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
) == ("InvalidPartOrder", 400)
done = s3.complete_multipart_upload(
    Bucket=bucket, Key="multi.bin", UploadId=upload_id,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
expected = hashlib.md5(hashlib.md5(part).digest() + hashlib.md5(data[:100]).digest()).hexdigest()
assert done["ETag"] == '"%s-2"' % expected, done["ETag"]
got = s3.get_object(Bucket=bucket, Key="multi.bin")
assert got["Body"].read() == part + data[:100] and got["Metadata"] == {"m": "1"}
aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone.bin")["UploadId"]
s3.upload_part(Bucket=bucket, Key="gone.bin", UploadId=aborted, PartNumber=1, Body=b"z")
s3.abort_multipart_upload(Bucket=bucket, Key="gone.bin", UploadId=aborted)
assert code_of(lambda: s3.list_parts(Bucket=bucket, Key="gone.bin", UploadId=aborted)) == (
    "NoSuchUpload", 404)

# The managed transfer (what aws s3 cp uses): multipart with concurrent parts.
big = os.urandom(3 << 20) * 6
s3.upload_fileobj(io.BytesIO(big), bucket, "transfer.bin",
                  Config=boto3.s3.transfer.TransferConfig(multipart_threshold=8 << 20,
                                                          multipart_chunksize=8 << 20))
out = io.BytesIO()
s3.download_fileobj(bucket, "transfer.bin", out,
                    Config=boto3.s3.transfer.TransferConfig(multipart_threshold=4 << 20,
                                                            multipart_chunksize=4 << 20))
assert out.getvalue() == big

# A presigned URL, fetched without boto3.
url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": keys[2]},
                                ExpiresIn=300)
with urllib.request.urlopen(url) as response:
    assert response.read() == ("body 2 %s" % keys[2]).encode()

# Empty the bucket and delete it; deleting a bucket with objects is refused.
assert code_of(lambda: s3.delete_bucket(Bucket=bucket)) == ("BucketNotEmpty", 409)
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
    if objects:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
s3.delete_bucket(Bucket=bucket)
assert code_of(lambda: s3.head_bucket(Bucket=bucket)) == ("404", 404)
print("ok", botocore.__version__)
