// Calls LogService.ShardHealth on the address given, without TLS, and prints what came back
// as one JSON line: {"ok":true} or {"code":"UNAUTHENTICATED","message":"..."}. The data-path
// authentication test runs it inside a network namespace, as a caller that is not loopback.

import { createGrpcClient, GrpcStatusError, LOG_SERVICE } from "../../mod/transport/mod.ts";
import { parseHostPort } from "../../mod/base/mod.ts";

const client = createGrpcClient(LOG_SERVICE, parseHostPort(Deno.args[0]!), { deadlineMs: 10_000 });
try {
  await client.ShardHealth({ shardId: 0 });
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(
    JSON.stringify(
      e instanceof GrpcStatusError
        ? { code: e.codeName, message: e.message }
        : { code: "NOT_A_STATUS", message: String(e) },
    ),
  );
} finally {
  client.close();
}
