// How a FUSE mount ends: SIGTERM and SIGINT unmount and the process exits 0 with what was
// written stored; a process killed outright leaves an aborted mount that `umount -l` clears,
// and what was closed before the kill is there when the data directory is mounted again.
// Also the unprivileged path: fusermount3 mounts and unmounts.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import { fuseMissing, isMounted, lazyUnmount, startMount } from "../fuse/_mount.ts";

const ignore = missingPart("a FUSE mount (/dev/fuse as root)", fuseMissing());

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test({
    name: `FUSE mount unmounts cleanly on ${signal}`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const m = await startMount();
      try {
        await Deno.mkdir(`${m.mountpoint}/life`);
        await Deno.writeTextFile(`${m.mountpoint}/life/kept`, "written before the signal");
        assert.equal(await isMounted(m.mountpoint), true);
        const code = await m.stop(signal);
        assert.equal(code, 0, m.stderr());
        assert.equal(await isMounted(m.mountpoint), false, "the mount is gone");
        assert.match(m.stderr(), /"WRITE":1/);
      } finally {
        await m.cleanup();
      }
    },
  });
}

Deno.test({
  name: "FUSE mount killed with SIGKILL leaves a mount that umount -l clears, data intact",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const m = await startMount();
    try {
      await Deno.mkdir(`${m.mountpoint}/crash`);
      await Deno.writeTextFile(`${m.mountpoint}/crash/closed`, "closed before the kill");
      const code = await m.stop("SIGKILL");
      assert.equal(code, 137);
      assert.equal(await isMounted(m.mountpoint), true, "a killed server leaves its mount");
      const err = await Deno.stat(`${m.mountpoint}/crash`).then(() => "ok", (e) => String(e));
      assert.match(err, /not connected/i);
      await lazyUnmount(m.mountpoint);
      assert.equal(await isMounted(m.mountpoint), false, "umount -l clears it");
      const again = await startMount({ dataDir: m.dataDir });
      try {
        assert.equal(
          await Deno.readTextFile(`${again.mountpoint}/crash/closed`),
          "closed before the kill",
        );
      } finally {
        assert.equal(await again.stop("SIGTERM"), 0, again.stderr());
        await again.cleanup();
      }
    } finally {
      await m.cleanup();
    }
  },
});

Deno.test({
  name: "FUSE mount through fusermount3 serves and unmounts",
  ignore: ignore || missingPart("fusermount3", hasFusermount() ? null : "fusermount3 missing"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const m = await startMount({ fusermount: true });
    try {
      const mounts = await Deno.readTextFile("/proc/self/mounts");
      assert.match(mounts, new RegExp(`${m.mountpoint} fuse.kiseki `));
      await Deno.mkdir(`${m.mountpoint}/fmt`);
      await Deno.writeTextFile(`${m.mountpoint}/fmt/f`, "via fusermount3");
      assert.equal(await Deno.readTextFile(`${m.mountpoint}/fmt/f`), "via fusermount3");
      assert.equal(await m.stop("SIGTERM"), 0, m.stderr());
      assert.equal(await isMounted(m.mountpoint), false);
    } finally {
      await m.cleanup();
    }
  },
});

function hasFusermount(): boolean {
  return new Deno.Command("sh", { args: ["-c", "command -v fusermount3"] }).outputSync().success;
}
