# The boto3 side of tests/e2e/s3_robustness_test.ts: requests for features the gateway does
# not implement (SSE-C, ACLs, tags, Object Lock), and an upload signed with a wrong secret.
# Prints what boto3 saw as JSON; the test decides what is right.

import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

job = json.loads(sys.argv[1])


def client(secret):
    return boto3.client(
        "s3",
        endpoint_url=job["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=job["key"],
        aws_secret_access_key=secret,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def error(fn):
    try:
        fn()
        return {"code": "OK"}
    except ClientError as e:
        return {
            "code": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message", ""),
        }


s3 = client(job["secret"])
bucket = job["bucket"]
out = {}
sse_c = dict(SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))
if job["op"] == "unsupported":
    s3.create_bucket(Bucket=bucket)
    out["sseC"] = error(lambda: s3.put_object(Bucket=bucket, Key="ssec", Body=b"secret", **sse_c))
    out["sseCStored"] = error(lambda: s3.head_object(Bucket=bucket, Key="ssec"))
    out["sseCMultipart"] = error(
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="ssec-mpu", **sse_c)
    )
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    out["sseCCopy"] = error(
        lambda: s3.copy_object(
            Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "plain"}, **sse_c
        )
    )
    out["sseCGet"] = error(lambda: s3.get_object(Bucket=bucket, Key="plain", **sse_c))
    out["aclPublic"] = error(
        lambda: s3.put_object(Bucket=bucket, Key="acl", Body=b"x", ACL="public-read")
    )
    out["aclPrivate"] = error(
        lambda: s3.put_object(Bucket=bucket, Key="acl", Body=b"x", ACL="private")
    )
    out["tagging"] = error(
        lambda: s3.put_object(Bucket=bucket, Key="tags", Body=b"x", Tagging="team=a")
    )
    out["objectLock"] = error(
        lambda: s3.put_object(
            Bucket=bucket,
            Key="lock",
            Body=b"x",
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate="2030-01-01T00:00:00Z",
        )
    )
    out["legalHoldOff"] = error(
        lambda: s3.put_object(Bucket=bucket, Key="hold", Body=b"x", ObjectLockLegalHoldStatus="OFF")
    )
elif job["op"] == "bad-secret":
    bad = client("wrong" + job["secret"][5:])
    body = b"\xab" * job["size"]
    out["put"] = error(lambda: bad.put_object(Bucket=bucket, Key="forged", Body=body))
    out["stored"] = error(lambda: s3.head_object(Bucket=bucket, Key="forged"))
elif job["op"] == "ok":
    s3.put_object(Bucket=bucket, Key="after", Body=b"after")
    out["got"] = s3.get_object(Bucket=bucket, Key="after")["Body"].read().decode()
print(json.dumps(out))
