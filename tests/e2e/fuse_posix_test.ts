// The POSIX test list (tests/fuse/posix.ts) on a real FUSE mount: a kiseki-client-fuse role
// (client-side sealing, chunk cache, metadata over gRPC) against a kiseki server role.

import { missingPart } from "../../mod/base/testing.ts";
import { fuseMissing, mountLogTail, startMount } from "../fuse/_mount.ts";
import { POSIX_CASES } from "../fuse/posix.ts";

Deno.test({
  name: "FUSE mount passes the POSIX test list",
  ignore: missingPart("a FUSE mount (/dev/fuse as root)", fuseMissing()),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const m = await startMount({ hostOctet: 81 });
    let code = -1;
    try {
      const bucket = `${m.mountpoint}/posix`;
      await Deno.mkdir(bucket);
      let i = 0;
      for (const c of POSIX_CASES) {
        const dir = `${bucket}/case${i++}`;
        await Deno.mkdir(dir);
        await t.step(c.name, async () => {
          try {
            await c.run(dir);
          } catch (e) {
            throw new Error(`${(e as Error).message}\nmount log:\n${mountLogTail(m)}`);
          }
        });
      }
    } finally {
      code = await m.stop("SIGTERM");
      await m.cleanup();
    }
    if (code !== 0) throw new Error(`the mount exited ${code}:\n${mountLogTail(m)}`);
  },
});
